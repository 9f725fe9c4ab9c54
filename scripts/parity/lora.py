"""Parity fixtures for LoRA patching (weft-nodes, nodes/tests/lora_parity.rs).

Takes the tiny SD1-architecture model of scripts/parity/unet_vae.py
(nodes/tests/fixtures/unet_vae/sd1: diffusers UNet + transformers CLIP, fp16 weights) and writes
under nodes/tests/fixtures/lora/:

  kohya.safetensors   a random kohya/A1111 LoRA (lora_unet_* / lora_te_*, .lora_down /
                      .lora_up / .alpha) on the UNet's transformer layers (attention, ff,
                      proj_in/proj_out 1x1 convs), two LoCon 3x3 resnet convs (one with a Tucker
                      .lora_mid), the time embedding, and every CLIP q/k/v/out_proj/fc1/fc2; plus
                      one key that matches no layer (weft must name it in a warning)
  kohya_ldm.safetensors
                      the same LoRA as kohya.safetensors with the UNet layers named after the
                      original LDM modules (lora_unet_input_blocks_1_1_proj_in, ...), as kohya
                      files of single-file checkpoints are; it must patch exactly the same
  peft.safetensors    a random diffusers/PEFT LoRA (unet.* / text_encoder.*, .lora_A / .lora_B,
                      no alpha) on the attention projections and the CLIP attention
  reference.safetensors
                      the patched weights, fp32, for each case below, named "<case>/<tensor>",
                      for every tensor a LoRA touches

The reference follows ComfyUI's patching (comfy/model_patcher.py patch_weight_to_device ->
comfy/lora.py calculate_weight -> comfy/weight_adapter/lora.py LoRAAdapter.calculate_weight): the
weight is copied to fp32; for each patch in the order added: up and down cast to fp32,
alpha = alpha / rank (a Python float; 1.0 without alpha), a LoCon mid folded into down, then
weight += ((strength * alpha) * mm(up.flatten(1), down.flatten(1)).reshape(weight.shape)); the
result is cast back to the model's dtype (fp32 here: the Rust test loads the model in fp32).

Cases (strength_model / strength_clip):
  kohya_1_1           kohya at 1.0 / 1.0
  kohya_05_025        kohya at 0.5 / 0.25
  stack               kohya at 0.7 / 0.3, then peft at -0.4 / 1.5 (chained LoadLora nodes)

Run: .venv/bin/python scripts/parity/lora.py
"""

import os

import torch
from safetensors.torch import load_file, save_file

from unet_vae import unet_to_ldm

HERE = os.path.dirname(__file__)
MODEL = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "unet_vae", "sd1")
OUT = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "lora")

RANK = 4


def kohya_name(prefix, module):
    return prefix + module.replace(".", "_")


def is_transformer_layer(name):
    return ".attentions." in name and name.endswith(".weight") and (
        ".to_q." in name
        or ".to_k." in name
        or ".to_v." in name
        or ".to_out.0." in name
        or ".ff." in name
        or ".proj_in." in name
        or ".proj_out." in name
    )


CLIP_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "mlp.fc1", "mlp.fc2")


def random_pair(gen, shape, conv_kernel=None, mid=False):
    """(up, down, mid) fp16 for a weight of `shape`: linear (2-D or 1x1 conv) or a LoCon conv."""
    out_ch, in_ch = shape[0], shape[1]
    scale = 0.2
    if len(shape) == 4 and (shape[2], shape[3]) != (1, 1):
        if mid:
            down = torch.randn(RANK, in_ch, 1, 1, generator=gen) * scale
            mid_w = torch.randn(RANK, RANK, shape[2], shape[3], generator=gen) * scale
            up = torch.randn(out_ch, RANK, 1, 1, generator=gen) * scale
            return up.half(), down.half(), mid_w.half()
        down = torch.randn(RANK, in_ch, shape[2], shape[3], generator=gen) * scale
        up = torch.randn(out_ch, RANK, 1, 1, generator=gen) * scale
        return up.half(), down.half(), None
    if len(shape) == 4:
        # kohya keeps a 1x1 conv's LoRA as 1x1 convs.
        down = torch.randn(RANK, in_ch, 1, 1, generator=gen) * scale
        up = torch.randn(out_ch, RANK, 1, 1, generator=gen) * scale
        return up.half(), down.half(), None
    down = torch.randn(RANK, in_ch, generator=gen) * scale
    up = torch.randn(out_ch, RANK, generator=gen) * scale
    return up.half(), down.half(), None


def comfy_patch(weight, patches):
    """ComfyUI's calculate_weight for a list of (strength, (up, down, alpha, mid)), fp32."""
    weight = weight.to(torch.float32, copy=True)
    for strength, (up, down, alpha, mid) in patches:
        mat1 = up.to(torch.float32)
        mat2 = down.to(torch.float32)
        if alpha is not None:
            alpha = alpha / mat2.shape[0]
        else:
            alpha = 1.0
        if mid is not None:
            mat3 = mid.to(torch.float32)
            final_shape = [mat2.shape[1], mat2.shape[0], mat3.shape[2], mat3.shape[3]]
            mat2 = (
                torch.mm(mat2.transpose(0, 1).flatten(start_dim=1),
                         mat3.transpose(0, 1).flatten(start_dim=1))
                .reshape(final_shape)
                .transpose(0, 1)
            )
        lora_diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
        weight += ((strength * alpha) * lora_diff).type(weight.dtype)
    return weight


