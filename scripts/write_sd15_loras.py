"""Writes random kohya-format LoRAs of rank R for an SD1.5-shaped model (for scripts/bench_lora.sh):
every UNet transformer layer (attention q/k/v/out, proj_in/proj_out, feed-forward) and every CLIP
ViT-L/14 q/k/v/out_proj/fc1/fc2, as kohya's sd-scripts trains them by default, fp16, with alpha.

  .venv/bin/python scripts/write_sd15_loras.py OUT_DIR [COUNT] [RANK]
"""

import os
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
CLIP_L = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77)
UNET_LAYERS = (".to_q.", ".to_k.", ".to_v.", ".to_out.0.", ".proj_in.", ".proj_out.", ".ff.net.0.proj.", ".ff.net.2.")
CLIP_LAYERS = (".q_proj.", ".k_proj.", ".v_proj.", ".out_proj.", ".fc1.", ".fc2.")


def shapes():
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


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rank = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    os.makedirs(out, exist_ok=True)
    layers = list(shapes())
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
