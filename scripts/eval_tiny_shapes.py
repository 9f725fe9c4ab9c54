"""Judges the embedded tiny-shapes model on prompts it was never trained on, through weft.

Renders scripts/tiny_shapes_heldout.py's prompts (unseen combinations in the captions'
wording, and the same combinations in unseen words and sentence forms), two seeds each, with
`weft run` on one generated workflow, then judges every PNG without the model:

- background colour: the palette colour nearest the median of the border pixels;
- shape colour: the palette colour nearest the median of the pixels that differ most from
  the background;
- shape: the template (rendered by the training script's own renderer) that overlaps the
  image's foreground best, fitted to its centroid and area;
- position (in-distribution prompts that name one): which ninth of the image the centroid is in.

`--check-judge N` first judges N images rendered by the training script's renderer, whose
answers are known, so the judge itself is checked. `--assert` exits non-zero when the judge or
the unseen combinations are under issue 9's goals (colour 90%, background 95%, shape 85%), or
the place prompts (rendered without `--subset`, or with `--positions`) have under 80% of the
shapes in the named ninth; `--assert-paraphrases` also when a paraphrase set has under 60%
all three right, a goal the current model does not reach (its rates are printed either way).
tests/tiny_shapes_eval.rs runs `--check-judge 150 --assert` (the whole set).

    .venv/bin/python scripts/eval_tiny_shapes.py --sheet /tmp/sheet.png
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# numpy's and torch's thread pools only contend here: the work is many small arrays.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_shapes_heldout as held_out  # noqa: E402
from train_tiny_shapes import (COLOURS, IMAGE_SIZE, POSITION_STEP, POSITIONS,  # noqa: E402
                               SHAPES, random_spec, render, shape_mask)

ROOT = Path(__file__).resolve().parent.parent
PALETTE_NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[n] for n in PALETTE_NAMES])
GOALS = {"foreground": 0.90, "background": 0.95, "shape": 0.85}
PARAPHRASE_GOAL = 0.60
# "Positions followed, not loosely": the shape's centroid in the named ninth of the image.
POSITION_GOAL = 0.80

# In-distribution prompts that name a position, to see positions followed (not held out,
# not asserted: the rates are about colours and shapes).
PLACE_PHRASES = [("top left", "at the top left"), ("top right", "at the top right"),
                 ("bottom left", "at the bottom left"), ("bottom right", "at the bottom right"),
                 ("centre", "in the centre"), ("left", "on the left"), ("right", "on the right"),
                 ("top", "at the top"), ("bottom", "at the bottom")]
POSITION_PROMPTS = [
    (f"a large white square {phrase} on a black background", "square", "white", "black", place)
    for place, phrase in PLACE_PHRASES
] + [
    (f"a small red circle {phrase} on a yellow background", "circle", "red", "yellow", place)
    for place, phrase in PLACE_PHRASES
]


def nearest_colour(rgb):
    return PALETTE_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(1)))]


def _unit_templates():
    """Each shape's area and centroid offset at radius 1 (measured at radius 20)."""
    facts = {}
    centre = IMAGE_SIZE / 2
    for shape in SHAPES:
        mask = shape_mask(shape, centre, centre, 20.0, 0.0)
        ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
        area = mask.sum()
        facts[shape] = (area / 400.0, ((xs * mask).sum() / area - centre) / 20.0,
                        ((ys * mask).sum() / area - centre) / 20.0)
    return facts


UNIT = _unit_templates()


