"""How much the text encoder itself knows about the held-out paraphrase words.

For each colour and shape word of scripts/tiny_shapes_heldout.py's paraphrase sets, finds the
nearest word the training captions use (train_tiny_shapes.py's COLOUR_WORDS / SHAPE_WORDS) in
all-MiniLM-L6-v2's embedding space and counts how often it names the same colour or shape.
A model conditioned on this encoder can carry an unseen word over only as far as this goes:
whatever the UNet learns, "crimson" reaches it as roughly what MiniLM makes of it.

Two readings of a word: its contextual token states inside a short phrase (what weft's
conditioning is made of), and the mean-pooled sentence embedding of the phrase alone.

    .venv/bin/python scripts/probe_text_encoder.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_shapes_heldout as held_out  # noqa: E402
from train_tiny_shapes import COLOUR_WORDS, SHAPE_WORDS, MiniLmEncoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The phrase each word is read in: a colour word before a neutral shape, a shape word after a
# neutral colour (neither context word names a palette colour or shape of the other kind).
CONTEXT = {"colour": "a {} shape", "shape": "a grey {}"}


def main():
    torch.set_num_threads(1)
    encoder = MiniLmEncoder(ROOT / "models/converted/minilm", "cpu")
    tokenizer, model = encoder.tokenizer, encoder.model

    @torch.no_grad()
    def readings(word, kind):
        text = CONTEXT[kind].format(word)
        encoding = tokenizer.encode(text)
        start = text.index(word)
        inside = [i for i, (a, b) in enumerate(encoding.offsets)
                  if a >= start and b <= start + len(word) and a < b]
        hidden = model(input_ids=torch.tensor([encoding.ids])).last_hidden_state[0]
        token = hidden[inside].mean(0)
        pooled = hidden.mean(0)
        return token / token.norm(), pooled / pooled.norm()

    for kind, known, sets in (
        ("colour", COLOUR_WORDS, [s[0] for s in held_out.PARAPHRASE_SETS.values()]),
        ("shape", SHAPE_WORDS, [s[1] for s in held_out.PARAPHRASE_SETS.values()]),
    ):
        names = [(value, word) for value, words in known.items() for word in words]
        table = [readings(word, kind) for _, word in names]
        tokens = torch.stack([t for t, _ in table])
        pooled = torch.stack([p for _, p in table])
        for number, unseen in enumerate(sets, 1):
            right = {"token": 0, "pooled": 0}
            misses = []
            total = 0
            for value, words in unseen.items():
                for word in words:
                    token, sentence = readings(word, kind)
                    total += 1
                    by_token = names[int((tokens @ token).argmax())]
                    by_pooled = names[int((pooled @ sentence).argmax())]
                    right["token"] += by_token[0] == value
                    right["pooled"] += by_pooled[0] == value
                    if by_token[0] != value:
                        misses.append(f"{word}->{by_token[1]}")
            print(f"{kind} words of paraphrase set {number}: nearest known word names the right "
                  f"{kind} for {right['token']}/{total} (token states), "
                  f"{right['pooled']}/{total} (pooled); chance {1 / len(known):.0%}. "
                  f"Misses: {', '.join(misses[:6])}")


if __name__ == "__main__":
    main()
