"""The SDXL UNet step on the CPU, weft beside ComfyUI at equal threads: each side's UNet forward
as its sampler calls it (batch 2: prompt and negative), on full-size SDXL-base shapes, in its own
process, one after the other; the median seconds per forward and weft's ratio to ComfyUI's.

weft: `target/release/examples/sdxl_unet_step` on a full-size SDXL file, loaded as `precision:
auto` loads it on the CPU (an fp16 file's UNet kept in fp16, computed in fp32) and, with --fp32,
also as `precision: fp32` (converted to fp32 on load); it remembers the context's cross-attention keys and
values between steps as weft's sampler does. ComfyUI: its own UNetModel (comfy.ldm openaimodel,
the SDXL config of comfy/model_detection.py, `--cpu`, fp32) with weights drawn as the file's
(kernels of std 1/sqrt(fan-in), norms 1, biases 0): the speed of dense fp32 arithmetic does not
depend on the values, and drawing them keeps the comparison to the UNet alone. Each side's first
forward is a warm-up and not counted.

  cargo build --release --example sdxl_unet_step
  PYTHONPATH=/tmp/comfy-lib .venv/bin/python scripts/bench/sdxl_unet_step.py \\
      --comfyui /tmp/ComfyUI --checkpoint /tmp/full_sdxl.safetensors [--threads 2] \\
      [--sizes 128,512] [--steps 4,2] [--fp32]

Needs a ComfyUI checkout (tested at 618b803d) and what it imports on PYTHONPATH, as
scripts/parity/sdxl_comfyui.py does; a full-size SDXL file, for example
`cargo run --release --example write_sdxl_checkpoint -- --fan-in-scaled /tmp/full_sdxl.safetensors`.
Each side holds 10-12 GiB: run nothing else heavy meanwhile.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
WEFT_STEP = os.path.join(REPO, "target", "release", "examples", "sdxl_unet_step")

# comfy/model_detection.py's SDXL UNet config at 618b803d.
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
    "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def comfy_side(comfyui, threads, sizes, steps):
    """Runs in the child process: ComfyUI's UNet forward, one line per size."""
    import time

    import torch

    sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.set_num_threads(threads)
    model = UNetModel(**SDXL_UNET, dtype=torch.float32, device="meta",
                      operations=comfy.ops.disable_weight_init).to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    torch.manual_seed(0)
    context = torch.randn(2, 77, 2048)
    y = torch.randn(2, 2816)
    for size, n in zip(sizes, steps):
        x = torch.randn(2, 4, size // 8, size // 8)
        times = []
        with torch.no_grad():
            for step in range(n + 1):
                t = torch.full((2,), 999.0 - 50 * step)
                started = time.perf_counter()
                model(x, t, context=context, y=y)
                if step > 0:
                    times.append(time.perf_counter() - started)
        print(f"size {size} forward_s " + " ".join(f"{s:.3f}" for s in times), flush=True)


def forwards(output):
    """{size: [seconds, ...]} from a side's `size S forward_s ...` lines."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] == "size" and parts[2] == "forward_s":
            found[int(parts[1])] = [float(s) for s in parts[3:]]
    return found


def load():
    return os.getloadavg()[0]


def run_side(name, cmd, env=None):
    before = load()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"# {name}: load {before:.1f} -> {load():.1f}", flush=True)
    return forwards(done.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout")
    ap.add_argument("--checkpoint", required=True, help="full-size SDXL .safetensors for weft")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="128,512")
    ap.add_argument("--steps", default="4,2", help="timed forwards per size")
    ap.add_argument("--fp32", action="store_true", help="also weft with precision: fp32")
    ap.add_argument("--comfy-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) != len(sizes):
        sys.exit("--steps needs one count per size")
    if args.comfy_side:
        comfy_side(args.comfyui, args.threads, sizes, steps)
        return
    if not os.path.exists(WEFT_STEP):
        sys.exit(f"{WEFT_STEP} missing: cargo build --release --example sdxl_unet_step")
    common = ["--threads", str(args.threads)]
    sides = {}
    sides["ComfyUI"] = run_side("ComfyUI", [sys.executable, __file__, "--comfy-side",
                                            "--comfyui", args.comfyui, "--checkpoint",
                                            args.checkpoint, "--sizes", args.sizes,
                                            "--steps", args.steps] + common)
    for name, extra in [("weft auto", [])] + ([("weft fp32", ["--fp32"])] if args.fp32 else []):
        cmd = [WEFT_STEP, args.checkpoint] + common + extra
        for size, n in zip(sizes, steps):
            got = run_side(f"{name} {size}", cmd + ["--steps", str(n), str(size)])
            sides.setdefault(name, {}).update(got)
    print(f"\n| UNet forward, batch 2, {args.threads} threads | " +
          " | ".join(f"{s}x{s}" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    base = {s: statistics.median(sides["ComfyUI"][s]) for s in sizes}
    for name, got in sides.items():
        cells = []
        for s in sizes:
            m = statistics.median(got[s])
            cells.append(f"{m:.2f} s" + ("" if name == "ComfyUI" else f" ({m / base[s]:.2f}x)"))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
