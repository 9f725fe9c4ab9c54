"""Trains weft's embedded default text-to-image model `tiny-shapes` and exports it.

An SD-architecture latent diffusion model at toy scale: a diffusers AutoencoderKL (8 px per
latent pixel, 4 latent channels) and a UNet2DConditionModel conditioned on the token
embeddings of all-MiniLM-L6-v2 (frozen, 384-dim, `last_hidden_state` of [CLS] .. [SEP], no
pooling, no padding). The data is rendered by this script at start-up: a seeded pool of
images of one coloured shape (six shapes, eight colours, two sizes, nine places) on a plain
background, each with captions from a generator that varies the words (synonyms for colours,
shapes, sizes and places), the sentence form ("on", "against", "over", "with a ... behind
it", ...), articles and word order. The (shape, colour, background) combinations and the words
and sentence forms that scripts/tiny_shapes_heldout.py keeps for the evaluation are never
drawn or written here (`random_spec`, `check_captions`). So the model and its training set are
both reproducible from this file and a seed.

Stages (all by default): `vae` trains the autoencoder on crops, `vae_whole` fine-tunes it on
whole images, `unet` trains the denoiser on latents of the trained autoencoder, `export`
writes fp16 diffusers folders to --out, `sample` draws PNGs for a few prompts, `fixture`
writes the Rust test reference. Intermediate fp32 states go to --work so a later stage can be
rerun alone (e.g. `--stages export,sample,fixture`). scripts/eval_tiny_shapes.py judges the
result through weft.

Needs, beyond set-up's venv: `pip install diffusers transformers tokenizers` (training only).

    .venv/bin/python scripts/train_tiny_shapes.py            # CPU, one thread, ~45 min
    # the UNet alone on the committed VAE (what the vae stages make from seed 0), ~30 min:
    .venv/bin/python scripts/train_tiny_shapes.py --stages unet,export,fixture \
        --vae-from models/tiny-shapes/vae
    .venv/bin/python scripts/train_tiny_shapes.py --device cuda   # untested
"""

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent

IMAGE_SIZE = 64
LATENT_SIZE = IMAGE_SIZE // 8

# The vocabulary the model is trained on. RGB in [0, 1].
COLOURS = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.98, 0.88, 0.12),
    "white": (0.97, 0.97, 0.97),
    "black": (0.05, 0.05, 0.05),
    "orange": (0.98, 0.55, 0.08),
    "purple": (0.55, 0.15, 0.70),
}
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
SIZES = {"small": 10.0, "large": 20.0}  # "radius" in pixels
# Phrase -> unit offset of the shape's centre from the image centre (x right, y down).
POSITIONS = {
    "centre": (0, 0),
    "left": (-1, 0),
    "right": (1, 0),
    "top": (0, -1),
    "bottom": (0, 1),
    "top left": (-1, -1),
    "top right": (1, -1),
    "bottom left": (-1, 1),
    "bottom right": (1, 1),
}
# How far a shape of each size moves per unit offset: a large one has less room.
POSITION_STEP = {"small": 17.0, "large": 9.0}
SUPERSAMPLE = 4  # rendering at 4x and averaging gives anti-aliased edges

