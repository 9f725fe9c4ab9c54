"""Writes random kohya-format LoRAs of rank R for an SD1.5-shaped model (for scripts/bench_lora.sh):
every UNet transformer layer (attention q/k/v/out, proj_in/proj_out, feed-forward) and every CLIP
ViT-L/14 q/k/v/out_proj/fc1/fc2, as kohya's sd-scripts trains them by default, fp16, with alpha.

  .venv/bin/python scripts/write_sd15_loras.py OUT_DIR [COUNT] [RANK] [CHECKPOINT]

With CHECKPOINT (an SD1.5 single file, e.g. the one scripts/sd15_bench_workflow.sh writes) the
layers and shapes are read from its LDM keys and the LoRA is named after them
(lora_unet_input_blocks_1_1_..., as kohya names single-file checkpoints' layers): diffusers and
transformers are then not needed.
"""

import os
import sys

import json
import struct

import torch
from safetensors.torch import save_file

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
UNET_LAYERS = (".to_q.", ".to_k.", ".to_v.", ".to_out.0.", ".proj_in.", ".proj_out.", ".ff.net.0.proj.", ".ff.net.2.")
CLIP_LAYERS = (".q_proj.", ".k_proj.", ".v_proj.", ".out_proj.", ".fc1.", ".fc2.")


def shapes():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    CLIP_L = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        clip = CLIPTextModel(CLIP_L)
    for name, t in unet.state_dict().items():
        if name.endswith(".weight") and any(p in name for p in UNET_LAYERS):
            yield "lora_unet_", name, tuple(t.shape)
    for name, t in clip.state_dict().items():
        if not name.startswith("text_model."):
            name = "text_model." + name
        if name.endswith(".weight") and any(p in name for p in CLIP_LAYERS):
            yield "lora_te_", name, tuple(t.shape)


def checkpoint_shapes(path):
    """The LoRA layers of an LDM single file, from its safetensors header."""
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    for name, info in sorted(header.items()):
        if name == "__metadata__" or not name.endswith(".weight"):
            continue
        for prefix, under, layers in (
            ("lora_unet_", "model.diffusion_model.", UNET_LAYERS),
            ("lora_te_", "cond_stage_model.transformer.", CLIP_LAYERS),
        ):
            if name.startswith(under) and any(p in name for p in layers):
                layer = name[len(under):]
                # Older SD1 files store the text model without its `text_model.` level; kohya
                # (and ComfyUI, which skips other names) keys it lora_te_text_model_encoder_...
                if prefix == "lora_te_" and not layer.startswith("text_model."):
                    layer = "text_model." + layer
                yield prefix, layer, tuple(info["shape"])


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rank = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    os.makedirs(out, exist_ok=True)
    layers = list(checkpoint_shapes(sys.argv[4]) if len(sys.argv) > 4 else shapes())
    for i in range(count):
        gen = torch.Generator().manual_seed(i)
        tensors = {}
        for prefix, name, shape in layers:
            key = prefix + name[: -len(".weight")].replace(".", "_")
            down_shape = (rank, shape[1]) + tuple(shape[2:]) if len(shape) == 4 else (rank, shape[1])
            up_shape = (shape[0], rank, 1, 1) if len(shape) == 4 else (shape[0], rank)
            tensors[key + ".lora_down.weight"] = (torch.randn(down_shape, generator=gen) * 0.01).half()
            tensors[key + ".lora_up.weight"] = (torch.randn(up_shape, generator=gen) * 0.01).half()
            tensors[key + ".alpha"] = torch.tensor(float(rank)).half()
        path = os.path.join(out, f"random-r{rank}-{i}.safetensors")
        save_file(tensors, path)
        print(path, len(layers), "layers", os.path.getsize(path) // 1024, "KiB")


if __name__ == "__main__":
    main()
