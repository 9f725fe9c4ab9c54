"""LoRA and inpainting end to end against ComfyUI itself: the same API-format workflow run by
ComfyUI (its own nodes, in a child process) and by weft (`weft import` then `weft run`), on an
SD1.5-shaped single file, and the PNGs compared (max and mean |diff| / 255).

Needs (nothing of it is committed or vendored):
  - a ComfyUI checkout (tested at 618b803d) passed with --comfyui DIR, and what it imports
    (torch, torchsde, einops, scipy, transformers, tokenizers, safetensors, aiohttp, av, psutil,
    pyyaml, pydantic, alembic, SQLAlchemy, torchvision, ...) installed for example with
    `pip install --no-deps --target /tmp/comfy-lib ...` and put on PYTHONPATH;
  - an SD1.5-shaped single file passed with --checkpoint (for example the one
    `target/release/examples/write_sd15_checkpoint FILE` writes): only its names and shapes are
    used. Its values are replaced (written to WORK/checkpoints/sd15_init.safetensors) by a
    fan-in-scaled random initialisation, because the writer's tiny constant-magnitude values make
    every image flat grey, which would hide any difference;
  - a kohya LoRA for that layout passed with --lora (for example from
    scripts/write_sd15_loras.py): its names and shapes are used to write two random LoRAs strong
    enough to move the image (WORK/loras/a.safetensors, b.safetensors);
  - a built `target/release/weft` and set-up's models/converted/clip vocabulary.

  PYTHONPATH=/tmp/comfy-lib .venv/bin/python scripts/parity/lora_inpaint_comfyui.py \
      --comfyui /tmp/ComfyUI --checkpoint /tmp/sd15.safetensors \
      --lora /tmp/loras/random-r16-0.safetensors --work /tmp/lora-inpaint-comfy [--cases a,b]

Cases (--cases picks some; the default is all): one LoRA on txt2img at 1/1; at 0.5/0.25 (also at
128x128 and 256x256); two chained LoRAs; SetLatentNoiseMask inpainting with the mask from
LoadImage's alpha (+ ImageCompositeMasked); VAEEncodeForInpaint with a LoadImageMask mask grown by
6; outpainting (ImagePadForOutpaint's feathered mask) with VAEEncode + SetLatentNoiseMask. Then on
a second file, the same random draw with a 9-channel first conv (SD1.5-inpainting's layout, written
to WORK/checkpoints/sd15_inpainting_init.safetensors): VAEEncodeForInpaint; InpaintModelConditioning
with and without its noise mask; outpainting with VAEEncodeForInpaint. Each case has a "control":
ComfyUI run again with the LoRA strength or the mask changed, to show the compared part moves
ComfyUI's own image. ComfyUI's SaveImage truncates to 8 bits and weft rounds, so weft is also
compared against ComfyUI's float image rounded.

ComfyUI runs first, in a child process (--side comfyui) that saves its float images and exits,
then weft, so only one model is in memory at a time.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SIZE = 64
STEPS = 4
HOLE = (20, 44, 16, 48)  # rows, then columns, of the inpainted square (alpha 0)
OTHER_HOLE = (32, 56, 8, 40)


CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def write_checkpoint(shapes_from, out, in_channels=None):
    """Every tensor of `shapes_from` re-drawn: norm scales (the only 1-D weights) near 1, biases
    small, matrices and kernels N(0, 1/fan_in). With `in_channels` the UNet's first conv takes
    that many channels: 9 makes SD1.5-inpainting's layout (latent, mask, masked-image latent),
    which ComfyUI and weft both detect from that shape."""
    gen = torch.Generator().manual_seed(20)
    tensors = {}
    with safe_open(shapes_from, "pt") as f:
        for name in f.keys():
            shape = f.get_slice(name).get_shape()
            if name == CONV_IN and in_channels is not None:
                shape = [shape[0], in_channels, *shape[2:]]
            if len(shape) == 1 and name.endswith(".weight"):
                t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            elif len(shape) == 1:
                t = 0.02 * torch.randn(shape, generator=gen)
            elif len(shape) == 0:
                t = torch.zeros(shape)
            else:
                fan_in = int(np.prod(shape[1:]))
                t = torch.randn(shape, generator=gen) / fan_in ** 0.5
            tensors[name] = t.half()
    save_file(tensors, out)


def write_loras(shapes_from, out_dir):
    """Two kohya LoRAs with the layers of `shapes_from` and random factors large enough that the
    update is about a tenth of a weight."""
    os.makedirs(out_dir, exist_ok=True)
    with safe_open(shapes_from, "pt") as f:
        names = list(f.keys())
        shapes = {n: f.get_slice(n).get_shape() for n in names}
    for index, file in enumerate(["a.safetensors", "b.safetensors"]):
        gen = torch.Generator().manual_seed(100 + index)
        tensors = {}
        for n in names:
            # kohya names SD1 text-encoder layers after transformers' CLIPTextModel
            # (lora_te_text_model_encoder_layers_N_...); ComfyUI skips any other te name.
            key = n.replace("lora_te_encoder_", "lora_te_text_model_encoder_")
            if n.endswith(".alpha"):
                tensors[key] = torch.tensor(8.0).half()  # alpha / rank = 0.5 for rank 16
            else:
                tensors[key] = (0.04 * torch.randn(shapes[n], generator=gen)).half()
        save_file(tensors, os.path.join(out_dir, file))


def write_images(input_dir):
    """picture.png (RGBA, alpha 0 in HOLE), picture_other.png (alpha 0 in OTHER_HOLE), and the
    same RGB with the mask only in alpha: hole_mask.png / other_mask.png."""
    os.makedirs(input_dir, exist_ok=True)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rgb = np.stack([x / SIZE * 200 + 30, y / SIZE * 180 + 40, 120 + 60 * np.sin(x / 5) * np.cos(y / 7)], -1)
    circle = (x - 40) ** 2 + (y - 25) ** 2 < 12 ** 2
    rgb[circle] = [230, 40, 40]
    rgb[45:60, 5:30] = [20, 40, 200]
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    for name, mask_name, (r0, r1, c0, c1) in [("picture.png", "hole_mask.png", HOLE),
                                              ("picture_other.png", "other_mask.png", OTHER_HOLE)]:
        alpha = np.full((SIZE, SIZE), 255, np.uint8)
        alpha[r0:r1, c0:c1] = 0
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(os.path.join(input_dir, name))
        Image.fromarray(np.dstack([np.zeros_like(rgb), alpha]), "RGBA").save(os.path.join(input_dir, mask_name))
    Image.fromarray(rgb, "RGB").save(os.path.join(input_dir, "picture_opaque.png"))


PLAIN = "sd15_init.safetensors"
INPAINTING = "sd15_inpainting_init.safetensors"  # the 9-channel UNet


def txt2img(loras, size=SIZE):
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": PLAIN}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
    }
    model, clip = ["4", 0], ["4", 1]
    for i, (name, sm, sc) in enumerate(loras):
        node = str(20 + i)
        p[node] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": name, "strength_model": sm, "strength_clip": sc}}
        model, clip = [node, 0], [node, 1]
    p["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube on a wooden table", "clip": clip}}
    p["7"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}}
    p["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": STEPS, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": model, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    p["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["9"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "image", "images": ["8", 0]}}
    return p


def inpaint(picture, mask_file=None, grow=None, ckpt=PLAIN):
    """SetLatentNoiseMask with LoadImage's alpha (mask_file None), or VAEEncodeForInpaint with a
    LoadImageMask alpha mask grown by `grow`."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "1": {"class_type": "LoadImage", "inputs": {"image": picture}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a green bird on a branch", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["4", 1]}},
    }
    if mask_file is None:
        mask = ["1", 1]
        p["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["4", 2]}}
        p["11"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["10", 0], "mask": mask}}
        denoise, sampler = 0.85, "dpmpp_2m"
    else:
        p["2"] = {"class_type": "LoadImageMask", "inputs": {"image": mask_file, "channel": "alpha"}}
        mask = ["2", 0]
        p["11"] = {"class_type": "VAEEncodeForInpaint", "inputs": {
            "pixels": ["1", 0], "vae": ["4", 2], "mask": mask, "grow_mask_by": grow}}
        denoise, sampler = 1.0, "euler"
    return sample_and_save(p, ["6", 0], ["7", 0], ["11", 0], ["1", 0], mask, sampler, denoise)


