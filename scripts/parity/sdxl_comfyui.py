"""SDXL end to end against ComfyUI itself: the same API-format workflow run by ComfyUI (in this
process, its own nodes) and by weft (`weft import` then `weft run`), on reduced-width
SDXL-architecture single files, and the PNGs compared (max and mean |diff| / 255).

Needs (nothing of it is committed or vendored):
  - a ComfyUI checkout (tested at 618b803d) passed with --comfyui DIR, and what it imports
    (torch, torchsde, einops, scipy, transformers, tokenizers, safetensors, aiohttp, av, psutil,
    pyyaml, pydantic, alembic, SQLAlchemy, torchvision, ...) installed for example with
    `pip install --target /tmp/comfy-lib ...` and put on PYTHONPATH;
  - diffusers + transformers for writing the random checkpoints (scripts/parity/sdxl.py's
    converters are reused: diffusers/transformers names -> the SDXL single-file layout);
  - a built `target/release/weft` and set-up's models/converted/clip vocabulary.

  PYTHONPATH=/tmp/comfy-lib .venv/bin/python scripts/parity/sdxl_comfyui.py \
      --comfyui /tmp/ComfyUI --work /tmp/sdxl-comfy-work [--full-size FILE] [--shapes]

ComfyUI tells SDXL from the exact shapes of SDXL base / refiner (model_channels 320, context
2048, ...) and builds its text towers from fixed JSON configs, so for the reduced widths this
script registers, at run time, a subclass of ComfyUI's `supported_models.SDXL` (and of
`SDXLRefiner`) whose `unet_config` matches the small files and whose text model is ComfyUI's
own `SDXLClipModel` / `SDXLRefinerClipModel` code built with small tower configs. Everything
else is ComfyUI's: its tokenizer (75-token chunks, `(word:1.2)` weights, bigG padded with 0),
CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner, encode_adm size/crop/aesthetic ids, KSampler /
KSamplerAdvanced, the schedules, the noise, VAEDecode (ComfyUI's SD VAE is full size only, so
the files carry a full-size SDXL VAE with random weights).

weft needs nothing special for the reduced widths: a single file's SDXL UNet config is read
from its shapes (nodes/src/weights/checkpoint.rs, `sdxl_unet_config_from_shapes`) and the text
towers' configs from theirs.

--shapes also writes test-support/data/tiny_sdxl_ldm_shapes.json and
tiny_sdxl_refiner_ldm_shapes.json (names and shapes of the two small files), which the
`weft run` two-stage test (tests/sdxl_two_stage.rs) fills with pseudo-random values at test time.

--conditioning compares the conditioning itself, tensor by tensor: ComfyUI's CLIPTextEncodeSDXL
output (CLIP-L states, bigG states, bigG pooled) for a long weighted prompt (text_g over 75
tokens, a shorter text_l: window padding of the shorter side) on the small base, against weft's
(examples/sdxl_conditioning.rs, the towers loaded as LoadCheckpoint's `auto` loads them on the
CPU); control: the same without the `(word:1.2)` weights, which moves ComfyUI's own tensors.

--full-size FILE runs the 128x128 4-step euler case on a full-size random SDXL base file
(examples/write_sdxl_checkpoint.rs), ComfyUI first then weft, one after the other, with peak
RSS, load time and s/step of each (ComfyUI's with stock SDXL detection: no registration).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# The small base: UNet 64/128/256 channels (heads 64 wide, as SDXL's), transformer depth
# [0, 1, 2] with 2 in the middle block; CLIP-L 64 wide x 3 layers; bigG 128 wide x 3 layers,
# projection 128; both towers with the real 49408-token vocabulary and 77 positions.
BASE_UNET = dict(
    block_out_channels=(64, 128, 256),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(1, 2, 4),
    cross=[False, True, True],
)
# The small refiner: 64/128/256/256, attention in levels 1-2 (depth 1), 1 in the middle
# block; bigG only (128 wide).
REFINER_UNET = dict(
    block_out_channels=(64, 128, 256, 256),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 1, 1),
    attention_head_dim=(1, 2, 4, 4),
    cross=[False, True, True, False],
)
CLIP_L = dict(hidden_size=64, layers=3, act="quick_gelu")
CLIP_G = dict(hidden_size=128, layers=3, act="gelu", projection_dim=128)
TIME_IDS = 256


def clip_json(spec, projection):
    """A transformers CLIPTextConfig dict, as ComfyUI's clip_config_*.json files are."""
    hidden = spec["hidden_size"]
    cfg = dict(
        architectures=["CLIPTextModel"], attention_dropout=0.0, bos_token_id=0, dropout=0.0,
        eos_token_id=49407, hidden_act=spec["act"], hidden_size=hidden, initializer_factor=1.0,
        initializer_range=0.02, intermediate_size=4 * hidden, layer_norm_eps=1e-5,
        max_position_embeddings=77, model_type="clip_text_model",
        # weft reads a single file's heads as width / 64 (true of CLIP-L and bigG).
        num_attention_heads=max(hidden // 64, 1), num_hidden_layers=spec["layers"],
        pad_token_id=1, vocab_size=49408,
    )
    cfg["projection_dim"] = spec.get("projection_dim", hidden) if projection else hidden
    return cfg


def write_checkpoints(work):
    """Writes small_sdxl.safetensors and small_sdxl_refiner.safetensors (fp16, random weights
    with diffusers'/transformers' own initialisation) in the SDXL single-file layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sys.path.insert(0, HERE)
    from sdxl import clip_g_to_open_clip, sdxl_unet_to_ldm  # noqa: E402
    from unet_vae import CLIP_PREFIX, half_state_dict, round_to_fp16, vae_to_ldm  # noqa: E402

    torch.manual_seed(19)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
        sample_size=1024, scaling_factor=0.13025,
    ).eval()
    vae_ldm = vae_to_ldm(half_state_dict(round_to_fp16(vae)), 4)

    def g_tower(prefix):
        g = round_to_fp16(CLIPTextModelWithProjection(CLIPTextConfig(**clip_json(CLIP_G, True))).eval())
        sd = {(k if k.startswith(CLIP_PREFIX) or k.startswith("text_projection") else CLIP_PREFIX + k): v
              for k, v in half_state_dict(g).items()}
        out = clip_g_to_open_clip(sd, CLIP_G["layers"])
        return {prefix + k[len("conditioner.embedders.1.model."):]: v for k, v in out.items()}

    def unet(spec, context, adm):
        u = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=spec["block_out_channels"], down_block_types=spec["down_block_types"],
            up_block_types=spec["up_block_types"],
            transformer_layers_per_block=spec["transformer_layers_per_block"],
            attention_head_dim=spec["attention_head_dim"], norm_num_groups=32,
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=TIME_IDS, cross_attention_dim=context,
            projection_class_embeddings_input_dim=adm,
        ).eval()
        return sdxl_unet_to_ldm(half_state_dict(round_to_fp16(u)), 2, spec["cross"])

    base = {}
    base.update(unet(BASE_UNET, CLIP_L["hidden_size"] + CLIP_G["hidden_size"],
                     CLIP_G["projection_dim"] + 6 * TIME_IDS))
    base.update(vae_ldm)
    clip_l = round_to_fp16(CLIPTextModel(CLIPTextConfig(**clip_json(CLIP_L, False))).eval())
    for k, v in half_state_dict(clip_l, CLIP_PREFIX).items():
        base["conditioner.embedders.0.transformer." + k] = v
    base.update(g_tower("conditioner.embedders.1.model."))

    refiner = {}
    refiner.update(unet(REFINER_UNET, CLIP_G["hidden_size"], CLIP_G["projection_dim"] + 5 * TIME_IDS))
    refiner.update(vae_ldm)
    refiner.update(g_tower("conditioner.embedders.0.model."))

    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    files = {}
    for name, sd in [("small_sdxl.safetensors", base), ("small_sdxl_refiner.safetensors", refiner)]:
        path = os.path.join(work, "checkpoints", name)
        save_file({k: t.contiguous() for k, t in sd.items()}, path)
        files[name] = {k: list(t.shape) for k, t in sorted(sd.items())}
    return files


def comfy_unet_config(spec, context, adm):
    """ComfyUI's detected unet_config keys for a small file (transformer_depth per input block)."""
    depth = []
    for d, cross in zip(spec["transformer_layers_per_block"], spec["cross"]):
        depth += [d if cross else 0] * 2
    return {
        "model_channels": spec["block_out_channels"][0], "use_linear_in_transformer": True,
        "transformer_depth": depth, "context_dim": context, "adm_in_channels": adm,
        "use_temporal_attention": False,
    }


def register_small_models():
    """ComfyUI supported-model entries for the small files, ahead of its own list."""
    import comfy.sd1_clip as sd1_clip
    import comfy.sdxl_clip as sdxl_clip
    import comfy.supported_models as sm
    import comfy.supported_models_base as smb

    l_cfg, g_cfg = clip_json(CLIP_L, False), clip_json(CLIP_G, True)

    def small_g(device="cpu", dtype=None, model_options={}):
        # SDXLClipG's arguments, with the small config.
        return sd1_clip.SDClipModel(
            device=device, layer="hidden", layer_idx=-2, textmodel_json_config=g_cfg, dtype=dtype,
            special_tokens={"start": 49406, "end": 49407, "pad": 0}, layer_norm_hidden_state=False,
            return_projected_pooled=True, model_options={**model_options, "model_name": "clip_g"})

    class SmallSDXLClipModel(sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            torch.nn.Module.__init__(self)
            self.clip_l = sd1_clip.SDClipModel(
                layer="hidden", layer_idx=-2, device=device, dtype=dtype, textmodel_json_config=l_cfg,
                layer_norm_hidden_state=False, model_options={**model_options, "model_name": "clip_l"})
            self.clip_g = small_g(device=device, dtype=dtype, model_options=model_options)
            self.dtypes = set([dtype])

    class SmallRefinerClipModel(sdxl_clip.SDXLRefinerClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            sd1_clip.SD1ClipModel.__init__(self, device=device, dtype=dtype, clip_name="g",
                                           clip_model=small_g, model_options=model_options)

    class SmallSDXL(sm.SDXL):
        unet_config = comfy_unet_config(BASE_UNET, CLIP_L["hidden_size"] + CLIP_G["hidden_size"],
                                        CLIP_G["projection_dim"] + 6 * TIME_IDS)

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(sdxl_clip.SDXLTokenizer, SmallSDXLClipModel)

    class SmallSDXLRefiner(sm.SDXLRefiner):
        unet_config = comfy_unet_config(REFINER_UNET, CLIP_G["hidden_size"], CLIP_G["projection_dim"] + 5 * TIME_IDS)

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(sdxl_clip.SDXLTokenizer, SmallRefinerClipModel)

    sm.models.insert(0, SmallSDXLRefiner)
    sm.models.insert(0, SmallSDXL)


def comfy_setup(comfyui, work):
    sys.path.insert(0, comfyui)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    folder_paths.add_model_folder_path("checkpoints", os.path.join(work, "checkpoints"), is_default=True)
    import nodes
    import asyncio
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return nodes


def comfy_run(nodes, prompt, timings):
    """Evaluates an API-format prompt with ComfyUI's node classes (what its executor does for a
    graph without lists or caching); returns the images of its SaveImage nodes as float
    HxWx3 arrays in 0..255 (before SaveImage's conversion to 8 bits)."""
    values, images = {}, []

    def value(node_id):
        if node_id in values:
            return values[node_id]
        node = prompt[node_id]
        cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        kwargs = {}
        for k, v in node["inputs"].items():
            kwargs[k] = value(v[0])[v[1]] if isinstance(v, list) else v
        if node["class_type"] == "SaveImage":
            for img in kwargs["images"]:
                images.append(255.0 * img.float().cpu().numpy())
            values[node_id] = ()
            return ()
        obj = cls()
        fn = getattr(obj, cls.FUNCTION) if hasattr(cls, "FUNCTION") else None
        started = time.time()
        if fn is None:  # a v3 node
            out = cls.execute(**kwargs)
            out = out.result if hasattr(out, "result") else out
        else:
            out = fn(**kwargs)
        if isinstance(out, dict):
            out = out["result"]
        timings[f'{node_id} {node["class_type"]}'] = time.time() - started
        values[node_id] = out
        return out

    # ComfyUI's executor runs every node under inference mode.
    with torch.inference_mode():
        for node_id, node in prompt.items():
            if node["class_type"] == "SaveImage":
                value(node_id)
    return images


def api_prompt(case):
    """The API JSON of one comparison case."""
    base = case.get("checkpoint", "small_sdxl.safetensors")
    size = case.get("size", 128)
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": base}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": case.get("negative", "blurry, low quality"), "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": case["name"], "images": ["8", 0]}},
    }
    if case.get("sdxl_encode"):
        p["6"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["4", 1], "text_g": case["prompt"], "text_l": case["prompt"], **case["sdxl_encode"]}}
    else:
        p["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": case["prompt"], "clip": ["4", 1]}}
    steps, sampler, scheduler = case.get("steps", 6), case.get("sampler", "euler"), case.get("scheduler", "normal")
    if not case.get("refiner_from"):
        p["3"] = {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": steps, "cfg": 5.0, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
        return p
    k = case["refiner_from"]
    p["10"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 42, "steps": steps, "cfg": 5.0, "sampler_name": sampler,
        "scheduler": scheduler, "start_at_step": 0, "end_at_step": k, "return_with_leftover_noise": "enable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    p["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "small_sdxl_refiner.safetensors"}}
    p["12"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 6.0, "width": size, "height": size, "text": case["prompt"], "clip": ["11", 1]}}
    p["13"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 2.5, "width": size, "height": size, "text": case.get("negative", "blurry, low quality"), "clip": ["11", 1]}}
    p["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "disable", "noise_seed": 42, "steps": steps, "cfg": 5.0, "sampler_name": sampler,
        "scheduler": scheduler, "start_at_step": k, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["11", 0], "positive": ["12", 0], "negative": ["13", 0], "latent_image": ["10", 0]}}
    p["8"]["inputs"]["vae"] = ["11", 2]
    return p


