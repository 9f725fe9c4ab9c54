"""Parity fixtures for SDXL LoRA patching (weft-nodes, nodes/tests/lora_sdxl_parity.rs).

Takes the tiny SDXL-architecture model of scripts/parity/sdxl.py
(nodes/tests/fixtures/sdxl/diffusers: a diffusers UNet with three levels, the first without
attention, and two transformers text towers in the CLIP-L and OpenCLIP-bigG roles, fp16) and
writes under nodes/tests/fixtures/lora_sdxl/:

  kohya_ldm.safetensors
                      a random kohya LoRA as SDXL trainers write them: the UNet's transformer
                      layers (attention, ff, proj_in/proj_out) of level 1's first down and up
                      transformer and the middle block's
                      cross-attention under the single file's module
                      names (lora_unet_input_blocks_4_1_proj_in, ...) plus a LoCon 3x3 resnet
                      conv and the added-conditioning MLP (lora_unet_label_emb_0_0); CLIP-L's first
                      layer's q/k/v/out_proj/fc1/fc2 as lora_te1_*, bigG's as lora_te2_*;
                      .lora_down / .lora_up / .alpha
  kohya.safetensors   the same LoRA with the UNet layers under diffusers' module names
                      (lora_unet_down_blocks_1_attentions_0_proj_in, ...): it must patch the same
  peft.safetensors    a random diffusers/PEFT LoRA (unet.* / text_encoder.* / text_encoder_2.*,
                      .lora_A / .lora_B, no alpha) on the attention projections
  reference.safetensors
                      the patched weights, fp32, for each case below, named "<case>/<tensor>"
                      for every tensor a LoRA touches (UNet and CLIP-L tensors by their own names,
                      bigG's as "te2:<name>")

The patch is ComfyUI's calculate_weight, as scripts/parity/lora.py writes it out (its
`comfy_patch`); which file names reach which tower follows ComfyUI's model_lora_keys_clip for
SDXL (lora_te1_ / text_encoder. -> clip_l, lora_te2_ / text_encoder_2. -> clip_g) and
model_lora_keys_unet (kohya names after both the LDM and the diffusers module paths).

Cases (strength_model / strength_clip):
  kohya_1_1           kohya_ldm at 1.0 / 1.0
  kohya_05_025        kohya_ldm at 0.5 / 0.25
  stack               kohya_ldm at 0.7 / 0.3, then peft at -0.4 / 1.5

Run: .venv/bin/python scripts/parity/lora_sdxl.py
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from lora import CLIP_LAYERS, comfy_patch, is_transformer_layer, kohya_name, random_pair  # noqa: E402
from sdxl import sdxl_unet_to_ldm  # noqa: E402

HERE = os.path.dirname(__file__)
MODEL = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "sdxl", "diffusers")
OUT = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "lora_sdxl")
LAYERS_PER_BLOCK = 2
CROSS = [False, True, True]


def ldm_module(module):
    """The single file's module path of a diffusers UNet module (the fixtures' converter)."""
    ldm = next(iter(sdxl_unet_to_ldm({module + ".weight": None}, LAYERS_PER_BLOCK, CROSS)))
    return ldm[len("model.diffusion_model."): -len(".weight")]


def main():
    os.makedirs(OUT, exist_ok=True)
    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    clip_l = load_file(os.path.join(MODEL, "text_encoder", "model.safetensors"))
    clip_g = load_file(os.path.join(MODEL, "text_encoder_2", "model.safetensors"))
    gen = torch.Generator().manual_seed(21)

    kohya_unet, kohya_l, kohya_g, kohya_ldm = {}, {}, {}, {}
    # The first transformer of level 1, down and up, and the middle block's cross-attention:
    # both naming schemes' every kind of transformer module, at a fixture size of KBs.
    unet_layers = sorted(
        k for k in unet
        if is_transformer_layer(k)
        and (
            k.startswith(("down_blocks.1.attentions.0.", "up_blocks.1.attentions.0."))
            or k.startswith("mid_block.attentions.0.transformer_blocks.0.attn2.")
        )
    )
    locon = "up_blocks.2.resnets.1.conv2.weight"
    unet_layers += [locon, "add_embedding.linear_1.weight"]
    for name in unet_layers:
        module = name[: -len(".weight")]
        up, down, _ = random_pair(gen, unet[name].shape)
        alpha = float(torch.tensor(float(torch.randint(1, 9, (1,), generator=gen))).half())
        key = kohya_name("lora_unet_", ldm_module(module))
        kohya_ldm[key + ".lora_up.weight"] = up
        kohya_ldm[key + ".lora_down.weight"] = down
        kohya_ldm[key + ".alpha"] = torch.tensor(alpha).half()
        kohya_unet[name] = (up, down, alpha, None)
    assert "lora_unet_label_emb_0_0.lora_up.weight" in kohya_ldm
    assert any(k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k") for k in kohya_ldm)
    assert any(k.startswith("lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k") for k in kohya_ldm)

    def clip_layers(tower):
        # The first encoder layer of each tower (the name maps are per tower, not per layer).
        return sorted(
            k for k in tower
            if k.startswith("text_model.encoder.layers.0.")
            and k.endswith(".weight") and any("." + c + "." in k for c in CLIP_LAYERS)
        )

    for tower, prefix, into in ((clip_l, "lora_te1_", kohya_l), (clip_g, "lora_te2_", kohya_g)):
        for name in clip_layers(tower):
            up, down, _ = random_pair(gen, tower[name].shape)
            key = kohya_name(prefix, name[: -len(".weight")])
            kohya_ldm[key + ".lora_up.weight"] = up
            kohya_ldm[key + ".lora_down.weight"] = down
            kohya_ldm[key + ".alpha"] = torch.tensor(2.0).half()
            into[name] = (up, down, 2.0, None)
    save_file(kohya_ldm, os.path.join(OUT, "kohya_ldm.safetensors"))

    # The same LoRA, the UNet under diffusers' module names.
    diffusers_names = {kohya_name("lora_unet_", ldm_module(n[: -len(".weight")])):
                       kohya_name("lora_unet_", n[: -len(".weight")]) for n in kohya_unet}
    kohya = {}
    for key, tensor in kohya_ldm.items():
        layer, part = key.split(".", 1)
        kohya[f"{diffusers_names.get(layer, layer)}.{part}"] = tensor
    save_file(kohya, os.path.join(OUT, "kohya.safetensors"))

    peft_unet, peft_l, peft_g, peft = {}, {}, {}, {}
    for name in unet_layers:
        if not any(p in name for p in (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")):
            continue
        up, down, _ = random_pair(gen, unet[name].shape)
        peft["unet." + name[: -len(".weight")] + ".lora_A.weight"] = down
        peft["unet." + name[: -len(".weight")] + ".lora_B.weight"] = up
        peft_unet[name] = (up, down, None, None)
    for tower, prefix, into in ((clip_l, "text_encoder.", peft_l), (clip_g, "text_encoder_2.", peft_g)):
        for name in clip_layers(tower):
            if ".self_attn." not in name:
                continue
            up, down, _ = random_pair(gen, tower[name].shape)
            peft[prefix + name[: -len(".weight")] + ".lora_A.weight"] = down
            peft[prefix + name[: -len(".weight")] + ".lora_B.weight"] = up
            into[name] = (up, down, None, None)
    save_file(peft, os.path.join(OUT, "peft.safetensors"))

    cases = {
        "kohya_1_1": [(1.0, 1.0, kohya_unet, kohya_l, kohya_g)],
        "kohya_05_025": [(0.5, 0.25, kohya_unet, kohya_l, kohya_g)],
        "stack": [(0.7, 0.3, kohya_unet, kohya_l, kohya_g), (-0.4, 1.5, peft_unet, peft_l, peft_g)],
    }
    reference = {}
    for case, loras in cases.items():
        for model, which, tag in ((unet, 2, ""), (clip_l, 3, ""), (clip_g, 4, "te2:")):
            touched = sorted({n for lora in loras for n in lora[which]})
            for name in touched:
                patches = [
                    (lora[0] if which == 2 else lora[1], lora[which][name])
                    for lora in loras
                    if name in lora[which]
                ]
                # The model is loaded in fp32 (the fp16 file widened), so no cast back.
                reference[f"{case}/{tag}{name}"] = comfy_patch(model[name].float(), patches).contiguous()
    save_file(reference, os.path.join(OUT, "reference.safetensors"))
    print(f"{len(kohya_ldm)} kohya tensors, {len(peft)} peft tensors, {len(reference)} reference tensors")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures: {total / 1e6:.2f} MB under {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