def sample_and_save(p, positive, negative, latent, destination, mask, sampler, denoise, seed=7):
    """KSampler, VAEDecode, ImageCompositeMasked of the result over `destination`, and a
    SaveImage of each (prefixes "decoded" and "composite")."""
    p["3"] = {"class_type": "KSampler", "inputs": {
        "seed": seed, "steps": STEPS, "cfg": 6.0, "sampler_name": sampler, "scheduler": "karras",
        "denoise": denoise, "model": ["4", 0], "positive": positive, "negative": negative,
        "latent_image": latent}}
    p["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["12"] = {"class_type": "ImageCompositeMasked", "inputs": {
        "destination": destination, "source": ["8", 0], "x": 0, "y": 0, "resize_source": False, "mask": mask}}
    p["9"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "decoded", "images": ["8", 0]}}
    p["13"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "composite", "images": ["12", 0]}}
    return p


def prompts(p, clip):
    p["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a green bird on a branch", "clip": clip}}
    p["7"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}}


def inpaint_model_conditioning(picture, noise_mask, denoise):
    """The 9-channel model through InpaintModelConditioning (mask from LoadImage's alpha): its
    conditionings carry the greyed image's latent and the mask, its latent the image's."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": INPAINTING}},
        "1": {"class_type": "LoadImage", "inputs": {"image": picture}},
    }
    prompts(p, ["4", 1])
    p["11"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["1", 0], "mask": ["1", 1],
        "noise_mask": noise_mask}}
    return sample_and_save(p, ["11", 0], ["11", 1], ["11", 2], ["1", 0], ["1", 1], "euler", denoise)


OUTPAINT = {"left": 16, "top": 0, "right": 8, "bottom": 16}


def outpaint(ckpt, feathering):
    """ImagePadForOutpaint (its feathered mask), then VAEEncodeForInpaint for the 9-channel model
    or VAEEncode + SetLatentNoiseMask for the plain one; the result composited over the padded
    picture with the pad mask."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "picture_opaque.png"}},
        "14": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["1", 0], **OUTPAINT,
                                                               "feathering": feathering}},
    }
    prompts(p, ["4", 1])
    if ckpt == INPAINTING:
        p["11"] = {"class_type": "VAEEncodeForInpaint", "inputs": {
            "pixels": ["14", 0], "vae": ["4", 2], "mask": ["14", 1], "grow_mask_by": 8}}
        sampler = "euler"
    else:
        p["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["14", 0], "vae": ["4", 2]}}
        p["11"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["10", 0], "mask": ["14", 1]}}
        sampler = "dpmpp_2m"
    return sample_and_save(p, ["6", 0], ["7", 0], ["11", 0], ["14", 0], ["14", 1], sampler, 1.0)