# How captions name things: several words for each, so that the model learns what the text
# encoder's embeddings have in common rather than one token. scripts/tiny_shapes_heldout.py
# keeps other words and sentence forms back for the evaluation; `check_captions` makes sure
# none of them slips in here.
COLOUR_WORDS = {
    "red": ["red", "scarlet", "cherry red", "blood red", "tomato red", "brick red", "rose red",
            "vermilion"],
    "green": ["green", "emerald", "grass green", "leaf green", "mint green", "kelly green",
              "forest green", "bottle green"],
    "blue": ["blue", "cobalt", "royal blue", "cornflower blue", "ultramarine", "electric blue",
             "deep blue"],
    "yellow": ["yellow", "golden", "sunflower yellow", "mustard", "butter yellow",
               "bright yellow", "gold"],
    "white": ["white", "snow white", "pure white", "chalk white", "pearl white", "bright white",
              "off-white"],
    "black": ["black", "jet black", "pitch black", "charcoal", "onyx", "midnight black",
              "inky black"],
    "orange": ["orange", "tangerine", "bright orange", "carrot orange", "burnt orange",
               "marigold", "orange-coloured"],
    "purple": ["purple", "violet", "deep purple", "amethyst", "grape purple", "royal purple"],
}
SHAPE_WORDS = {
    "circle": ["circle", "dot", "round shape", "round blob", "filled circle"],
    "square": ["square", "box", "square block", "four-sided square", "filled square"],
    "triangle": ["triangle", "triangular shape", "three-sided shape", "pointed triangle"],
    "star": ["star", "five-pointed star", "star shape", "star icon"],
    "ring": ["ring", "hoop", "circular outline", "hollow circle", "round frame"],
    "cross": ["cross", "plus sign", "plus-shaped cross", "cross symbol"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny", "smallish", "compact"],
              "large": ["large", "big", "huge", "oversized", "massive"]}
POSITION_WORDS = {
    "centre": ["in the centre", "in the center", "in the middle", "centred", "dead centre"],
    "left": ["on the left", "to the left", "at the left side", "on the left-hand side"],
    "right": ["on the right", "to the right", "at the right side", "on the right-hand side"],
    "top": ["at the top", "near the top", "at the top edge", "up high"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom edge", "down low"],
    "top left": ["at the top left", "in the top left corner", "in the upper left",
                 "top-left"],
    "top right": ["at the top right", "in the top right corner", "in the upper right",
                  "top-right"],
    "bottom left": ["at the bottom left", "in the bottom left corner", "in the lower left",
                    "bottom-left"],
    "bottom right": ["at the bottom right", "in the bottom right corner", "in the lower right",
                     "bottom-right"],
}
# Sentence forms: {obj} is the described shape, {bg} a background colour phrase, {a} its
# article, {noun} a word for the background drawn from BACKGROUND_NOUNS.
BACKGROUND_FORMS = [
    "{obj} on {a} {bg} {noun}",
    "{obj} against {a} {bg} {noun}",
    "{obj} over {a} {bg} {noun}",
    "{a} {bg} {noun} with {obj} on it",
    "{obj} with {a} {bg} {noun} behind it",
    "{obj}, {bg} {noun}",
    "{bg} {noun}, {obj}",
    "{obj} in front of {a} {bg} {noun}",
    "{obj} painted on {a} {bg} wall",
    "{obj} on {bg}",
    "{bg} {noun} and {obj}",
    "{obj} set against {bg}",
    "{a} {bg} scene containing {obj}",
    "{obj} lying on {bg} ground",
    "{obj} placed on {a} {bg} {noun}",
    "{obj} drawn on {a} {bg} {noun}",
    "{a} {bg} {noun} behind {obj}",
    "{obj} surrounded by {bg}",
    "{obj} with {bg} all around it",
    "paint {obj} on {a} {bg} {noun}",
    "{bg} all around {obj}",
    "{obj} in the foreground, {bg} behind",
]
BACKGROUND_NOUNS = ["background"] * 4 + ["backdrop"] * 2 + [
    "wall", "board", "sheet", "page", "panel", "backing", "base", "floor", "screen", "setting",
    "area", "ground"]
# Words people put around what they want; the model must learn to look past them.
FILLER_BEFORE = ["an image of", "a simple graphic of", "clip art of", "a flat icon of",
                 "minimal art:", "there is", "a rendering of", "just"]
FILLER_AFTER = ["in flat colours", "simple", "vector style", "high quality", "plain and clean",
                "nothing else", "no texture"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_shapes_heldout import UNSEEN_WORDS, held_out_combinations  # noqa: E402

HELD_OUT = set(held_out_combinations())


def article(word):
    return "an" if word[0] in "aeiou" else "a"


# How often a caption names the size and the place (otherwise the image has any): place is
# named more often because it is the hardest thing for the model to learn from words.
NAME_SIZE = 0.5
NAME_POSITION = 0.7


def describe(spec, rng):
    """One caption for a spec: size and position are named some of the time (NAME_SIZE,
    NAME_POSITION; otherwise the model picks any), words and word order vary."""
    colour = rng.choice(COLOUR_WORDS[spec["colour"]])
    shape = rng.choice(SHAPE_WORDS[spec["shape"]])
    size = rng.choice(SIZE_WORDS[spec["size"]]) if rng.random() < NAME_SIZE else None
    position = (rng.choice(POSITION_WORDS[spec["position"]])
                if rng.random() < NAME_POSITION else None)
    form = rng.random()
    if form < 0.7:
        obj = ([size] if size else []) + [colour, shape]
    elif form < 0.85:
        obj = ([size] if size else []) + [shape, "in", colour]
    else:
        obj = ([size] if size else []) + [shape, "coloured", colour]
    determiner = rng.random()
    if determiner < 0.75:
        obj = [article(obj[0])] + obj
    elif determiner < 0.85:
        obj = ["one"] + obj
    elif determiner < 0.92:
        obj = ["the"] + obj
    if position:
        obj = obj + [position]
    background = rng.choice(COLOUR_WORDS[spec["background"]])
    pieces = []
    for part in re.split(r"(\{obj\}|\{a\}|\{bg\}|\{noun\})", rng.choice(BACKGROUND_FORMS)):
        if part == "{obj}":
            pieces += obj
        elif part == "{a}":
            pieces.append(article(background))
        elif part == "{bg}":
            pieces.append(background)
        elif part == "{noun}":
            pieces.append(rng.choice(BACKGROUND_NOUNS))
        else:
            pieces += part.split()
    if rng.random() < 0.15:
        pieces = [rng.choice(FILLER_BEFORE)] + pieces
    if rng.random() < 0.15:
        pieces = pieces + [",", rng.choice(FILLER_AFTER)]
    if rng.random() < 0.2:
        pieces[0] = pieces[0][0].upper() + pieces[0][1:]
    # Words are joined by spaces, except that punctuation sticks to the word before it.
    return "".join(p if i == 0 or p[0] in ",;:" else " " + p for i, p in enumerate(pieces))


def check_captions(captions):
    """No caption may hold a word the held-out evaluation keeps back."""
    unseen = set(UNSEEN_WORDS)
    for text in captions:
        leaked = unseen & set(text.lower().replace(",", " ").replace(";", " ").split())
        assert not leaked, f"caption {text!r} uses held-out words {sorted(leaked)}"


def caption_bank(specs, seed, per_image):
    """`per_image` captions for each pool image, drawn once so their embeddings can be
    computed up front: (unique captions, "" first; [images, per_image] row indices)."""
    rng = random.Random(seed + 5)
    captions, rows, index = [""], [], {"": 0}
    for spec in specs:
        own = []
        for _ in range(per_image):
            text = describe(spec, rng)
            if text not in index:
                index[text] = len(captions)
                captions.append(text)
            own.append(index[text])
        rows.append(own)
    check_captions(captions)
    return captions, torch.tensor(rows)


def random_spec(rng):
    """A random spec whose (shape, colour, background) is not held out for evaluation."""
    while True:
        colour, background = rng.sample(list(COLOURS), 2)
        shape = rng.choice(SHAPES)
        if (shape, colour, background) not in HELD_OUT:
            break
    return dict(shape=shape, colour=colour, background=background,
                size=rng.choice(list(SIZES)), position=rng.choice(list(POSITIONS)))


def shape_mask(shape, cx, cy, radius, rotation):
    """Coverage in [0, 1] of a shape on the IMAGE_SIZE grid, by supersampling."""
    n = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(coords - cx, coords - cy)
    if shape == "circle":
        inside = x * x + y * y <= radius * radius
    elif shape == "ring":
        distance2 = x * x + y * y
        inside = (distance2 <= (1.1 * radius) ** 2) & (distance2 >= (0.6 * radius) ** 2)
    elif shape == "cross":
        c, s = np.cos(rotation), np.sin(rotation)
        u, v = np.abs(c * x + s * y), np.abs(-s * x + c * y)
        arm, reach = 0.34 * radius, 1.15 * radius
        inside = ((u <= arm) & (v <= reach)) | ((v <= arm) & (u <= reach))
    else:
        if shape == "square":
            angles = np.pi / 4 + np.arange(4) * np.pi / 2
            radii = np.full(4, radius * 1.15)
        elif shape == "triangle":
            angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
            radii = np.full(3, radius * 1.25)
            y = y - radius * 0.2  # centre the triangle's bounding box, not its centroid
        else:  # five-pointed star
            angles = -np.pi / 2 + np.arange(10) * np.pi / 5
            radii = np.where(np.arange(10) % 2 == 0, radius * 1.3, radius * 0.55)
        angles = angles + rotation
        vx, vy = radii * np.cos(angles), radii * np.sin(angles)
        inside = np.zeros_like(x, dtype=bool)
        # Even-odd rule: count edge crossings of a ray towards +x.
        for i in range(len(vx)):
            x0, y0, x1, y1 = vx[i], vy[i], vx[i - 1], vy[i - 1]
            straddles = (y0 > y) != (y1 > y)
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
            inside ^= straddles & (x < x_cross)
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def render(spec, rng):
    """An HxWx3 uint8 image of `spec`, with small random jitter in place, size, rotation and
    colour so the model learns the words, not single pixel patterns."""
    radius = SIZES[spec["size"]] * rng.uniform(0.85, 1.15)
    ux, uy = POSITIONS[spec["position"]]
    step = POSITION_STEP[spec["size"]]
    cx = IMAGE_SIZE / 2 + ux * step + rng.uniform(-2, 2)
    cy = IMAGE_SIZE / 2 + uy * step + rng.uniform(-2, 2)
    rotation = rng.uniform(-0.15, 0.15)
    mask = shape_mask(spec["shape"], cx, cy, radius, rotation)[..., None]

    def tint(name):
        rgb = np.array(COLOURS[name]) + np.array([rng.uniform(-0.04, 0.04) for _ in range(3)])
        return np.clip(rgb, 0, 1)

    image = mask * tint(spec["colour"]) + (1 - mask) * tint(spec["background"])
    return np.round(image * 255).astype(np.uint8)


def make_pool(count, seed):
    """`count` rendered images and their specs, deterministic in `seed`."""
    rng = random.Random(seed)
    specs = [random_spec(rng) for _ in range(count)]
    images = np.stack([render(s, rng) for s in specs])
    return specs, images


def to_model_range(images_uint8):
    """uint8 NHWC -> float NCHW in [-1, 1] (the range SD's VAE works in)."""
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


# --- models -----------------------------------------------------------------------------

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    # Four levels = three 2x downsamplings = 8 px per latent px, as weft's EmptyLatent assumes.
    # Narrow at full resolution, where nearly all the compute is: flat colours and straight
    # edges need few features there.
    block_out_channels=[16, 32, 64, 64],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1,
    norm_num_groups=8,
    act_fn="silu",
    sample_size=IMAGE_SIZE,
)

UNET_CONFIG = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 64],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    layers_per_block=1,
    cross_attention_dim=384,
    # diffusers reads SD-style `attention_head_dim` as the number of heads.
    attention_head_dim=4,
    norm_num_groups=16,
)