LONG = ("a (lighthouse:1.2) on a rocky island at dusk, waves crashing against the rocks, seagulls "
        "circling overhead, warm light from the lantern room, dramatic clouds, oil painting in the "
        "style of the old masters, highly detailed brushwork, golden hour, long shadows, a small "
        "fishing boat returning to the harbour, mist over the water, cinematic composition")

SDXL_ENCODE = {"width": 1024, "height": 768, "crop_w": 64, "crop_h": 32, "target_width": 896,
               "target_height": 1152}
# Each case's "control" is a small change ComfyUI is also run with: how far that moves
# ComfyUI's own image shows that the compared part matters to the image (the random VAE must
# not hide it).
CASES = [
    {"name": "txt2img_sdxl_encode", "prompt": "a red cube on a wooden table", "sdxl_encode": SDXL_ENCODE,
     "control": {"sdxl_encode": {**SDXL_ENCODE, "crop_w": 0, "crop_h": 0}}},
    {"name": "long_weighted_prompt", "prompt": LONG,
     "control": {"prompt": LONG.replace("(lighthouse:1.2)", "lighthouse")}},
    {"name": "dpmpp_2m_karras", "prompt": "a red cube on a wooden table", "sampler": "dpmpp_2m",
     "scheduler": "karras", "control": {"scheduler": "normal"}},
    {"name": "two_stage_refiner", "prompt": "a red cube on a wooden table", "steps": 8, "refiner_from": 6,
     "control": {"refiner_from": 7}},
]


