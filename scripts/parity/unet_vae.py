"""Parity fixtures for the UNet / VAE / checkpoint-loading area (weft-nodes).

Builds tiny random-weight diffusers models (an SD1-like and an SD2-like UNet2DConditionModel,
two AutoencoderKLs) and tiny transformers CLIPTextModels, then writes under
nodes/tests/fixtures/unet_vae/:

  sd1/, sd2/          diffusers folder layouts (unet/, vae/, text_encoder/, scheduler/,
                      each with its config.json and safetensors weights)
  sd1.safetensors,    the same weights as one original-LDM single-file checkpoint
  sd2.safetensors     (model.diffusion_model.*, first_stage_model.*, and
                      cond_stage_model.transformer.* (CLIP-L layout, SD1) or
                      cond_stage_model.model.* (OpenCLIP layout, SD2)), converted below
  io.safetensors      inputs and reference outputs (fp32)

Weights are rounded to fp16 before the reference runs (and stored as fp16), so the fixtures
stay small while the reference is computed in fp32 on exactly the stored values.

Run: .venv/bin/python scripts/parity/unet_vae.py
"""

import json
import os
import shutil

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "nodes", "tests", "fixtures", "unet_vae")


def round_to_fp16(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def half_state_dict(model, prefix=""):
    sd = model.state_dict()
    return {
        (k if k.startswith(prefix) else prefix + k): v.detach().half().contiguous()
        for k, v in sd.items()
        if not k.endswith("position_ids")
    }


# transformers 5 drops the `text_model.` level from CLIPTextModel's state dict; the files SD
# models ship (and the LDM text-encoder layout) keep it, so the fixtures do too.
CLIP_PREFIX = "text_model."


# ---------------------------------------------------------------------------------------------
# diffusers -> original LDM names (the inverse of diffusers' convert_from_ckpt, written here)
# ---------------------------------------------------------------------------------------------

RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def unet_to_ldm(sd, layers_per_block, cross_attention_blocks):
    per_block = layers_per_block + 1
    out = {}
    top = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    n = len(cross_attention_blocks)
    for key, value in sd.items():
        parts = key.split(".")
        module, leaf = ".".join(parts[:-1]), parts[-1]
        if module in top:
            new = f"{top[module]}.{leaf}"
        elif parts[0] == "down_blocks":
            b = int(parts[1])
            if parts[2] == "resnets":
                i = 1 + b * per_block + int(parts[3])
                new = f"input_blocks.{i}.0.{RESNET_TO_LDM[parts[4]]}.{leaf}"
            elif parts[2] == "attentions":
                i = 1 + b * per_block + int(parts[3])
                new = f"input_blocks.{i}.1." + ".".join(parts[4:])
            else:  # downsamplers.0.conv
                i = 1 + b * per_block + layers_per_block
                new = f"input_blocks.{i}.0.op.{leaf}"
        elif parts[0] == "mid_block":
            j = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
            rest = parts[3:]
            if parts[1] == "resnets":
                rest = [RESNET_TO_LDM[rest[0]]] + rest[1:]
            new = f"middle_block.{j}." + ".".join(rest)
        elif parts[0] == "up_blocks":
            b = int(parts[1])
            has_attn = cross_attention_blocks[n - 1 - b]
            if parts[2] == "resnets":
                i = b * per_block + int(parts[3])
                new = f"output_blocks.{i}.0.{RESNET_TO_LDM[parts[4]]}.{leaf}"
            elif parts[2] == "attentions":
                i = b * per_block + int(parts[3])
                new = f"output_blocks.{i}.1." + ".".join(parts[4:])
            else:  # upsamplers.0.conv
                i = b * per_block + layers_per_block
                new = f"output_blocks.{i}.{2 if has_attn else 1}.conv.{leaf}"
        else:
            raise KeyError(key)
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd, num_blocks):
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("quant_conv", "post_quant_conv"):
            new = key
        else:
            side, rest = parts[0], parts[1:]
            if rest[0] == "conv_norm_out":
                new = f"{side}.norm_out.{rest[1]}"
            elif rest[0] in ("conv_in", "conv_out"):
                new = key
            elif rest[0] in ("down_blocks", "up_blocks"):
                i = int(rest[1])
                ldm_i = i if rest[0] == "down_blocks" else num_blocks - 1 - i
                stage = "down" if rest[0] == "down_blocks" else "up"
                if rest[2] == "resnets":
                    sub = "nin_shortcut" if rest[4] == "conv_shortcut" else rest[4]
                    new = f"{side}.{stage}.{ldm_i}.block.{rest[3]}.{sub}.{rest[5]}"
                else:  # downsamplers.0.conv / upsamplers.0.conv
                    which = "downsample" if stage == "down" else "upsample"
                    new = f"{side}.{stage}.{ldm_i}.{which}.conv.{rest[-1]}"
            elif rest[0] == "mid_block":
                if rest[1] == "resnets":
                    new = f"{side}.mid.block_{int(rest[2]) + 1}.{rest[3]}.{rest[4]}"
                else:
                    sub = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[rest[3]]
                    new = f"{side}.mid.attn_1.{sub}.{rest[-1]}"
                    if sub != "norm" and rest[-1] == "weight":
                        value = value.reshape(*value.shape, 1, 1)  # LDM uses 1x1 convs here
            else:
                raise KeyError(key)
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd):
    return {"cond_stage_model.transformer." + k: v for k, v in sd.items()}