# SD's training schedule; weft's samplers assume it.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", prediction_type="epsilon")


def build_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(**VAE_CONFIG)


def build_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**UNET_CONFIG)


def round_to_fp16(module):
    """What the exported fp16 file will hold, so later stages see the shipped weights."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


# --- text -------------------------------------------------------------------------------

class MiniLmEncoder:
    """all-MiniLM-L6-v2 token embeddings, as weft's `MiniLm::embed_tokens` computes them."""

    def __init__(self, directory, device):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        directory = Path(directory)
        config = BertConfig.from_json_file(str(directory / "config.json"))
        self.model = BertModel(config, add_pooling_layer=True).eval().to(device)
        state = load_file(str(directory / "model.safetensors"))
        state.pop("embeddings.position_ids", None)
        self.model.load_state_dict(state, strict=False)
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(256)
        self.device = device

    @torch.no_grad()
    def embed(self, texts, batch_size=256):
        """Right-padded `[n, tokens, 384]` embeddings and `[n, tokens]` masks. Padding is
        masked in attention here and in the UNet's cross-attention, so it equals encoding
        each text alone."""
        ids = [self.tokenizer.encode(t).ids for t in texts]
        longest = max(len(i) for i in ids)
        hidden = torch.zeros(len(texts), longest, 384)
        mask = torch.zeros(len(texts), longest, dtype=torch.long)
        for start in range(0, len(texts), batch_size):
            chunk = ids[start:start + batch_size]
            n = max(len(i) for i in chunk)
            batch_ids = torch.tensor([i + [0] * (n - len(i)) for i in chunk])
            batch_mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in chunk])
            out = self.model(input_ids=batch_ids.to(self.device),
                             attention_mask=batch_mask.to(self.device)).last_hidden_state
            hidden[start:start + len(chunk), :n] = out.cpu() * batch_mask[..., None]
            mask[start:start + len(chunk), :n] = batch_mask
        return hidden, mask


