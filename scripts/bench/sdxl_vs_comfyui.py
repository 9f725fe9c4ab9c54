"""SDXL on the CPU, weft side by side with ComfyUI on one full-size checkpoint: load, prompt
encodes, sampler step at 128x128 and 512x512, VAE decode, peak RSS, and the 128x128 images
compared. One table, with the machine's load average before and after each side.

Each side runs alone, one after the other, in its own process under `/usr/bin/time -v` (its
peak RSS), at the same thread count, on one API-format graph: CheckpointLoaderSimple, the two
prompts (CLIPTextEncode), KSampler dpmpp_2m/karras at 128x128 (4 steps) and at 512x512 (a few
steps), each decoded and saved. ComfyUI also samples a control at 128x128 (scheduler normal
instead of karras) in the same process: how far that moves ComfyUI's own image says how much the
image comparison can show (a random checkpoint draws a nearly flat image).

Needs what scripts/parity/sdxl_comfyui.py needs (a ComfyUI checkout on --comfyui and its
packages on PYTHONPATH; a built target/release/weft; set-up's CLIP vocabulary) and a full-size
SDXL base file, for example the random one of
`cargo run --release --example write_sdxl_checkpoint -- /tmp/full_sdxl.safetensors` (6.9 GB
fp16; nothing to download). ComfyUI runs with `--cpu` (UNet and VAE in fp32, text encoders in
fp16 computing in fp32); weft with `precision: auto` (the same on the CPU).

  PYTHONPATH=/tmp/comfy-lib .venv/bin/python scripts/bench/sdxl_vs_comfyui.py \\
      --comfyui /tmp/ComfyUI --checkpoint /tmp/full_sdxl.safetensors [--threads 2] [--steps-512 2]

Run nothing else heavy meanwhile: a full-size SDXL run holds 12-17 GiB.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts", "parity"))

STEPS_128 = 4
PROMPT = "a red cube on a wooden table"
NEGATIVE = "blurry, low quality"


def graph(steps_512, control):
    """The API-format graph both sides run (ComfyUI adds the control sampler)."""
    def sampler(latent, steps, scheduler):
        return {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": steps, "cfg": 5.0, "sampler_name": "dpmpp_2m", "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": [latent, 0]}}

    def decode_save(samples, prefix):
        return ({"class_type": "VAEDecode", "inputs": {"samples": [samples, 0], "vae": ["4", 2]}},
                {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": [None, 0]}})

    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "full_sdxl.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "3": sampler("5", STEPS_128, "karras"),
        "15": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "13": sampler("15", steps_512, "karras"),
    }
    outputs = [("3", "8", "9", "img128"), ("13", "18", "19", "img512")]
    if control:
        p["23"] = sampler("5", STEPS_128, "normal")
        outputs.append(("23", "28", "29", "control128"))
    for samples, dec, save, prefix in outputs:
        d, s = decode_save(samples, prefix)
        s["inputs"]["images"][0] = dec
        p[dec], p[save] = d, s
    return p


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def child_comfyui(args, work):
    """ComfyUI's nodes in this process (scripts/parity/sdxl_comfyui.py's runner)."""
    import sdxl_comfyui as parity
    import torch
    from PIL import Image
    torch.set_num_threads(args.threads)
    nodes = parity.comfy_setup(args.comfyui, work)
    timings, images = {}, []
    prompt = graph(args.steps_512, control=True)
    images = parity.comfy_run(nodes, prompt, timings)
    # SaveImage nodes run in the prompt's order: 9 (128), 19 (512), 29 (control).
    names = ["img128", "img512", "control128"]
    for name, image in zip(names, images):
        np.save(os.path.join(work, f"comfyui_{name}.npy"), image)
        Image.fromarray(parity.saved(image)).save(os.path.join(work, f"comfyui_{name}.png"))
    by_node = {k.split(" ")[0]: v for k, v in timings.items()}
    print("RESULT " + json.dumps({
        "load": by_node["4"], "encode_pos": by_node["6"], "encode_neg": by_node["7"],
        "sample128": by_node["3"], "sample512": by_node["13"], "decode128": by_node["8"],
        "decode512": by_node["18"]}), flush=True)


UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}


def child_weft(args, work):
    """`weft import` then `weft run` of the same graph; node times from its summary."""
    from PIL import Image
    weft = os.path.join(REPO, "target", "release", "weft")
    api = os.path.join(work, "bench.api.json")
    with open(api, "w") as f:
        json.dump(graph(args.steps_512, control=False), f, indent=1)
    yaml_path = os.path.join(work, "bench.yaml")
    subprocess.run([weft, "import", api, "-o", yaml_path], check=True)
    out = os.path.join(work, "weft-out")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    r = subprocess.run([weft, "run", yaml_path, "--models", work, "--models", os.path.join(REPO, "models"),
                        "--device", "cpu", "--threads", str(args.threads), "--output", out],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    sys.stderr.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"weft run failed ({r.returncode})")
    times = {}
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r"\s+(\S+)\s+\S+\s+ran\s+([\d.]+)\s+(s|ms|µs|ns)$", line)
        if m:
            times[m.group(1)] = float(m.group(2)) * UNITS[m.group(3)]
    for prefix in ["img128", "img512"]:
        png = sorted(f for f in os.listdir(out) if f.startswith(prefix) and f.endswith(".png"))[-1]
        np.save(os.path.join(work, f"weft_{prefix}.npy"), np.asarray(Image.open(os.path.join(out, png)).convert("RGB")))

    def node(number):
        return next(v for k, v in times.items() if k.endswith("_" + number))
    print("RESULT " + json.dumps({
        "load": node("4"), "encode_pos": node("6"), "encode_neg": node("7"), "sample128": node("3"),
        "sample512": node("13"), "decode128": node("8"), "decode512": node("18")}), flush=True)


def run_side(side, args, work):
    """This script again as one side's process, under /usr/bin/time -v."""
    before = loadavg()
    cmd = ["/usr/bin/time", "-v", sys.executable, os.path.abspath(__file__), "--child", side,
           "--comfyui", args.comfyui, "--checkpoint", args.checkpoint, "--work", work,
           "--threads", str(args.threads), "--steps-512", str(args.steps_512)]
    started = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - started
    with open(os.path.join(work, f"{side}.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"{side} failed ({r.returncode}); log: {os.path.join(work, side + '.log')}\n{r.stderr[-3000:]}")
    result = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:])
    result["peak_rss_kib"] = int(next(l for l in r.stderr.splitlines() if "Maximum resident" in l).split()[-1])
    result["cpu_percent"] = next(l for l in r.stderr.splitlines() if "Percent of CPU" in l).split()[-1]
    result["wall"] = wall
    result["load_before"], result["load_after"] = before, loadavg()
    print(f"{side}: {json.dumps(result)}", flush=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--checkpoint", required=True, help="a full-size SDXL base .safetensors")
    ap.add_argument("--work", default="/tmp/sdxl-bench-work")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-512", type=int, default=2)
    ap.add_argument("--child", choices=["comfyui", "weft"], help=argparse.SUPPRESS)
    ap.add_argument("--sides", default="comfyui,weft", help="which sides to run (a side run before keeps its result file)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    link = os.path.join(work, "checkpoints", "full_sdxl.safetensors")
    if os.path.islink(link):
        os.remove(link)
    os.symlink(os.path.abspath(args.checkpoint), link)
    if args.child == "comfyui":
        return child_comfyui(args, work)
    if args.child == "weft":
        return child_weft(args, work)

    import sdxl_comfyui as parity
    results = {}
    for side in args.sides.split(","):
        results[side] = run_side(side, args, work)
        with open(os.path.join(work, f"{side}.result.json"), "w") as f:
            json.dump(results[side], f)
    for side in ["comfyui", "weft"]:
        if side not in results:
            with open(os.path.join(work, f"{side}.result.json")) as f:
                results[side] = json.load(f)
    c, w = results["comfyui"], results["weft"]

    def images(prefix):
        comfy = np.load(os.path.join(work, f"comfyui_{prefix}.npy"))
        return np.load(os.path.join(work, f"weft_{prefix}.npy")), comfy
    rows = []
    for prefix in ["img128", "img512"]:
        weft_img, comfy = images(prefix)
        mx, mean = parity.diff(weft_img, parity.saved(comfy))
        rmx, rmean = parity.diff(weft_img, parity.rounded(comfy))
        rows.append((prefix, mx, mean, rmx, rmean, float(comfy.min()), float(comfy.max()), float(comfy.std())))
    control = np.load(os.path.join(work, "comfyui_control128.npy"))
    cmx, cmean = parity.diff(parity.saved(control), parity.saved(np.load(os.path.join(work, "comfyui_img128.npy"))))

    gib = 1 / (1024 * 1024)
    print(f"\nSDXL full size on the CPU, {args.threads} threads each, dpmpp_2m/karras, cfg 5, seed 42; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n| | ComfyUI | weft | weft / ComfyUI |")
    print("|---|---|---|---|")

    def row(label, a, b, fmt="{:.1f} s"):
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}× |")
    row("checkpoint load", c["load"], w["load"])
    row("prompt encode (positive)", c["encode_pos"], w["encode_pos"])
    row("prompt encode (negative)", c["encode_neg"], w["encode_neg"])
    row(f"sampler step 128×128 (of {STEPS_128})", c["sample128"] / STEPS_128, w["sample128"] / STEPS_128)
    row(f"sampler step 512×512 (of {args.steps_512})", c["sample512"] / args.steps_512, w["sample512"] / args.steps_512)
    row("VAE decode 128×128", c["decode128"], w["decode128"])
    row("VAE decode 512×512", c["decode512"], w["decode512"])
    row("peak RSS", c["peak_rss_kib"] * gib, w["peak_rss_kib"] * gib, "{:.2f} GiB")
    print(f"| CPU share (time -v) | {c['cpu_percent']} | {w['cpu_percent']} | |")
    print(f"| load average before → after | {c['load_before']} → {c['load_after']} | {w['load_before']} → {w['load_after']} | |")
    print("\n| image | weft vs ComfyUI PNG max /255 | mean /255 | vs ComfyUI float rounded: max | mean | ComfyUI's image min..max (std) |")
    print("|---|---|---|---|---|---|")
    for name, mx, mean, rmx, rmean, lo, hi, std in rows:
        print(f"| {name} | {mx} | {mean:.4f} | {rmx} | {rmean:.4f} | {lo:.1f}..{hi:.1f} ({std:.2f}) |")
    print(f"\ncontrol: ComfyUI's 128×128 image with scheduler normal instead of karras moves by max {cmx}/255, mean {cmean:.3f}/255")
    if any(r[1] > 2 for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