# name: (graph, control graph, what the control changes)
CASES = {
    "lora_1": (txt2img([("a.safetensors", 1.0, 1.0)]), txt2img([("a.safetensors", 0.5, 0.5)]),
               "LoRA strengths 1/1 -> 0.5/0.5"),
    "lora_2_chained": (txt2img([("a.safetensors", 0.8, 0.6), ("b.safetensors", 0.7, 1.0)]),
                       txt2img([("a.safetensors", 0.8, 0.6), ("b.safetensors", 0.0, 0.0)]),
                       "second LoRA's strengths -> 0"),
    "inpaint_noise_mask": (inpaint("picture.png"), inpaint("picture_other.png"),
                           "mask moved (LoadImage alpha of another file)"),
    "inpaint_vae_encode_for_inpaint": (inpaint("picture.png", "hole_mask.png", 6),
                                       inpaint("picture.png", "hole_mask.png", 0), "grow_mask_by 6 -> 0"),
    "lora_05_025": (txt2img([("a.safetensors", 0.5, 0.25)]), txt2img([("a.safetensors", 0.5, 0.5)]),
                    "strength_clip 0.25 -> 0.5"),
    "lora_05_025_128": (txt2img([("a.safetensors", 0.5, 0.25)], 128),
                        txt2img([("a.safetensors", 0.5, 0.5)], 128), "strength_clip 0.25 -> 0.5"),
    "lora_05_025_256": (txt2img([("a.safetensors", 0.5, 0.25)], 256),
                        txt2img([("a.safetensors", 0.5, 0.5)], 256), "strength_clip 0.25 -> 0.5"),
    "outpaint_noise_mask": (outpaint(PLAIN, 12), outpaint(PLAIN, 0), "feathering 12 -> 0"),
    # The 9-channel (SD1.5-inpainting-shaped) model.
    "inpaint9_vae_encode_for_inpaint": (inpaint("picture.png", "hole_mask.png", 6, INPAINTING),
                                        inpaint("picture.png", "other_mask.png", 6, INPAINTING),
                                        "mask moved (LoadImageMask of another file)"),
    "inpaint9_model_conditioning": (inpaint_model_conditioning("picture.png", True, 1.0),
                                    inpaint_model_conditioning("picture_other.png", True, 1.0),
                                    "mask moved (LoadImage alpha of another file)"),
    "inpaint9_model_conditioning_no_noise_mask": (inpaint_model_conditioning("picture.png", False, 0.8),
                                                  inpaint_model_conditioning("picture_other.png", False, 0.8),
                                                  "mask moved (only the model sees it)"),
    "outpaint9_vae_encode_for_inpaint": (outpaint(INPAINTING, 12), outpaint(INPAINTING, 0),
                                         "feathering 12 -> 0"),
}


