"""End-to-end images of weft against ComfyUI: one ComfyUI API-format graph (a checkpoint, two
CLIPTextEncode, EmptyLatentImage, one KSampler + VAEDecode + SaveImage per sampler) run by
ComfyUI's own node classes and by `weft run` on the same graph imported with `weft import`,
then the saved 8-bit PNGs compared: max and mean |diff| in 1/255 per sampler.

Needs, none of it in this repository:
  - a ComfyUI checkout (not vendored; e.g. fetched to /tmp), importable with the Python that
    runs this script (torch plus what ComfyUI imports: psutil, einops, transformers,
    tokenizers, torchvision, av, pyyaml, ... e.g. `pip install --target /tmp/deps` and
    PYTHONPATH=/tmp/deps);
  - an SD1.5-layout single-file checkpoint. Random weights do: bench's
    make_sd15_shaped_checkpoint.py writes one of the right shapes. It must sit in
    MODELS/checkpoints/ (weft and ComfyUI both look there), and weft reads the CLIP
    vocabulary from MODELS/converted/clip/ (link set-up's models/converted there);
  - a built weft binary.

  python scripts/parity/comfy_e2e_images.py --comfyui /tmp/ComfyUI --models /tmp/e2e/models \
      --checkpoint sd15.safetensors --weft target/release/weft --work /tmp/e2e/run

ComfyUI runs first, on the CPU, then weft (`--device cpu`), one SD1.5 process at a time.
Samplers, size, steps and seed are options; the defaults are 256x256, 10 steps, seed 42.
On a shared 2-core CPU, ComfyUI took about 20 s a model call with random weights whatever
the size, so a run there used --size 128 --steps 4.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

SAMPLERS = [("euler", "normal"), ("dpmpp_2m", "karras"), ("dpmpp_2m_sde", "karras"),
            ("uni_pc", "normal"), ("heun", "normal"), ("ddim", "ddim_uniform")]


def api_graph(checkpoint, samplers, size, steps, seed, cfg):
    """The ComfyUI API-format prompt: shared loader, prompts and latent, a branch per sampler."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode",
              "inputs": {"text": "a lighthouse on a cliff at dusk, oil painting", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
    }
    for i, (sampler, scheduler) in enumerate(samplers):
        k, d, s = str(10 + 3 * i), str(11 + 3 * i), str(12 + 3 * i)
        graph[k] = {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}}
        graph[d] = {"class_type": "VAEDecode", "inputs": {"samples": [k, 0], "vae": ["4", 2]}}
        graph[s] = {"class_type": "SaveImage", "inputs": {"images": [d, 0], "filename_prefix": f"e2e-{sampler}-"}}
    return graph


def run_comfyui(comfy_root, models, graph, out_dir):
    """Executes `graph` with ComfyUI's node classes (nodes.NODE_CLASS_MAPPINGS), each node once,
    inputs resolved from its links, as ComfyUI's executor does for a graph without caching."""
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_root)
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    import nodes
    import torch

    folder_paths.add_model_folder_path("checkpoints", os.path.join(models, "checkpoints"), is_default=True)
    folder_paths.set_output_directory(out_dir)
    results = {}

    def value(node_id):
        if node_id not in results:
            spec = graph[node_id]
            cls = nodes.NODE_CLASS_MAPPINGS[spec["class_type"]]
            inputs = {name: (value(v[0])[v[1]] if isinstance(v, list) else v)
                      for name, v in spec["inputs"].items()}
            started = time.time()
            with torch.inference_mode():
                out = getattr(cls(), cls.FUNCTION)(**inputs)
            if isinstance(out, dict):
                out = out.get("result", ())
            print(f"  ComfyUI {node_id} {spec['class_type']}: {time.time() - started:.1f} s", flush=True)
            results[node_id] = out
        return results[node_id]

    for node_id, spec in graph.items():
        if spec["class_type"] == "SaveImage":
            value(node_id)


def newest_png(folder, prefix):
    names = sorted(n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".png"))
    if not names:
        raise SystemExit(f"no {prefix}*.png in {folder}: {sorted(os.listdir(folder))}")
    return os.path.join(folder, names[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout")
    ap.add_argument("--models", required=True, help="folder holding checkpoints/CHECKPOINT")
    ap.add_argument("--checkpoint", required=True, help="file name in MODELS/checkpoints")
    ap.add_argument("--weft", required=True, help="weft binary")
    ap.add_argument("--work", required=True, help="scratch folder for the graph and both outputs")
    ap.add_argument("--samplers", default=",".join(f"{s}:{k}" for s, k in SAMPLERS),
                    help="sampler:scheduler,... (default %(default)s)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--skip-comfyui", action="store_true", help="reuse the ComfyUI images in WORK")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(args.models, "checkpoints", args.checkpoint)):
        raise SystemExit(f"{args.models}/checkpoints/{args.checkpoint} is missing: see this script's help")
    samplers = [tuple(p.split(":")) for p in args.samplers.split(",")]
    work = os.path.abspath(args.work)
    comfy_out, weft_out = os.path.join(work, "comfyui"), os.path.join(work, "weft")
    os.makedirs(comfy_out, exist_ok=True)
    os.makedirs(weft_out, exist_ok=True)
    graph = api_graph(args.checkpoint, samplers, args.size, args.steps, args.seed, args.cfg)
    graph_file = os.path.join(work, "e2e_api.json")
    with open(graph_file, "w") as f:
        json.dump(graph, f, indent=1)

    timings = {}
    if not args.skip_comfyui:
        started = time.time()
        run_comfyui(os.path.abspath(args.comfyui), os.path.abspath(args.models), graph, comfy_out)
        timings["comfyui"] = time.time() - started

    yaml_file = os.path.join(work, "e2e.yaml")
    subprocess.run([args.weft, "import", graph_file, "-o", yaml_file], check=True)
    started = time.time()
    subprocess.run([args.weft, "run", yaml_file, "--device", "cpu", "--models", os.path.abspath(args.models),
                    "--output", weft_out], check=True)
    timings["weft"] = time.time() - started

    print(f"\n{args.size}x{args.size}, {args.steps} steps, seed {args.seed}, cfg {args.cfg}; "
          f"|diff| of the 8-bit images in 1/255 ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    print(f"| sampler | scheduler | max | mean | pixels off by > 2 |\n|---|---|---|---|---|")
    for sampler, scheduler in samplers:
        ours = np.asarray(Image.open(newest_png(weft_out, f"e2e-{sampler}-")).convert("RGB"), dtype=np.int16)
        theirs = np.asarray(Image.open(newest_png(comfy_out, f"e2e-{sampler}-")).convert("RGB"), dtype=np.int16)
        if ours.shape != theirs.shape:
            print(f"| {sampler} | {scheduler} | shapes differ: {ours.shape} vs {theirs.shape} | | |")
            continue
        diff = np.abs(ours - theirs)
        print(f"| {sampler} | {scheduler} | {diff.max()} | {diff.mean():.3f} | {(diff > 2).mean() * 100:.2f} % |")


if __name__ == "__main__":
    main()