def judge(image):
    """{background, foreground, shape, position} of an HxWx3 uint8 image."""
    x = image.astype(np.float64) / 255.0
    border = np.concatenate([x[:3].reshape(-1, 3), x[-3:].reshape(-1, 3),
                             x[:, :3].reshape(-1, 3), x[:, -3:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    verdict = {"background": nearest_colour(background_rgb), "foreground": None,
               "shape": None, "position": None}
    distance = np.sqrt(((x - background_rgb) ** 2).sum(-1))
    if (distance > 0.18).sum() < 8:
        return verdict  # nothing drawn
    # The core of the object: the pixels furthest from the background (edges are mixed).
    core = distance >= np.quantile(distance[distance > 0.18], 0.5)
    foreground_rgb = np.median(x[core], axis=0)
    verdict["foreground"] = nearest_colour(foreground_rgb)
    direction = foreground_rgb - background_rgb
    coverage = np.clip(((x - background_rgb) @ direction) / (direction @ direction), 0, 1)
    coverage = np.where(distance > 0.09, coverage, 0.0)  # background noise is not object
    area = coverage.sum()
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    cx, cy = (xs * coverage).sum() / area, (ys * coverage).sum() / area
    best, best_overlap = None, -1.0
    for shape in SHAPES:
        unit_area, off_x, off_y = UNIT[shape]
        radius = np.sqrt(area / unit_area)
        for scale in (0.9, 1.0, 1.1):
            r = radius * scale
            for rotation in ((0.0,) if shape in ("circle", "ring") else (-0.12, 0.0, 0.12)):
                template = shape_mask(shape, cx - off_x * r, cy - off_y * r, r, rotation)
                overlap = np.minimum(template, coverage).sum() / np.maximum(template,
                                                                            coverage).sum()
                if overlap > best_overlap:
                    best, best_overlap = shape, overlap
    verdict["shape"] = best
    verdict["position"] = place_of(cx, cy)
    return verdict


def place_of(cx, cy):
    """The POSITIONS name whose ninth of the image holds (cx, cy)."""
    def third(v):
        offset = v - IMAGE_SIZE / 2
        return 0 if abs(offset) < min(POSITION_STEP.values()) / 2 else int(np.sign(offset))
    ux, uy = third(cx), third(cy)
    return next(name for name, (px, py) in POSITIONS.items() if (px, py) == (ux, uy))


def check_judge(count, seed=7):
    """The judge's rates on `count` rendered images whose answers are known."""
    rng = random.Random(seed)
    right = {"foreground": 0, "background": 0, "shape": 0, "position": 0}
    for _ in range(count):
        spec = random_spec(rng)
        if rng.random() < 0.3:  # held-out combinations too: the judge must not care
            spec["shape"], spec["colour"], spec["background"] = rng.choice(
                held_out.held_out_combinations())
        verdict = judge(render(spec, rng))
        right["foreground"] += verdict["foreground"] == spec["colour"]
        right["background"] += verdict["background"] == spec["background"]
        right["shape"] += verdict["shape"] == spec["shape"]
        right["position"] += verdict["position"] == spec["position"]
    return {k: v / count for k, v in right.items()}


def workflow_yaml(items):
    """One workflow that renders every (prompt, seed) item as its own branch."""
    lines = ["weft: 1", "nodes:",
             "  model: {type: LoadCheckpoint, name: tiny-shapes}",
             "  negative: {type: PromptEncode, encoder: $model.text_encoder, text: ''}",
             "  latent: {type: EmptyLatent, width: 64, height: 64}"]
    for i, (prompt, seed) in enumerate(items):
        quoted = "'" + prompt.replace("'", "''") + "'"
        lines += [
            f"  p{i}: {{type: PromptEncode, encoder: $model.text_encoder, text: {quoted}}}",
            f"  s{i}: {{type: Sampler, model: $model.unet, positive: $p{i}.conditioning, "
            f"negative: $negative.conditioning, latent: $latent.latent, seed: {seed}, "
            "steps: 20, cfg: 5.0, sampler: euler, schedule: karras}",
            f"  d{i}: {{type: VaeDecode, vae: $model.vae, latent: $s{i}.latent}}",
            f"  o{i}: {{type: SaveImage, image: $d{i}.image, prefix: item{i:03d}}}",
        ]
    return "\n".join(lines) + "\n"


def render_with_weft(weft, models, items, folder):
    """PNGs (as arrays) of every item, rendered by one `weft run`."""
    from PIL import Image
    folder = Path(folder)
    workflow = folder / "eval.yaml"
    workflow.write_text(workflow_yaml(items))
    out = folder / "out"
    command = [str(weft), "run", str(workflow), "--output", str(out), "--models", str(models),
               "--device", "cpu", "--json"]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"weft run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    print(f"weft rendered {len(items)} images in {time.time() - start:.1f} s")
    return [np.array(Image.open(out / f"item{i:03d}_00001.png").convert("RGB"))
            for i in range(len(items))]


def rates(verdicts, truths):
    right = {"foreground": 0, "background": 0, "shape": 0, "all three": 0}
    for verdict, (shape, colour, background) in zip(verdicts, truths):
        checks = (verdict["foreground"] == colour, verdict["background"] == background,
                  verdict["shape"] == shape)
        for key, ok in zip(("foreground", "background", "shape"), checks):
            right[key] += ok
        right["all three"] += all(checks)
    return {k: v / len(verdicts) for k, v in right.items()}


def contact_sheet(path, rows):
    """rows: (label, [(image, all_right)]) -> a PNG, each image 2x with a green/red frame."""
    from PIL import Image, ImageDraw
    cell, label_width = 2 * IMAGE_SIZE + 6, 330
    width = label_width + cell * max(len(images) for _, images in rows)
    sheet = Image.new("RGB", (width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), label[:54], fill="black")
        for c, (image, ok) in enumerate(images):
            x, y = label_width + c * cell, r * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill="#2a2" if ok else "#d22")
            big = Image.fromarray(image).resize((2 * IMAGE_SIZE, 2 * IMAGE_SIZE), Image.NEAREST)
            sheet.paste(big, (x + 3, y + 3))
    sheet.save(path)
    print(f"contact sheet: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weft", default=str(ROOT / "target/release/weft"))
    parser.add_argument("--models", default=str(ROOT / "models"))
    parser.add_argument("--forms", action="store_true",
                        help="also the paraphrase sets' forms with the captions' own words "
                             "(tells an unseen form from an unseen word; not a goal)")
    parser.add_argument("--positions", action="store_true",
                        help="with --subset: render the place prompts too (always without it)")
    parser.add_argument("--subset", action="store_true",
                        help="only tiny_shapes_heldout.TEST_SUBSET (half the prompts, a quick look)")
    parser.add_argument("--check-judge", type=int, default=0, metavar="N")
    parser.add_argument("--sheet", help="write a contact sheet PNG here")
    parser.add_argument("--assert", dest="assert_goals", action="store_true",
                        help="exit 1 when the judge or the unseen combinations miss their goals")
    parser.add_argument("--assert-paraphrases", action="store_true",
                        help="exit 1 when a paraphrase set misses its goal too (not met yet: "
                             "see models/tiny-shapes/README.md)")
    args = parser.parse_args()

    failures, shortfalls = [], []
    if args.check_judge:
        judged = check_judge(args.check_judge)
        print(f"judge on {args.check_judge} rendered images: " +
              ", ".join(f"{k} {v:.1%}" for k, v in judged.items()))
        failures += [f"judge {k} {v:.1%} < 98%" for k, v in judged.items() if v < 0.98]

    pick = held_out.TEST_SUBSET if args.subset else range(24)
    sets = {"combinations": [held_out.combination_prompts()[i] for i in pick],
            "paraphrases": [held_out.paraphrase_prompts()[i] for i in pick],
            "paraphrases-2": [held_out.paraphrase_prompts(2)[i] for i in pick],
            "paraphrases-3": [held_out.paraphrase_prompts(3)[i] for i in pick]}
    if args.forms:
        for which in (1, 2, 3):
            sets[f"forms-{which}"] = [held_out.form_prompts(which)[i] for i in pick]
    items, owners = [], []
    for name, prompts in sets.items():
        for k, (prompt, *_truth) in enumerate(prompts):
            for seed in held_out.SEEDS:
                items.append((prompt, seed))
                owners.append((name, k))
    with_positions = args.positions or not args.subset
    if with_positions:
        for k, (prompt, *_truth) in enumerate(POSITION_PROMPTS):
            for seed in held_out.SEEDS:
                items.append((prompt, seed))
                owners.append(("positions", k))

    with tempfile.TemporaryDirectory() as folder:
        images = render_with_weft(args.weft, args.models, items, folder)
    verdicts = [judge(image) for image in images]

    sheet_rows = []
    for name, prompts in sets.items():
        mine = [(v, img, prompts[k]) for (owner, k), v, img in zip(owners, verdicts, images)
                if owner == name]
        result = rates([v for v, _, _ in mine], [truth[1:] for _, _, truth in mine])
        print(f"{name} ({len(mine)} images): " +
              ", ".join(f"{k} {v:.1%}" for k, v in result.items()))
        if name == "combinations":
            failures += [f"{name} {k} {result[k]:.1%} < {goal:.0%}"
                         for k, goal in GOALS.items() if result[k] < goal]
        elif name.startswith("paraphrases") and result["all three"] < PARAPHRASE_GOAL:
            shortfalls.append(f"{name} all three {result['all three']:.1%} < 60%")
        for k, (prompt, shape, colour, background) in enumerate(prompts):
            row = [(img, v["shape"] == shape and v["foreground"] == colour
                    and v["background"] == background)
                   for (owner, j), v, img in zip(owners, verdicts, images)
                   if owner == name and j == k]
            sheet_rows.append((prompt, row))
            for (owner, j), v in zip(owners, verdicts):
                if owner == name and j == k and not (v["shape"] == shape and v["foreground"]
                                                     == colour and v["background"] == background):
                    print(f"  miss: {prompt!r}: saw {v['foreground']} {v['shape']} on "
                          f"{v['background']}")
    if with_positions:
        placed = [(v, POSITION_PROMPTS[k]) for (owner, k), v in zip(owners, verdicts)
                  if owner == "positions"]
        hits = sum(v["position"] == truth[4] for v, truth in placed)
        print(f"positions ({len(placed)} images, in-distribution wording): {hits / len(placed):.1%}")
        if hits / len(placed) < POSITION_GOAL:
            failures.append(f"positions {hits / len(placed):.1%} < {POSITION_GOAL:.0%}")
        shown = {}
        for (owner, k), v, img in zip(owners, verdicts, images):
            if owner == "positions":
                shown.setdefault(k, []).append((img, v["position"] == POSITION_PROMPTS[k][4]))
        sheet_rows += [(POSITION_PROMPTS[k][0], cells) for k, cells in shown.items()]
    if args.sheet:
        contact_sheet(args.sheet, sheet_rows)
    if shortfalls:
        print("below the paraphrase goal: " + "; ".join(shortfalls))
    if failures:
        print("below the goals: " + "; ".join(failures))
    if args.assert_goals and failures or args.assert_paraphrases and shortfalls:
        sys.exit(1)
    if not failures and not shortfalls:
        print("all goals met")


if __name__ == "__main__":
    main()