def comfy_side(args, work, names):
    """Runs the cases and their controls through ComfyUI's nodes; saves float HxWx3 images in
    0..255 (before SaveImage's truncation) as WORK/CASE.PREFIX[.control].npy."""
    sys.path.insert(0, args.comfyui)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import folder_paths
    folder_paths.add_model_folder_path("checkpoints", os.path.join(work, "checkpoints"), is_default=True)
    folder_paths.add_model_folder_path("loras", os.path.join(work, "loras"), is_default=True)
    folder_paths.set_input_directory(os.path.join(work, "input"))
    import asyncio
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    torch.set_num_threads(args.threads)
    timings, loaded = {}, {}
    for name in names:
        graph, control, _ = CASES[name]
        for suffix, prompt in [("", graph), (".control", control)]:
            started = time.time()
            for prefix, image in comfy_run(nodes, prompt, loaded).items():
                np.save(os.path.join(work, f"{name}.{prefix}{suffix}.npy"), image)
            timings[name + suffix] = time.time() - started
            print(f"ComfyUI {name}{suffix}: {timings[name + suffix]:.1f} s", flush=True)
    timings_file = os.path.join(work, "comfyui_timings.json")
    if os.path.exists(timings_file):  # keep other cases' figures (runs of some --cases)
        with open(timings_file) as f:
            timings = {**json.load(f), **timings}
    with open(timings_file, "w") as f:
        json.dump(timings, f)