def weft_run(api_json, work, name, threads):
    """`weft import` then `weft run`; returns the PNG it wrote, seconds and peak RSS (KiB)."""
    weft = os.path.join(REPO, "target", "release", "weft")
    yaml_path = os.path.join(work, name + ".yaml")
    subprocess.run([weft, "import", api_json, "-o", yaml_path], check=True)
    out = os.path.join(work, "weft-out", name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    cmd = ["/usr/bin/time", "-v", weft, "run", yaml_path, "--models", work, "--models",
           os.path.join(REPO, "models"), "--device", "cpu", "--threads", str(threads), "--output", out]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    started = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.time() - started
    if r.returncode != 0:
        raise SystemExit(f"weft run {yaml_path} failed:\n{r.stdout}\n{r.stderr}")
    rss = next((int(line.split()[-1]) for line in r.stderr.splitlines() if "Maximum resident" in line), 0)
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    return os.path.join(out, pngs[-1]), took, rss, r.stdout + r.stderr


def saved(image):
    """ComfyUI SaveImage's 8 bits: clip, then truncate (weft rounds)."""
    return np.clip(image, 0, 255).astype(np.uint8)


def rounded(image):
    return np.round(np.clip(image, 0, 255)).astype(np.uint8)


def diff(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--work", default="/tmp/sdxl-comfy-work")
    ap.add_argument("--shapes", action="store_true")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--full-size", default="", help="a full-size SDXL base file: run that case only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conditioning", action="store_true",
                    help="compare CLIPTextEncodeSDXL's tensors with weft's (max abs difference)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(args.threads)

    if args.full_size:
        return full_size(args, work)
    if args.conditioning:
        return conditioning(args, work)

    if not os.path.exists(os.path.join(work, "checkpoints", "small_sdxl_refiner.safetensors")) or args.shapes:
        shapes = write_checkpoints(work)
        if args.shapes:
            for name, out in [("small_sdxl.safetensors", "tiny_sdxl_ldm_shapes.json"),
                              ("small_sdxl_refiner.safetensors", "tiny_sdxl_refiner_ldm_shapes.json")]:
                with open(os.path.join(REPO, "test-support", "data", out), "w") as f:
                    json.dump(shapes[name], f, indent=0, sort_keys=True)

    nodes = comfy_setup(args.comfyui, work)
    register_small_models()
    wanted = [c for c in CASES if not args.cases or c["name"] in args.cases.split(",")]
    rows = []
    for case in wanted:
        prompt = api_prompt(case)
        api_json = os.path.join(work, case["name"] + ".api.json")
        with open(api_json, "w") as f:
            json.dump(prompt, f, indent=1)
        timings = {}
        started = time.time()
        comfy_images = comfy_run(nodes, prompt, timings)
        comfy_s = time.time() - started
        comfy = comfy_images[0]
        Image.fromarray(saved(comfy)).save(os.path.join(work, case["name"] + ".comfyui.png"))
        png, weft_s, _, _ = weft_run(api_json, work, case["name"], args.threads)
        weft_image = np.asarray(Image.open(png).convert("RGB"))
        if weft_image.shape != comfy.shape:
            raise SystemExit(f"{case['name']}: weft {weft_image.shape} vs ComfyUI {comfy.shape}")
        mx, mean = diff(weft_image, saved(comfy))
        rmx, rmean = diff(weft_image, rounded(comfy))
        control = comfy_run(nodes, api_prompt({**case, **case["control"]}), {})[0]
        cmx, cmean = diff(saved(control), saved(comfy))
        rows.append((case["name"], mx, mean, rmx, rmean, json.dumps(case["control"])[:70], cmx, cmean, comfy_s, weft_s))
        print(f"{case['name']}: max |diff| {mx}/255, mean {mean:.4f}/255 (vs ComfyUI rounded: {rmx}, "
              f"{rmean:.4f}); control {case['control']}: ComfyUI moves max {cmx}, mean {cmean:.2f}; "
              f"ComfyUI {comfy_s:.1f} s, weft {weft_s:.1f} s", flush=True)
    print("\n| case | weft vs ComfyUI PNG: max /255 | mean /255 | vs ComfyUI rounded: max | mean | control (ComfyUI vs ComfyUI) | control max /255 | control mean /255 | ComfyUI s | weft s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]} | {r[4]:.4f} | `{r[5]}` | {r[6]} | {r[7]:.2f} | {r[8]:.1f} | {r[9]:.1f} |")
    if any(r[1] > 2 for r in rows):
        sys.exit(1)


def comfy_node(nodes, class_type, **kwargs):
    """One ComfyUI node's outputs (a v1 or a v3 node)."""
    cls = nodes.NODE_CLASS_MAPPINGS[class_type]
    if hasattr(cls, "FUNCTION"):
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
    else:
        out = cls.execute(**kwargs)
        out = out.result if hasattr(out, "result") else out
    return out["result"] if isinstance(out, dict) else out


# bigG's text over two 75-token windows, with weights in both; a short CLIP-L text beside it
# (ComfyUI pads the shorter side with empty windows).
# No `[text]`: weft reads it as A1111's de-emphasis (weight / 1.1), ComfyUI as literal brackets.
TEXT_G = LONG + ", a second (storm:0.8) rolling in from the west, (rain:1.1) on the glass, " + LONG.replace("(lighthouse:1.2)", "((lighthouse))")
TEXT_L = "a (red:1.3) lighthouse, ((oil painting))"


def unweighted(text):
    """The text with its weighting syntax taken out (the control)."""
    import re
    return re.sub(r"\(([^():]+):[\d.]+\)", r"\1", text).replace("((", "").replace("))", "")


def conditioning(args, work):
    """CLIPTextEncodeSDXL's tensors, ComfyUI's against weft's, on the small base."""
    from safetensors.torch import load_file
    if not os.path.exists(os.path.join(work, "checkpoints", "small_sdxl.safetensors")):
        write_checkpoints(work)
    nodes = comfy_setup(args.comfyui, work)
    register_small_models()
    width_l = CLIP_L["hidden_size"]
    with torch.inference_mode():
        clip = comfy_node(nodes, "CheckpointLoaderSimple", ckpt_name="small_sdxl.safetensors")[1]

        def comfy_encode(text_g, text_l):
            cond = comfy_node(nodes, "CLIPTextEncodeSDXL", clip=clip, text_g=text_g, text_l=text_l,
                              **SDXL_ENCODE)[0]
            return cond[0][0].float().clone(), cond[0][1]["pooled_output"].float().clone()
        comfy_cond, comfy_pooled = comfy_encode(TEXT_G, TEXT_L)
        plain_cond, plain_pooled = comfy_encode(unweighted(TEXT_G), unweighted(TEXT_L))
    out = os.path.join(work, "weft_conditioning.safetensors")
    example = os.path.join(REPO, "target", "release", "examples", "sdxl_conditioning")
    vocab = os.path.join(REPO, "models", "converted", "clip", "bpe_simple_vocab_16e6.txt.gz")
    subprocess.run([example, os.path.join(work, "checkpoints", "small_sdxl.safetensors"), vocab, out, TEXT_G, TEXT_L],
                   check=True)
    weft = load_file(out)
    weft_cond, weft_pooled = weft["context"], weft["pooled"]
    if weft_cond.shape != comfy_cond.shape or weft_pooled.shape != comfy_pooled.shape:
        raise SystemExit(f"shapes: weft {tuple(weft_cond.shape)} {tuple(weft_pooled.shape)}, "
                         f"ComfyUI {tuple(comfy_cond.shape)} {tuple(comfy_pooled.shape)}")
    parts = [
        ("CLIP-L states", weft_cond[..., :width_l], comfy_cond[..., :width_l], plain_cond[..., :width_l]),
        ("bigG states", weft_cond[..., width_l:], comfy_cond[..., width_l:], plain_cond[..., width_l:]),
        ("bigG pooled (projected)", weft_pooled, comfy_pooled, plain_pooled),
    ]
    print(f"CLIPTextEncodeSDXL on the small base, text_g {len(TEXT_G)} chars with (word:w) weights, "
          f"text_l {TEXT_L!r}; context {tuple(comfy_cond.shape)} (77 per window); control: "
          f"{unweighted(TEXT_L)!r} and text_g likewise (pooled comes before weighting: it moves only where the windows break otherwise)")
    print("| tensor | max abs weft - ComfyUI | ComfyUI's max abs value | control: unweighted moves ComfyUI's by |")
    print("|---|---|---|---|")
    worst = 0.0
    for name, w, c, plain in parts:
        d = (w - c).abs().max().item()
        worst = max(worst, d)
        n = min(plain.shape[1], c.shape[1]) if c.dim() == 3 else c.shape[0]  # the control may have fewer windows
        moved = (plain[:, :n] - c[:, :n]).abs().max().item()
        print(f"| {name} | {d:.3g} | {c.abs().max().item():.3g} | {moved:.3g} |")
    if worst > 1e-4:
        sys.exit(1)


def full_size(args, work):
    """The full-size random SDXL base, 128x128, 4 euler steps: ComfyUI then weft (one at a time)."""
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    link = os.path.join(work, "checkpoints", "full_sdxl.safetensors")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(args.full_size), link)
    case = {"name": "full_size_euler", "checkpoint": "full_sdxl.safetensors", "prompt": "a red cube on a wooden table", "steps": 4}
    prompt = api_prompt(case)
    api_json = os.path.join(work, "full_size.api.json")
    with open(api_json, "w") as f:
        json.dump(prompt, f, indent=1)
    if os.environ.get("SDXL_PARITY_SIDE", "comfyui") == "comfyui":
        nodes = comfy_setup(args.comfyui, work)
        timings = {}
        images = comfy_run(nodes, prompt, timings)
        Image.fromarray(saved(images[0])).save(os.path.join(work, "full_size.comfyui.png"))
        np.save(os.path.join(work, "full_size.comfyui.npy"), images[0])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"comfyui_timings_s": timings, "comfyui_peak_rss_kib": rss}, indent=1))
        return
    png, took, rss, log = weft_run(api_json, work, "full_size", args.threads)
    print(log[-4000:])
    a = np.asarray(Image.open(png).convert("RGB"))
    b = np.load(os.path.join(work, "full_size.comfyui.npy"))
    mx, mean = diff(a, saved(b))
    rmx, rmean = diff(a, rounded(b))
    print(json.dumps({"weft_s": took, "weft_peak_rss_kib": rss, "max_abs_diff_255": mx, "mean_abs_diff_255": mean,
                      "vs_rounded_max": rmx, "vs_rounded_mean": rmean, "comfyui_image_std": float(b.std())}))


if __name__ == "__main__":
    main()