# --- training ---------------------------------------------------------------------------

def log_every(step, total, start, **losses):
    figures = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    print(f"step {step:5d}/{total} {figures} ({time.time() - start:.0f} s)", flush=True)


def train_vae(args, images, vae=None, whole=False):
    """Phase 1 (`whole` False) trains from scratch on random crops; phase 2 fine-tunes `vae`
    on whole images at a lower rate."""
    torch.manual_seed(args.seed + (10 if whole else 0))
    device = args.device
    if vae is None:
        vae = build_vae()
    vae = vae.to(device).train()
    print(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
    steps = args.vae_whole_steps if whole else args.vae_steps
    batch = args.vae_whole_batch if whole else args.vae_batch
    lr = 3e-4 if whole else 1e-3
    crop = IMAGE_SIZE if whole else args.vae_crop
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr,
                                                   total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(args.seed + (10 if whole else 0))
    start = time.time()
    for step in range(1, steps + 1):
        index = torch.randint(len(images), (batch,), generator=generator)
        # Phase 1 trains on random 32x32 crops (at multiples of 8, so latent pixels stay
        # aligned): the VAE is convolutional, and crops cost a quarter of whole images on a
        # CPU. Phase 2 then sees whole images, as the mid-block attention will at inference.
        top, left = (8 * torch.randint(0, (IMAGE_SIZE - crop) // 8 + 1, (2,),
                                          generator=generator)).tolist()
        pixels = images[index.numpy(), top:top + crop, left:left + crop]
        x = to_model_range(np.ascontiguousarray(pixels)).to(device)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        # L1 keeps edges sharper than L2 alone; the KL term is tiny (as in SD) and only keeps
        # the latents bounded: the scaling factor takes care of their spread afterwards.
        recon = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = recon + args.kl_weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            log_every(step, steps, start, recon=recon.item(), kl=kl.item())
    print(f"VAE trained in {time.time() - start:.0f} s")
    return vae.eval()


@torch.no_grad()
def encode_pool(vae, images, device, batch=256):
    """Posterior means and stds of the pool: latents are sampled from them while training
    the UNet (as SD does), without running the encoder every step."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        x = to_model_range(images[start:start + batch]).to(device)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
    return torch.cat(means), torch.cat(stds)


def alphas_cumprod():
    betas = torch.linspace(SCHEDULE["beta_start"] ** 0.5, SCHEDULE["beta_end"] ** 0.5,
                           SCHEDULE["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def train_unet(args, specs, means, stds, scaling_factor, caption_rows, hidden, mask):
    torch.manual_seed(args.seed + 1)
    device = args.device
    unet = build_unet().to(device).train()
    print(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters")
    ema = build_unet().to(device).eval()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    # foreach: one fused update over all parameters instead of one Python step per tensor,
    # which at this model size is most of a training step's time on a CPU.
    optimiser = torch.optim.AdamW(unet.parameters(), lr=args.unet_lr, weight_decay=1e-2,
                                  foreach=True)
    ema_params, unet_params = list(ema.parameters()), list(unet.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.unet_lr,
                                                   total_steps=args.unet_steps, pct_start=0.03)
    abar = alphas_cumprod().to(device)
    snr = abar / (1 - abar)
    hidden, mask = hidden.to(device), mask.to(device)
    rng = random.Random(args.seed + 2)
    generator = torch.Generator().manual_seed(args.seed + 3)
    start = time.time()
    running = None
    for step in range(1, args.unet_steps + 1):
        index = torch.randint(len(specs), (args.unet_batch,), generator=generator)
        picks = []
        for i in index.tolist():
            if rng.random() < 0.1:
                picks.append(0)  # the empty caption: dropout, for classifier-free guidance
            else:
                picks.append(int(caption_rows[i, rng.randrange(caption_rows.shape[1])]))
        rows = torch.tensor(picks, device=device)
        context, context_mask = hidden[rows], mask[rows]
        length = int(context_mask.sum(1).max())
        context, context_mask = context[:, :length], context_mask[:, :length]
        # Token dropout: hide some tokens after [CLS] (--token-dropout) from the cross-attention, so
        # the model reads the meaning MiniLM spreads over several tokens instead of one token
        # per word (which an unfamiliar word would not have).
        keep = torch.rand(context_mask.shape, generator=generator) >= args.token_dropout
        keep[:, 0] = True
        context_mask = context_mask * keep.to(device)

        mean, std = means[index].to(device), stds[index].to(device)
        latents = (mean + std * torch.randn(mean.shape, generator=generator).to(device))
        latents = latents * scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        # Offset noise (Guttenberg 2023): these images are mostly one flat colour, i.e. the
        # latent mean, which plain noise at t=999 never fully hides; a shared per-channel
        # offset teaches the model to set it from the prompt.
        noise = noise + 0.1 * torch.randn(latents.shape[:2] + (1, 1), generator=generator).to(device)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (len(index),),
                          generator=generator).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        prediction = unet(noisy, t, encoder_hidden_states=context,
                          encoder_attention_mask=context_mask).sample
        # Min-SNR-5 weighting (Hang et al. 2023) converges markedly faster in few steps.
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        per_sample = ((prediction - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, unet_params, 1 - decay)
        plain = per_sample.mean().item()
        running = plain if running is None else 0.98 * running + 0.02 * plain
        if step % 100 == 0 or step == args.unet_steps:
            log_every(step, args.unet_steps, start, loss=loss.item(), eps_mse_avg=running)
        if step % 1000 == 0:
            torch.save(ema.state_dict(), Path(args.work) / "unet_ema.pt")
        if args.unet_max_minutes and time.time() - start > 60 * args.unet_max_minutes:
            print(f"stopping at step {step}: --unet-max-minutes reached")
            break
    print(f"UNet trained in {time.time() - start:.0f} s")
    return ema


# --- export, sampling, fixture -----------------------------------------------------------

def export(args, vae, unet, scaling_factor):
    import diffusers
    from safetensors.torch import save_file

    out = Path(args.out)
    for name, model, config in (("vae", vae, dict(VAE_CONFIG, scaling_factor=scaling_factor)),
                                ("unet", unet, UNET_CONFIG)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        full = dict(model.config)
        full.update(config)
        full = {k: v for k, v in full.items() if not k.startswith("_")}
        full = {"_class_name": type(model).__name__,
                "_diffusers_version": diffusers.__version__, **full}
        (folder / "config.json").write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
        state = {k: v.detach().half().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    scheduler = {"_class_name": "EulerDiscreteScheduler",
                 "_diffusers_version": diffusers.__version__, **SCHEDULE,
                 "timestep_spacing": "leading", "steps_offset": 1}
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n")
    index = {
        "_class_name": "WeftTinyShapesPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        # Not stored here: weft's set-up puts all-MiniLM-L6-v2 in models/converted/minilm.
        # ("_"-prefixed, so diffusers does not try to load it as a component.)
        "_weft_text_encoder": "all-MiniLM-L6-v2 token embeddings (last_hidden_state, "
                              "[CLS] .. [SEP], no pooling, no padding)",
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"exported to {out}")


def load_exported(out, device):
    """The exported fp16 weights, in fp32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    out = Path(out)
    unet = UNet2DConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32,
                                                local_files_only=True).to(device).eval()
    vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32,
                                        local_files_only=True).to(device).eval()
    return unet, vae