def comfy_run(nodes, prompt, loaded):
    """Evaluates an API-format prompt with ComfyUI's node classes (what its executor does for a
    graph without lists); returns {SaveImage prefix: float HxWx3 image in 0..255}. `loaded`
    keeps CheckpointLoaderSimple's outputs between prompts, as ComfyUI's executor cache does
    (LoraLoader clones the model, so the loaded one is never changed)."""
    values, images = {}, {}

    def value(node_id):
        if node_id in values:
            return values[node_id]
        node = prompt[node_id]
        cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        kwargs = {k: value(v[0])[v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        if node["class_type"] == "CheckpointLoaderSimple" and kwargs["ckpt_name"] in loaded:
            values[node_id] = loaded[kwargs["ckpt_name"]]
            return values[node_id]
        if node["class_type"] == "CheckpointLoaderSimple" and loaded:
            # One checkpoint in memory at a time (the box is shared): drop the other one.
            import gc
            import comfy.model_management
            loaded.clear()
            comfy.model_management.unload_all_models()
            gc.collect()
        if node["class_type"] == "SaveImage":
            images[kwargs["filename_prefix"]] = 255.0 * kwargs["images"][0].float().cpu().numpy()
            values[node_id] = ()
            return ()
        if hasattr(cls, "FUNCTION"):
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        else:  # a v3 node
            out = cls.execute(**kwargs)
            out = out.result if hasattr(out, "result") else out
        if isinstance(out, dict):
            out = out["result"]
        values[node_id] = out
        if node["class_type"] == "CheckpointLoaderSimple":
            loaded[kwargs["ckpt_name"]] = out
        return out

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        for node_id, node in prompt.items():
            if node["class_type"] == "SaveImage":
                value(node_id)
    return images


# Patched weights: LoRA files that name every layer ComfyUI's loader maps, in one format each,
# patched by ComfyUI's loader and by weft's (the lora_patched_weights example), compared key by key.
WEIGHT_FORMATS = ["kohya_ldm", "kohya_diffusers", "peft"]
WEIGHT_STRENGTHS = (0.5, 0.25)  # strength_model, strength_clip
RANK = 4


def lora_format(lora_key, model_key):
    """Which of WEIGHT_FORMATS a ComfyUI key-map entry belongs to (None: another format)."""
    if lora_key.startswith("lora_te_text_model_encoder_layers_"):
        return "kohya"  # the text-encoder half of both kohya formats
    if lora_key.startswith("text_encoder.text_model.encoder.layers."):
        return "peft"
    if lora_key.startswith("lora_unet_"):
        ldm = "lora_unet_" + model_key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        return "kohya_ldm" if lora_key == ldm else "kohya_diffusers"
    if lora_key.startswith("unet."):
        return "peft"
    return None


def checkpoint_name(comfy_key, file_keys):
    """ComfyUI's model key -> the single file's key."""
    if comfy_key.startswith("diffusion_model."):
        return "model." + comfy_key
    rest = comfy_key[len("clip_l.transformer."):]
    for name in ["cond_stage_model.transformer." + rest,
                 "cond_stage_model.transformer." + rest.replace("text_model.", "", 1)]:
        if name in file_keys:
            return name
    raise SystemExit(f"no checkpoint key for ComfyUI's {comfy_key}")


def comfy_weights_side(args, work):
    """In ComfyUI (text encoder in fp32, as weft loads it): the key map of the plain checkpoint,
    and for format --format a random LoRA on every >= 2-D weight the map reaches
    (WORK/loras/all_FORMAT.safetensors), patched at WEIGHT_STRENGTHS by load_lora_for_models;
    each patched tensor, computed by ComfyUI's own ModelPatcher.patch_weight_to_device one key at
    a time (the whole patched model would not fit beside the base on this box), is written under
    the file's name to WORK/weights_FORMAT/ in chunks."""
    fmt = args.format
    sys.path.insert(0, args.comfyui)
    sys.argv = [sys.argv[0], "--cpu", "--fp32-text-enc"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.lora
    import comfy.sd
    import comfy.utils
    torch.set_num_threads(args.threads)
    ckpt = os.path.join(work, "checkpoints", PLAIN)
    with safe_open(ckpt, "pt") as f:
        file_keys = set(f.keys())
    model, clip, _vae = comfy.sd.load_checkpoint_guess_config(ckpt)[:3]
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    shapes = {k: v.shape for k, v in list(model.model.state_dict().items())
              + list(clip.cond_stage_model.state_dict().items())}
    summary = {"key_map_entries": len(key_map), "other_formats": {}}
    for lora_key, model_key in key_map.items():
        if lora_format(lora_key, model_key) is None:
            head = lora_key.split(".")[0]
            kind = head.split("_")[0] + "_" if "_" in head else head + "."
            summary["other_formats"][kind] = summary["other_formats"].get(kind, 0) + 1
    gen = torch.Generator().manual_seed(300 + WEIGHT_FORMATS.index(fmt))
    lora, targets = {}, set()
    for lora_key, model_key in sorted(key_map.items()):
        kind = lora_format(lora_key, model_key)
        if not (kind == fmt or (kind == "kohya" and fmt.startswith("kohya"))):
            continue
        shape = shapes.get(model_key)
        if shape is None or len(shape) < 2:
            continue
        down = 0.05 * torch.randn([RANK, *shape[1:]], generator=gen)
        up = 0.05 * torch.randn([shape[0], RANK] + [1] * (len(shape) - 2), generator=gen)
        if fmt == "peft":
            lora[lora_key + ".lora_A.weight"], lora[lora_key + ".lora_B.weight"] = down, up
        else:
            lora[lora_key + ".lora_down.weight"], lora[lora_key + ".lora_up.weight"] = down, up
            lora[lora_key + ".alpha"] = torch.tensor(float(RANK) / 2)
        targets.add(model_key)
    file = os.path.join(work, "loras", f"all_{fmt}.safetensors")
    save_file({k: v.contiguous() for k, v in lora.items()}, file)
    new_model, new_clip = comfy.sd.load_lora_for_models(model, clip, comfy.utils.load_torch_file(file),
                                                        *WEIGHT_STRENGTHS)
    out_dir = os.path.join(work, f"weights_{fmt}")
    os.makedirs(out_dir, exist_ok=True)
    chunk, chunk_bytes, written = {}, 0, 0
    for patcher in [new_model, new_clip.patcher]:
        for key in sorted(patcher.patches):
            patcher.patch_weight_to_device(key, device_to=torch.device("cpu"))
            chunk[checkpoint_name(key, file_keys)] = comfy.utils.get_attr(patcher.model, key).detach().float().clone()
            # Put the loaded weight back (what unpatch_model does), so only one is patched at a time.
            comfy.utils.set_attr_param(patcher.model, key, patcher.backup.pop(key).weight)
            chunk_bytes += chunk[checkpoint_name(key, file_keys)].numel() * 4
            written += 1
            if chunk_bytes > 256 << 20:
                save_file(chunk, os.path.join(out_dir, f"chunk_{written:04d}.safetensors"))
                chunk, chunk_bytes = {}, 0
    if chunk:
        save_file(chunk, os.path.join(out_dir, f"chunk_{written:04d}.safetensors"))
    summary.update(lora_layers=len(targets), comfyui_patched=written)
    print(f"ComfyUI weights {fmt}: {summary}", flush=True)
    with open(os.path.join(work, f"comfyui_weights_{fmt}.json"), "w") as f:
        json.dump(summary, f)


def compare_weights(args, work, child):
    """Per format: ComfyUI's patched tensors (comfy_weights_side) against weft's (the
    lora_patched_weights example), then the large reference files deleted."""
    example = os.path.join(REPO, "target", "release", "examples", "lora_patched_weights")
    ckpt = os.path.join(work, "checkpoints", PLAIN)
    rows = []
    for fmt in WEIGHT_FORMATS:
        out_dir = os.path.join(work, f"weights_{fmt}")
        if not (args.reuse_comfyui and os.path.isdir(out_dir)):
            subprocess.run(child + ["--side", "comfyui-weights", "--format", fmt], check=True)
        with open(os.path.join(work, f"comfyui_weights_{fmt}.json")) as f:
            summary = json.load(f)
        lora = os.path.join(work, "loras", f"all_{fmt}.safetensors")
        # Examples have no rpath to libtorch: scripts/env.sh puts it on LD_LIBRARY_PATH.
        cmd = f'source "{REPO}/scripts/env.sh" && exec "$@"'
        r = subprocess.run(["bash", "-c", cmd, "bash", example, ckpt, "--compare", out_dir, lora,
                            *map(str, WEIGHT_STRENGTHS)], capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        if r.returncode != 0:
            raise SystemExit(f"lora_patched_weights {fmt} failed:\n{r.stdout}\n{r.stderr}")
        for f in os.listdir(out_dir):  # 3.6 GB per format: not kept
            os.remove(os.path.join(out_dir, f))
        os.rmdir(out_dir)
        result = json.loads(r.stdout.strip().splitlines()[-1])
        unmatched = [line for line in r.stdout.splitlines() if "matches no layer" in line]
        rows.append((fmt, summary["lora_layers"], summary["comfyui_patched"], result["compared"] + len(result["only_weft"]),
                     len(result["only_reference"]), len(result["only_weft"]), len(unmatched),
                     result["max_abs_diff"], result["at"], len(result["unmoved"])))
        print(rows[-1], flush=True)
        for key in result["only_reference"][:10]:
            print(f"  {fmt}: ComfyUI patches {key}, weft does not")
        for key in result["only_weft"][:10]:
            print(f"  {fmt}: weft patches {key}, ComfyUI does not")
        for line in unmatched[:10]:
            print(f"  {line}")
    print(f"\nPatched weights at strength_model/strength_clip {WEIGHT_STRENGTHS[0]}/{WEIGHT_STRENGTHS[1]}, "
          f"fp32; ComfyUI's key map has {summary['key_map_entries']} entries; the other names it maps "
          f"(formats not written here), by prefix: {summary['other_formats']}")
    print("| LoRA format | layers in the file | tensors ComfyUI patches | tensors weft patches | only ComfyUI "
          "| only weft | LoRA keys weft reports unmatched | max abs diff | at | weft tensors equal to the base |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {r[7]:.2e} | {r[8]} | {r[9]} |")
    return all(r[4] == 0 and r[5] == 0 and r[7] <= 1e-6 and r[9] == 0 for r in rows)


def weft_run(api_json, work, name, threads):
    """`weft import` then `weft run`; returns {SaveImage prefix: PNG path} and seconds."""
    weft = os.path.join(REPO, "target", "release", "weft")
    yaml_path = os.path.join(work, name + ".yaml")
    subprocess.run([weft, "import", api_json, "-o", yaml_path, "--inputs", os.path.join(work, "input")], check=True)
    out = os.path.join(work, "weft-out", name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    cmd = [weft, "run", yaml_path, "--models", work, "--models", os.path.join(REPO, "models"),
           "--device", "cpu", "--threads", str(threads), "--output", out]
    started = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    took = time.time() - started
    if r.returncode != 0:
        raise SystemExit(f"weft run {yaml_path} failed:\n{r.stdout}\n{r.stderr}")
    pngs = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".png"):
            pngs[f.rsplit("_", 1)[0]] = os.path.join(out, f)
    return pngs, took


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
    ap.add_argument("--checkpoint", required=True, help="an SD1.5-shaped single file (names and shapes used)")
    ap.add_argument("--lora", required=True, help="a kohya LoRA for it (names and shapes used)")
    ap.add_argument("--work", default="/tmp/lora-inpaint-comfy")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", default="both", choices=["both", "comfyui", "comfyui-weights"])
    ap.add_argument("--format", choices=WEIGHT_FORMATS, help="(--side comfyui-weights) the LoRA format")
    ap.add_argument("--reuse-comfyui", action="store_true",
                    help="compare with the ComfyUI results already in WORK (from an earlier run)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    wanted = args.cases.split(",") if args.cases else []
    names = [n for n in CASES if not wanted or n in wanted]
    weights = not wanted or "weights" in wanted
    if args.side == "comfyui":
        return comfy_side(args, work, names)
    if args.side == "comfyui-weights":
        return comfy_weights_side(args, work)

    for file, in_channels in [(PLAIN, None), (INPAINTING, 9)]:
        ckpt = os.path.join(work, "checkpoints", file)
        uses = weights and file == PLAIN
        uses = uses or any(n["inputs"].get("ckpt_name") == file for name in names for n in CASES[name][0].values())
        if uses and not os.path.exists(ckpt):
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            write_checkpoint(args.checkpoint, ckpt, in_channels)
    if not os.path.exists(os.path.join(work, "loras", "b.safetensors")):
        write_loras(args.lora, os.path.join(work, "loras"))
    write_images(os.path.join(work, "input"))

    child = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    weights_ok = True
    if weights:
        weights_ok = compare_weights(args, work, child)
    if not names:
        sys.exit(0 if weights_ok else 1)
    if not args.reuse_comfyui:
        subprocess.run(child + ["--side", "comfyui"], check=True)
    with open(os.path.join(work, "comfyui_timings.json")) as f:
        comfy_s = json.load(f)

    rows = []
    for name in names:
        graph, _, control_text = CASES[name]
        api_json = os.path.join(work, name + ".api.json")
        with open(api_json, "w") as f:
            json.dump(graph, f, indent=1)
        pngs, weft_s = weft_run(api_json, work, name, args.threads)
        for prefix in sorted({n["inputs"]["filename_prefix"] for n in graph.values() if n["class_type"] == "SaveImage"}):
            comfy = np.load(os.path.join(work, f"{name}.{prefix}.npy"))
            control = np.load(os.path.join(work, f"{name}.{prefix}.control.npy"))
            Image.fromarray(saved(comfy)).save(os.path.join(work, f"{name}.{prefix}.comfyui.png"))
            if prefix not in pngs:
                raise SystemExit(f"{name}: weft wrote no '{prefix}' PNG (it wrote {sorted(pngs)})")
            weft_image = np.asarray(Image.open(pngs[prefix]).convert("RGB"))
            if weft_image.shape != comfy.shape:
                raise SystemExit(f"{name}/{prefix}: weft {weft_image.shape} vs ComfyUI {comfy.shape}")
            mx, mean = diff(weft_image, saved(comfy))
            rmx, rmean = diff(weft_image, rounded(comfy))
            cmx, cmean = diff(saved(control), saved(comfy))
            rows.append((f"{name} / {prefix}", mx, mean, rmx, rmean, control_text, cmx, cmean,
                         comfy_s[name], weft_s, float(comfy.std())))
            print(rows[-1], flush=True)
    print("\n| case / image | weft vs ComfyUI PNG: max /255 | mean /255 | vs ComfyUI float rounded: max | mean "
          "| control (ComfyUI run again with...) | control moves ComfyUI's image: max /255 | mean /255 "
          "| ComfyUI s | weft s | ComfyUI image std /255 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]} | {r[4]:.4f} | {r[5]} | {r[6]} | {r[7]:.2f} "
              f"| {r[8]:.1f} | {r[9]:.1f} | {r[10]:.1f} |")
    if any(r[1] > 2 for r in rows) or not weights_ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
