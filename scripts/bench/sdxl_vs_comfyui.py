"""SDXL on the CPU, weft side by side with ComfyUI on one full-size checkpoint: load, prompt
encodes, sampler step at 128x128 and 512x512, VAE decode, peak RSS, and the images compared.
One table, with the machine's load average before and after each side.

Each side runs alone, one after the other, in its own process under `/usr/bin/time -v` (its
peak RSS), at the same thread count, on one API-format graph: CheckpointLoaderSimple, the two
prompts (CLIPTextEncode), KSampler dpmpp_2m/karras at 128x128 (4 steps), euler/normal at 128x128
(4 steps) and dpmpp_2m/karras at 512x512 (a few steps), each decoded and saved. ComfyUI also
samples a control at 128x128 (scheduler normal instead of karras) in the same process: how far
that moves ComfyUI's own image says how much the image comparison can show (the small values of
the plain random file draw a nearly flat image; write the file with `--fan-in-scaled`).

Memory: besides /usr/bin/time's peak RSS (VmHWM), the side's process tree is sampled every 0.2 s
for RssAnon (memory the process allocated) and RssFile (file pages it has mapped that are
resident). ComfyUI loads the checkpoint through a memory map and its RSS counts those mapped
pages while they stay resident, so its VmHWM swings with the machine's free memory; RssAnon does
not. With --warm-cache the checkpoint is read once into the page cache before each side, so both
start from the same cache state. Extra sides: `weft_128` (weft on the graph without 512x512: its
128x128 peak alone), `weft_bf16` (`precision: bf16`; its images compared with weft's fp32) and
`weft_fp16s` (`precision: fp16-storage`: the UNet kept in fp16, computed in fp32; its images must
equal weft's) and `weft_fp32` (`precision: fp32`: the UNet converted to fp32 on load, as weft's
`auto` did before it kept an fp16 SDXL UNet as stored; its images must equal weft's). Each side's memory samples are also written to WORK/SIDE.rss.tsv (seconds since
its start, RssAnon, RssFile in KiB), to tell which stage holds the peak.

Needs what scripts/parity/sdxl_comfyui.py needs (a ComfyUI checkout on --comfyui and its
packages on PYTHONPATH; a built target/release/weft; set-up's CLIP vocabulary) and a full-size
SDXL base file, for example the random one of
`cargo run --release --example write_sdxl_checkpoint -- --fan-in-scaled /tmp/full_sdxl.safetensors` (6.9 GB
fp16; nothing to download). ComfyUI runs with `--cpu` (UNet and VAE in fp32, text encoders in
fp16 computing in fp32); weft with `precision: auto` (on the CPU: the same values, its fp16 SDXL
UNet kept in fp16 and widened per layer).

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


def graph(steps_512, control, with_512=True):
    """The API-format graph both sides run (ComfyUI adds the control sampler)."""
    def sampler(latent, steps, scheduler, name="dpmpp_2m"):
        return {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": steps, "cfg": 5.0, "sampler_name": name, "scheduler": scheduler,
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
        "33": sampler("5", STEPS_128, "normal", "euler"),
    }
    outputs = [("3", "8", "9", "img128"), ("33", "38", "39", "euler128")]
    if with_512:
        p["15"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}
        p["13"] = sampler("15", steps_512, "karras")
        outputs.append(("13", "18", "19", "img512"))
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
    # SaveImage nodes run in the prompt's order: 9 (128), 39 (euler 128), 19 (512), 29 (control).
    names = ["img128", "euler128", "img512", "control128"]
    for name, image in zip(names, images):
        np.save(os.path.join(work, f"comfyui_{name}.npy"), image)
        Image.fromarray(parity.saved(image)).save(os.path.join(work, f"comfyui_{name}.png"))
    by_node = {k.split(" ")[0]: v for k, v in timings.items()}
    print("RESULT " + json.dumps({
        "load": by_node["4"], "encode_pos": by_node["6"], "encode_neg": by_node["7"],
        "sample128": by_node["3"], "sample_euler128": by_node["33"], "sample512": by_node["13"],
        "decode128": by_node["8"], "decode512": by_node["18"]}), flush=True)


UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}


def child_weft(args, work, side):
    """`weft import` then `weft run` of the same graph; node times from its summary. Side
    `weft_128` runs it without the 512x512 part, `weft_bf16` with `precision: bf16`,
    `weft_fp16s` with `precision: fp16-storage`, `weft_fp32` with `precision: fp32`."""
    from PIL import Image
    weft = os.path.join(REPO, "target", "release", "weft")
    with_512 = side != "weft_128"
    api = os.path.join(work, f"{side}.api.json")
    with open(api, "w") as f:
        json.dump(graph(args.steps_512, control=False, with_512=with_512), f, indent=1)
    yaml_path = os.path.join(work, f"{side}.yaml")
    subprocess.run([weft, "import", api, "-o", yaml_path], check=True)
    out = os.path.join(work, f"{side}-out")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    cmd = [weft, "run", yaml_path, "--models", work, "--models", os.path.join(REPO, "models"),
           "--device", "cpu", "--threads", str(args.threads), "--output", out]
    precision = {"weft_bf16": "bf16", "weft_fp16s": "fp16-storage", "weft_fp32": "fp32"}.get(side)
    if precision:
        with open(yaml_path) as f:
            loader = next(m.group(1) for m in re.finditer(r"^  (\S+_4):", f.read(), re.M))
        cmd += ["--set", f"{loader}.precision={precision}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    sys.stderr.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"weft run failed ({r.returncode})")
    times = {}
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r"\s+(\S+)\s+\S+\s+ran\s+([\d.]+)\s+(s|ms|µs|ns)$", line)
        if m:
            times[m.group(1)] = float(m.group(2)) * UNITS[m.group(3)]
    for prefix in ["img128", "euler128"] + (["img512"] if with_512 else []):
        png = sorted(f for f in os.listdir(out) if f.startswith(prefix) and f.endswith(".png"))[-1]
        np.save(os.path.join(work, f"{side}_{prefix}.npy"), np.asarray(Image.open(os.path.join(out, png)).convert("RGB")))

    def node(number):
        return next((v for k, v in times.items() if k.endswith("_" + number)), float("nan"))
    print("RESULT " + json.dumps({
        "load": node("4"), "encode_pos": node("6"), "encode_neg": node("7"), "sample128": node("3"),
        "sample_euler128": node("33"), "sample512": node("13"), "decode128": node("8"),
        "decode512": node("18")}), flush=True)


def tree_memory_kib(pid):
    """RssAnon, RssFile and VmRSS (KiB) summed over `pid` and its descendants."""
    total = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in total:
                        total[key] += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pending += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def warm_cache(path):
    """Reads the checkpoint once so that its pages are in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def run_side(side, args, work):
    """This script again as one side's process, under /usr/bin/time -v, its process tree's
    memory sampled while it runs."""
    if args.warm_cache:
        warm_cache(os.path.realpath(args.checkpoint))
    before = loadavg()
    cmd = ["/usr/bin/time", "-v", sys.executable, os.path.abspath(__file__), "--child", side,
           "--comfyui", args.comfyui, "--checkpoint", args.checkpoint, "--work", work,
           "--threads", str(args.threads), "--steps-512", str(args.steps_512)]
    started = time.time()
    out_path, err_path = os.path.join(work, f"{side}.stdout"), os.path.join(work, f"{side}.stderr")
    peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    trace_path = os.path.join(work, f"{side}.rss.tsv")
    with open(out_path, "w") as out, open(err_path, "w") as err, open(trace_path, "w") as trace:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            now = tree_memory_kib(proc.pid)
            for k in peak:
                peak[k] = max(peak[k], now[k])
            trace.write(f"{time.time() - started:.1f}\t{now['RssAnon']}\t{now['RssFile']}\n")
            time.sleep(0.2)
    wall = time.time() - started

    class Finished:
        returncode = proc.returncode
        stdout = open(out_path).read()
        stderr = open(err_path).read()
    r = Finished
    with open(os.path.join(work, f"{side}.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"{side} failed ({r.returncode}); log: {os.path.join(work, side + '.log')}\n{r.stderr[-3000:]}")
    result = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:])
    result["peak_rss_anon_kib"] = peak["RssAnon"]
    result["peak_rss_file_kib"] = peak["RssFile"]
    result["peak_sampled_rss_kib"] = peak["VmRSS"]
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
    ap.add_argument("--child", choices=["comfyui", "weft", "weft_128", "weft_bf16", "weft_fp16s", "weft_fp32"], help=argparse.SUPPRESS)
    ap.add_argument("--sides", default="comfyui,weft",
                    help="which sides to run, of comfyui, weft, weft_128, weft_bf16, weft_fp16s, weft_fp32 (a side run before keeps its result file)")
    ap.add_argument("--warm-cache", action="store_true", help="read the checkpoint into the page cache before each side")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    link = os.path.join(work, "checkpoints", "full_sdxl.safetensors")
    if os.path.islink(link):
        os.remove(link)
    os.symlink(os.path.abspath(args.checkpoint), link)
    if args.child == "comfyui":
        return child_comfyui(args, work)
    if args.child:
        return child_weft(args, work, args.child)

    import sdxl_comfyui as parity
    results = {}
    for side in args.sides.split(","):
        results[side] = run_side(side, args, work)
        with open(os.path.join(work, f"{side}.result.json"), "w") as f:
            json.dump(results[side], f)
    for side in ["comfyui", "weft", "weft_128", "weft_bf16", "weft_fp16s", "weft_fp32"]:
        path = os.path.join(work, f"{side}.result.json")
        if side not in results and os.path.exists(path):
            with open(path) as f:
                results[side] = json.load(f)
    c, w = results["comfyui"], results["weft"]

    rows = []
    for prefix in ["img128", "euler128", "img512"]:
        comfy = np.load(os.path.join(work, f"comfyui_{prefix}.npy"))
        weft_img = np.load(os.path.join(work, f"weft_{prefix}.npy"))
        mx, mean = parity.diff(weft_img, parity.saved(comfy))
        rmx, rmean = parity.diff(weft_img, parity.rounded(comfy))
        rows.append((prefix, mx, mean, rmx, rmean, float(comfy.min()), float(comfy.max()), float(comfy.std())))
    control = np.load(os.path.join(work, "comfyui_control128.npy"))
    cmx, cmean = parity.diff(parity.saved(control), parity.saved(np.load(os.path.join(work, "comfyui_img128.npy"))))

    gib = 1 / (1024 * 1024)
    print(f"\nSDXL full size on the CPU, {args.threads} threads each, cfg 5, seed 42; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; warm cache: {args.warm_cache}")
    print("\n| | ComfyUI | weft | weft / ComfyUI |")
    print("|---|---|---|---|")

    def row(label, a, b, fmt="{:.1f} s"):
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}× |")
    row("checkpoint load", c["load"], w["load"])
    row("prompt encode (positive)", c["encode_pos"], w["encode_pos"])
    row("prompt encode (negative)", c["encode_neg"], w["encode_neg"])
    row(f"sampler step 128×128 dpmpp_2m (of {STEPS_128})", c["sample128"] / STEPS_128, w["sample128"] / STEPS_128)
    row(f"sampler step 128×128 euler (of {STEPS_128})", c["sample_euler128"] / STEPS_128, w["sample_euler128"] / STEPS_128)
    row(f"sampler step 512×512 (of {args.steps_512})", c["sample512"] / args.steps_512, w["sample512"] / args.steps_512)
    row("VAE decode 128×128", c["decode128"], w["decode128"])
    row("VAE decode 512×512", c["decode512"], w["decode512"])
    row("peak RSS (VmHWM, time -v)", c["peak_rss_kib"] * gib, w["peak_rss_kib"] * gib, "{:.2f} GiB")
    row("peak RssAnon (sampled)", c["peak_rss_anon_kib"] * gib, w["peak_rss_anon_kib"] * gib, "{:.2f} GiB")
    print(f"| peak RssFile (sampled) | {c['peak_rss_file_kib'] * gib:.2f} GiB | {w['peak_rss_file_kib'] * gib:.2f} GiB | |")
    print(f"| CPU share (time -v) | {c['cpu_percent']} | {w['cpu_percent']} | |")
    print(f"| load average before → after | {c['load_before']} → {c['load_after']} | {w['load_before']} → {w['load_after']} | |")
    for side in ["weft_128", "weft_bf16", "weft_fp16s", "weft_fp32"]:
        if side in results:
            r = results[side]
            print(f"\n{side}: peak RSS {r['peak_rss_kib'] * gib:.2f} GiB, RssAnon {r['peak_rss_anon_kib'] * gib:.2f} GiB, "
                  f"load {r['load']:.1f} s, step 128² dpmpp {r['sample128'] / STEPS_128:.2f} s, euler "
                  f"{r['sample_euler128'] / STEPS_128:.2f} s, step 512² {r['sample512'] / args.steps_512:.2f} s, "
                  f"CPU {r['cpu_percent']}, load average {r['load_before']} → {r['load_after']}")
    print("\n| image | weft vs ComfyUI PNG max /255 | mean /255 | vs ComfyUI float rounded: max | mean | ComfyUI's image min..max (std) |")
    print("|---|---|---|---|---|---|")
    for name, mx, mean, rmx, rmean, lo, hi, std in rows:
        print(f"| {name} | {mx} | {mean:.4f} | {rmx} | {rmean:.4f} | {lo:.1f}..{hi:.1f} ({std:.2f}) |")
    print(f"\ncontrol: ComfyUI's 128×128 image with scheduler normal instead of karras moves by max {cmx}/255, mean {cmean:.3f}/255")
    for side, name in [("weft_bf16", "bf16"), ("weft_fp16s", "fp16-storage"), ("weft_fp32", "fp32")]:
        if side not in results:
            continue
        for prefix in ["img128", "euler128", "img512"]:
            path = os.path.join(work, f"{side}_{prefix}.npy")
            if os.path.exists(path):
                mx, mean = parity.diff(np.load(path), np.load(os.path.join(work, f"weft_{prefix}.npy")))
                print(f"{name} vs weft's auto ({prefix}): max {mx}/255, mean {mean:.3f}/255")
    if any(r[1] > 2 for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