def main():
    os.makedirs(OUT, exist_ok=True)
    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    clip = load_file(os.path.join(MODEL, "text_encoder", "model.safetensors"))
    gen = torch.Generator().manual_seed(20)

    # name in the model -> (up, down, alpha, mid), per LoRA and per model
    kohya_unet, kohya_clip, kohya_file = {}, {}, {}
    unet_layers = sorted(k for k in unet if is_transformer_layer(k))
    locon = ["down_blocks.0.resnets.0.conv1.weight", "up_blocks.1.resnets.1.conv2.weight"]
    unet_layers += locon + ["time_embedding.linear_1.weight"]
    for name in unet_layers:
        module = name[: -len(".weight")]
        up, down, mid = random_pair(gen, unet[name].shape, mid=(name == locon[1]))
        alpha = float(torch.tensor(float(torch.randint(1, 9, (1,), generator=gen))).half())
        key = kohya_name("lora_unet_", module)
        kohya_file[key + ".lora_up.weight"] = up
        kohya_file[key + ".lora_down.weight"] = down
        kohya_file[key + ".alpha"] = torch.tensor(alpha).half()
        if mid is not None:
            kohya_file[key + ".lora_mid.weight"] = mid
        kohya_unet[name] = (up, down, alpha, mid)
    clip_layers = sorted(
        k for k in clip
        if k.endswith(".weight") and any("." + c + "." in k for c in CLIP_LAYERS)
    )
    for name in clip_layers:
        module = name[: -len(".weight")]
        up, down, _ = random_pair(gen, clip[name].shape)
        key = kohya_name("lora_te_", module)
        kohya_file[key + ".lora_up.weight"] = up
        kohya_file[key + ".lora_down.weight"] = down
        kohya_file[key + ".alpha"] = torch.tensor(2.0).half()
        kohya_clip[name] = (up, down, 2.0, None)
    # A layer no SD1 model has: reported by name, not applied.
    kohya_file["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.zeros(16, RANK).half()
    kohya_file["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(RANK, 16).half()
    save_file(kohya_file, os.path.join(OUT, "kohya.safetensors"))

    # The tiny UNet: 1 layer per block, cross-attention in the first level only.
    ldm_file = {}
    for key, tensor in kohya_file.items():
        if key.startswith("lora_unet_down_blocks_9"):
            continue
        layer, part = key.split(".", 1)
        if layer.startswith("lora_unet_"):
            module = next(n for n in kohya_unet if kohya_name("lora_unet_", n[: -len(".weight")]) == layer)
            ldm = next(iter(unet_to_ldm({module: None}, 1, [True, False])))
            ldm = ldm[len("model.diffusion_model."): -len(".weight")]
            layer = kohya_name("lora_unet_", ldm)
        ldm_file[f"{layer}.{part}"] = tensor
    save_file(ldm_file, os.path.join(OUT, "kohya_ldm.safetensors"))

    peft_unet, peft_clip, peft_file = {}, {}, {}
    for name in unet_layers:
        if not any(p in name for p in (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")):
            continue
        module = name[: -len(".weight")]
        up, down, _ = random_pair(gen, unet[name].shape)
        peft_file["unet." + module + ".lora_A.weight"] = down
        peft_file["unet." + module + ".lora_B.weight"] = up
        peft_unet[name] = (up, down, None, None)
    for name in clip_layers:
        if ".self_attn." not in name:
            continue
        module = name[: -len(".weight")]
        up, down, _ = random_pair(gen, clip[name].shape)
        peft_file["text_encoder." + module + ".lora_A.weight"] = down
        peft_file["text_encoder." + module + ".lora_B.weight"] = up
        peft_clip[name] = (up, down, None, None)
    save_file(peft_file, os.path.join(OUT, "peft.safetensors"))

    cases = {
        "kohya_1_1": [(1.0, 1.0, kohya_unet, kohya_clip)],
        "kohya_05_025": [(0.5, 0.25, kohya_unet, kohya_clip)],
        "stack": [(0.7, 0.3, kohya_unet, kohya_clip), (-0.4, 1.5, peft_unet, peft_clip)],
    }
    reference = {}
    for case, loras in cases.items():
        for model, which in ((unet, 2), (clip, 3)):
            touched = sorted({n for lora in loras for n in lora[which]})
            for name in touched:
                patches = [
                    (lora[0] if which == 2 else lora[1], lora[which][name])
                    for lora in loras
                    if name in lora[which]
                ]
                # The model is loaded in fp32 (the fp16 file widened), so no cast back.
                reference[f"{case}/{name}"] = comfy_patch(model[name].float(), patches).contiguous()
    save_file(reference, os.path.join(OUT, "reference.safetensors"))
    print(f"{len(kohya_file)} kohya tensors, {len(peft_file)} peft tensors, "
          f"{len(reference)} reference tensors")


if __name__ == "__main__":
    main()