@torch.no_grad()
def generate(unet, vae, encoder, prompt, seed, steps=20, cfg=6.0, device="cpu"):
    """txt2img the way weft runs it: cond and uncond contexts unpadded, each its own pass."""
    from diffusers import EulerDiscreteScheduler
    scheduler = EulerDiscreteScheduler(**SCHEDULE, timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(steps)
    cond, _ = encoder.embed([prompt])
    uncond, _ = encoder.embed([""])
    cond, uncond = cond.to(device), uncond.to(device)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=g).to(device)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        eps_c = unet(x, t, encoder_hidden_states=cond).sample
        eps_u = unet(x, t, encoder_hidden_states=uncond).sample
        latents = scheduler.step(eps_u + cfg * (eps_c - eps_u), t, latents).prev_sample
    image = vae.decode(latents / vae.config.scaling_factor).sample
    return ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


SAMPLE_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a black background",
    "a small green triangle at the top left on a white background",
    "a large purple star on an orange background",
    "a white ring at the bottom right on a green background",
    "a blue cross on a yellow background",
    "a small black square on the left on a red background",
    "an orange star in the center on a purple background",
]


def sample_grid(args, encoder):
    from PIL import Image
    unet, vae = load_exported(args.out, args.device)
    folder = Path(args.samples)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        row = [generate(unet, vae, encoder, prompt, seed, device=args.device) for seed in range(4)]
        rows.append(np.concatenate(row, axis=1))
        Image.fromarray(row[0]).resize((256, 256), Image.NEAREST).save(folder / f"{i}.png")
        print(f"{i}: {prompt}")
    Image.fromarray(np.concatenate(rows, axis=0)).resize((4 * 128, len(rows) * 128),
                                                          Image.NEAREST).save(folder / "grid.png")
    print(f"samples in {folder}")


