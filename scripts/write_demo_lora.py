"""Writes models/loras/tiny-shapes-prompt-dampener.safetensors, the LoRA of workflows/lora.yaml:
a kohya-format LoRA for the embedded tiny-shapes UNet whose update on every cross-attention
value projection (attn2.to_v) is minus that projection (up = -I, down = W, alpha = rank, so the
rank is the layer's width and the update is exact). At strength 1 the UNet no longer hears the
prompt; at 0.5 it hears it at half volume; negative strengths exaggerate it. Deterministic: it
is made from the committed weights, no randomness.

  .venv/bin/python scripts/write_demo_lora.py
"""

import os

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..")
UNET = os.path.join(ROOT, "models", "tiny-shapes", "unet", "diffusion_pytorch_model.safetensors")
OUT = os.path.join(ROOT, "models", "loras", "tiny-shapes-prompt-dampener.safetensors")


def main():
    unet = load_file(UNET)
    lora = {}
    for name, weight in sorted(unet.items()):
        if not name.endswith("attn2.to_v.weight"):
            continue
        key = "lora_unet_" + name[: -len(".weight")].replace(".", "_")
        rank = weight.shape[0]
        lora[key + ".lora_up.weight"] = -torch.eye(rank, dtype=torch.float16)
        lora[key + ".lora_down.weight"] = weight.to(torch.float16).contiguous()
        lora[key + ".alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(lora, OUT, metadata={"ss_network_module": "networks.lora", "note": "weft demo LoRA"})
    print(OUT, len(lora) // 3, "layers", os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