def clip_to_open_clip(sd, num_layers, hidden, generator):
    """OpenCLIP text-tower layout (SD 2.x `cond_stage_model.model.*`), with one extra final
    resblock, text_projection and logit_scale that SD 2.x does not use (the loader drops them)."""
    pre = "cond_stage_model.model."
    out = {
        pre + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        pre + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        pre + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        pre + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        pre + "text_projection": torch.randn(hidden, hidden, generator=generator).half(),
        pre + "logit_scale": torch.tensor(4.6).half(),
    }
    for i in range(num_layers + 1):
        src = f"text_model.encoder.layers.{i}."
        dst = f"{pre}transformer.resblocks.{i}."

        def take(name, shape_like=None):
            if i < num_layers:
                return sd[src + name]
            return (torch.randn(sd[f"text_model.encoder.layers.0.{name}"].shape, generator=generator) * 0.02).half()

        out[dst + "ln_1.weight"] = take("layer_norm1.weight")
        out[dst + "ln_1.bias"] = take("layer_norm1.bias")
        out[dst + "ln_2.weight"] = take("layer_norm2.weight")
        out[dst + "ln_2.bias"] = take("layer_norm2.bias")
        out[dst + "attn.in_proj_weight"] = torch.cat([take(f"self_attn.{p}_proj.weight") for p in "qkv"], 0)
        out[dst + "attn.in_proj_bias"] = torch.cat([take(f"self_attn.{p}_proj.bias") for p in "qkv"], 0)
        out[dst + "attn.out_proj.weight"] = take("self_attn.out_proj.weight")
        out[dst + "attn.out_proj.bias"] = take("self_attn.out_proj.bias")
        out[dst + "mlp.c_fc.weight"] = take("mlp.fc1.weight")
        out[dst + "mlp.c_fc.bias"] = take("mlp.fc1.bias")
        out[dst + "mlp.c_proj.weight"] = take("mlp.fc2.weight")
        out[dst + "mlp.c_proj.bias"] = take("mlp.fc2.bias")
    return out


# ---------------------------------------------------------------------------------------------


def save_component(folder, name, model, weights_file, config, prefix=""):
    d = os.path.join(folder, name)
    os.makedirs(d, exist_ok=True)
    save_file(half_state_dict(model, prefix), os.path.join(d, weights_file))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1, default=list)


def unet_config_json(unet):
    # `_use_default_values` is a set dumped in arbitrary order: leave it out so reruns match.
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in dict(unet.config).items()
        if k != "_use_default_values"
    }