@torch.no_grad()
def write_fixture(args, encoder):
    """Reference outputs of the exported weights (read in fp32) for nodes/tests/tiny_shapes.rs."""
    from safetensors.torch import save_file
    unet, vae = load_exported(args.out, "cpu")
    g = torch.Generator().manual_seed(1234)
    prompt = "a red circle on a blue background"
    context, _ = encoder.embed([prompt])
    sample = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=g)
    timestep = torch.tensor([500.0])
    unet_out = unet(sample, timestep, encoder_hidden_states=context).sample
    latent = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=g)
    decoded = vae.decode(latent).sample
    tensors = dict(sample=sample, timestep=timestep, context=context, unet_out=unet_out,
                   vae_latent=latent, vae_decoded=decoded)
    path = ROOT / "nodes/tests/fixtures/tiny_shapes/reference.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"prompt": prompt})
    print(f"fixture: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="vae,vae_whole,unet,export,sample,fixture")
    parser.add_argument("--device", default="cpu")
    # One thread: on a shared 2-core machine, OpenMP's barriers made 2 threads 10x slower.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=6000, help="rendered training images")
    parser.add_argument("--captions-per-image", type=int, default=3)
    parser.add_argument("--token-dropout", type=float, default=0.05)
    parser.add_argument("--vae-from", default=None,
                        help="an exported VAE folder to use instead of the vae stages' output "
                             "(e.g. models/tiny-shapes/vae: what those stages make from seed 0)")
    parser.add_argument("--vae-steps", type=int, default=1800)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-crop", type=int, default=32)
    parser.add_argument("--vae-whole-steps", type=int, default=600)
    parser.add_argument("--vae-whole-batch", type=int, default=8)
    parser.add_argument("--kl-weight", type=float, default=1e-5)
    parser.add_argument("--unet-steps", type=int, default=8000)
    parser.add_argument("--unet-batch", type=int, default=48)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--unet-max-minutes", type=float, default=None,
                        help="stop UNet training early after this long (a deadline guard)")
    parser.add_argument("--minilm", default=str(ROOT / "models/converted/minilm"))
    parser.add_argument("--out", default=str(ROOT / "models/tiny-shapes"))
    parser.add_argument("--work", default="/tmp/tiny-shapes-work")
    parser.add_argument("--samples", default="/tmp/tiny-shapes-samples")
    args = parser.parse_args()
    stages = set(args.stages.split(","))

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    encoder = MiniLmEncoder(args.minilm, args.device)

    vae = unet = None
    if stages & {"vae", "vae_whole", "unet"}:
        start = time.time()
        specs, images = make_pool(args.pool, args.seed)
        print(f"rendered {len(images)} images in {time.time() - start:.0f} s")
    if "vae" in stages:
        vae = round_to_fp16(train_vae(args, images))
        torch.save(vae.state_dict(), work / "vae_crops.pt")
    if "vae_whole" in stages:
        if vae is None:
            vae = build_vae()
            vae.load_state_dict(torch.load(work / "vae_crops.pt"))
        vae = round_to_fp16(train_vae(args, images, vae, whole=True)).eval()
        torch.save(vae.state_dict(), work / "vae.pt")
    elif stages & {"unet", "export"} and args.vae_from:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32,
                                            local_files_only=True).to(args.device).eval()
    elif stages & {"unet", "export"}:
        vae = build_vae().to(args.device).eval()
        vae.load_state_dict(torch.load(work / "vae.pt"))
    if "unet" in stages:
        means, stds = encode_pool(vae, images, args.device)
        # Latents enter the UNet with unit spread, as SD's 0.18215 does for its VAE.
        noise = torch.randn(means.shape, generator=torch.Generator().manual_seed(args.seed))
        scaling_factor = float(1 / (means + stds * noise).std())
        (work / "scaling_factor.txt").write_text(f"{scaling_factor!r}\n")
        print(f"latent std {1 / scaling_factor:.4f} -> scaling_factor {scaling_factor:.4f}")
    elif "export" in stages:
        scaling_factor = float((work / "scaling_factor.txt").read_text())
    if "unet" in stages:
        captions, caption_rows = caption_bank(specs, args.seed, args.captions_per_image)
        start = time.time()
        hidden, mask = encoder.embed(captions)
        print(f"embedded {len(captions)} captions in {time.time() - start:.0f} s, e.g.:")
        for text in captions[1:9]:
            print(f"  {text}")
        unet = train_unet(args, specs, means, stds, scaling_factor, caption_rows, hidden, mask)
        torch.save(unet.state_dict(), work / "unet_ema.pt")
    elif "export" in stages:
        unet = build_unet().to(args.device).eval()
        unet.load_state_dict(torch.load(work / "unet_ema.pt"))
    if "export" in stages:
        export(args, vae, unet, scaling_factor)
    if "sample" in stages:
        sample_grid(args, encoder)
    if "fixture" in stages:
        write_fixture(args, encoder)
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU time of these stages: {(usage.ru_utime + usage.ru_stime) / 60:.1f} min "
          f"(user {usage.ru_utime / 60:.1f}, system {usage.ru_stime / 60:.1f})")


if __name__ == "__main__":
    main()