def write_full_size_names():
    """Names and shapes of the full-size SD 1.5 / 2.1 UNets and the SD VAE in both layouts (no
    weights), checked here against diffusers' own LDM converter, so the Rust key maps are
    tested on the real checkpoint layouts."""
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    sd2 = dict(attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True)
    out = {}
    sd1 = dict(cross_attention_dim=768)  # diffusers defaults to 1280
    for name, cfg in [("sd15_unet", sd1), ("sd21_unet", sd2), ("sd_vae", None)]:
        with torch.device("meta"):
            if cfg is None:
                model = AutoencoderKL(
                    block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4,
                    layers_per_block=2,
                )
            else:
                model = UNet2DConditionModel(**cfg)
        sd = model.state_dict()
        # Stand-in tensors carrying each name, so the official converter's result can be
        # checked name by name.
        tagged = {k: torch.full((1,), float(i)) for i, k in enumerate(sd)}
        if cfg is None:
            ldm = vae_to_ldm(tagged, 4)
            back = convert_ldm_vae_checkpoint(dict(ldm), {})
            ldm_shapes = vae_to_ldm({k: torch.empty(v.shape, device="meta") for k, v in sd.items()}, 4)
        else:
            ldm = unet_to_ldm(tagged, 2, [True, True, True, False])
            back = convert_ldm_unet_checkpoint(
                dict(ldm), dict(layers_per_block=2, class_embed_type=None, addition_embed_type=None)
            )
            ldm_shapes = {k: sd[d].shape for k, d in zip(ldm, sd)}
        assert set(back) == set(sd) and all(torch.equal(back[k].flatten()[:1], tagged[k]) for k in sd), name
        diffusers_of = {}
        for ldm_name, t in ldm.items():
            diffusers_of[ldm_name] = list(sd)[int(t.flatten()[0].item())]
        out[name] = [[k, diffusers_of[k], list(ldm_shapes[k].shape if hasattr(ldm_shapes[k], "shape") else ldm_shapes[k])] for k in ldm]
    with open(os.path.join(ROOT, "full_size_names.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    io = {}

    variants = {
        "sd1": dict(
            unet=dict(
                block_out_channels=(16, 32),
                layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=16,
                attention_head_dim=4,
                norm_num_groups=8,
                sample_size=16,
            ),
            vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
            clip=dict(hidden_size=16, layers=2),
            prediction_type="epsilon",
        ),
        "sd2": dict(
            unet=dict(
                block_out_channels=(8, 16, 16),
                layers_per_block=2,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=12,
                attention_head_dim=(2, 4, 4),
                norm_num_groups=4,
                use_linear_projection=True,
                upcast_attention=True,
                sample_size=16,
            ),
            vae=dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
            clip=dict(hidden_size=12, layers=2),
            prediction_type="v_prediction",
        ),
    }

    for name, v in variants.items():
        folder = os.path.join(ROOT, name)
        unet = round_to_fp16(UNet2DConditionModel(in_channels=4, out_channels=4, **v["unet"]).eval())
        vae = round_to_fp16(
            AutoencoderKL(
                in_channels=3,
                out_channels=3,
                latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * len(v["vae"]["block_out_channels"]),
                up_block_types=("UpDecoderBlock2D",) * len(v["vae"]["block_out_channels"]),
                sample_size=32,
                **v["vae"],
            ).eval()
        )
        hidden = v["clip"]["hidden_size"]
        clip_cfg = CLIPTextConfig(
            vocab_size=99,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=v["clip"]["layers"],
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=1,
        )
        clip = round_to_fp16(CLIPTextModel(clip_cfg).eval())

        save_component(folder, "unet", unet, "diffusion_pytorch_model.safetensors", unet_config_json(unet))
        save_component(folder, "vae", vae, "diffusion_pytorch_model.safetensors", unet_config_json(vae))
        save_component(folder, "text_encoder", clip, "model.safetensors", clip_cfg.to_dict(), CLIP_PREFIX)
        os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
        with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump({"_class_name": "DDIMScheduler", "prediction_type": v["prediction_type"]}, f, indent=1)

        cross = [t.startswith("CrossAttn") for t in v["unet"]["down_block_types"]]
        single = {}
        single.update(unet_to_ldm(half_state_dict(unet), v["unet"]["layers_per_block"], cross))
        single.update(vae_to_ldm(half_state_dict(vae), len(v["vae"]["block_out_channels"])))
        if name == "sd1":
            single.update(clip_to_ldm(half_state_dict(clip, CLIP_PREFIX)))
        else:
            single.update(clip_to_open_clip(half_state_dict(clip, CLIP_PREFIX), v["clip"]["layers"], hidden, g))
        save_file({k: t.contiguous() for k, t in single.items()}, os.path.join(ROOT, f"{name}.safetensors"))

        # Reference outputs (fp32).
        ctx_dim = v["unet"]["cross_attention_dim"]
        sample = torch.randn(2, 4, 16, 16, generator=g)
        timestep = torch.tensor([981.0, 3.0])
        context = torch.randn(2, 7, ctx_dim, generator=g)
        odd_sample = torch.randn(1, 4, 9, 7, generator=g)
        odd_context = torch.randn(1, 5, ctx_dim, generator=g)
        image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        latents = torch.randn(1, 4, 8, 8, generator=g)
        with torch.no_grad():
            out = unet(sample, timestep, encoder_hidden_states=context).sample
            odd_out = unet(odd_sample, 500, encoder_hidden_states=odd_context).sample
            dist = vae.encode(image).latent_dist
            decoded = vae.decode(latents).sample
        io.update(
            {
                f"{name}.unet.sample": sample,
                f"{name}.unet.timestep": timestep,
                f"{name}.unet.context": context,
                f"{name}.unet.out": out,
                f"{name}.unet.odd_sample": odd_sample,
                f"{name}.unet.odd_context": odd_context,
                f"{name}.unet.odd_out": odd_out,
                f"{name}.vae.image": image,
                f"{name}.vae.mean": dist.mean,
                f"{name}.vae.logvar": dist.logvar,
                f"{name}.vae.latents": latents,
                f"{name}.vae.decoded": decoded,
            }
        )
        print(name, "unet out std", out.std().item(), "decoded std", decoded.std().item())

    save_file({k: t.contiguous().float() for k, t in io.items()}, os.path.join(ROOT, "io.safetensors"))
    write_full_size_names()
    total = 0
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    print(f"fixtures: {total / 1e6:.2f} MB under {os.path.normpath(ROOT)}")


if __name__ == "__main__":
    main()
