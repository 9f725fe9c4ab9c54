"""Parity fixtures for the SDXL refiner (weft-nodes).

Builds a tiny random-weight model with the SDXL refiner's architecture in diffusers: a
UNet2DConditionModel with four levels, attention in the middle two only ([0, k, k, 0]
transformers, as the refiner's [0, 4, 4, 0]), the middle block with k transformers, 64-wide
heads scaled down, linear projections, and the text_time added conditioning over 5 ids
(height, width, crop top, crop left, aesthetic score) after a pooled text embedding as wide as
the context (the refiner's context and pooled output are both OpenCLIP-bigG's); a tiny VAE;
one tiny OpenCLIP-bigG-role text tower. Writes under nodes/tests/fixtures/sdxl_refiner/:

  unet_config.json    the diffusers UNet's config.json
  single.safetensors  the UNet's fp16 weights, a VAE and the bigG tower in the refiner's single-file
                      layout: model.diffusion_model.* with label_emb.0.{0,2},
                      first_stage_model.*, conditioner.embedders.0.model.* (open_clip names,
                      fused in_proj, text_projection as x @ W) and no CLIP-L embedder
  io.safetensors      UNet inputs and diffusers' output with the added conditioning, and the
                      added-conditioning vectors ComfyUI's SDXLRefiner.encode_adm makes
                      (written out below from its code) for given sizes and scores, with the
                      defaults (6 positive, 2.5 negative) when no score is given

and test-support/data/sdxl_refiner_ldm_shapes.json: every tensor name and shape of a full-size
SDXL refiner single file (UNet from diffusers with ComfyUI's refiner config, its LDM names
checked against diffusers' own converter; the SDXL VAE; bigG with 32 layers at
conditioner.embedders.0.model.*), for test-support's refiner-shaped checkpoint writer.

Run: .venv/bin/python scripts/parity/sdxl_refiner.py
"""

import json
import math
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(__file__))
from sdxl import VAE, clip_config, clip_g_to_open_clip, sdxl_unet_to_ldm  # noqa: E402
from unet_vae import (  # noqa: E402
    CLIP_PREFIX,
    half_state_dict,
    round_to_fp16,
    unet_config_json,
    vae_to_ldm,
)

HERE = os.path.dirname(__file__)
ROOT = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "sdxl_refiner")
SHAPES = os.path.join(HERE, "..", "..", "test-support", "data", "sdxl_refiner_ldm_shapes.json")

CROSS = [False, True, True, False]
CLIP_G = dict(hidden_size=24, layers=2, act="gelu", projection_dim=24)
TIME_IDS = 8
UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(8, 16, 32, 32),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(2, 2, 2, 2),
    attention_head_dim=(2, 2, 4, 4),
    norm_num_groups=4,
    use_linear_projection=True,
    cross_attention_dim=CLIP_G["hidden_size"],
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_IDS,
    projection_class_embeddings_input_dim=CLIP_G["projection_dim"] + 5 * TIME_IDS,
)


def comfy_timestep_embedding(t, dim):
    """ComfyUI's Timestep(dim) (comfy/ldm/modules/diffusionmodules/util.py timestep_embedding,
    max_period 10000): cos then sin of t * exp(-ln(10000) * i / half), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def comfy_refiner_adm(pooled, height, width, crop_h, crop_w, aesthetic_score):
    """ComfyUI's SDXLRefiner.encode_adm (comfy/model_base.py at 618b803d) for one prompt."""
    ids = [height, width, crop_h, crop_w, aesthetic_score]
    flat = torch.cat([comfy_timestep_embedding(torch.Tensor([v]), TIME_IDS) for v in ids])
    flat = torch.flatten(flat).unsqueeze(0).repeat(pooled.shape[0], 1)
    return torch.cat((pooled, flat), dim=1)


def write_full_size_shapes():
    """Every tensor of a full-size SDXL refiner single file, name -> shape (no weights)."""
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import convert_ldm_unet_checkpoint

    refiner = dict(
        sample_size=128,
        block_out_channels=(384, 768, 1536, 1536),
        layers_per_block=2,
        down_block_types=UNET["down_block_types"],
        up_block_types=UNET["up_block_types"],
        transformer_layers_per_block=4,
        attention_head_dim=(6, 12, 24, 24),
        cross_attention_dim=1280,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2560,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**refiner)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        clip_g = CLIPTextModelWithProjection(
            CLIPTextConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=20,
                hidden_act="gelu",
                projection_dim=1280,
            )
        )
    sd = unet.state_dict()
    tagged = {k: torch.full((1,), float(i)) for i, k in enumerate(sd)}
    ldm = sdxl_unet_to_ldm(tagged, 2, CROSS)
    back = convert_ldm_unet_checkpoint(
        dict(ldm), dict(layers_per_block=2, class_embed_type=None, addition_embed_type="text_time")
    )
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:10]
    assert all(torch.equal(back[k].flatten()[:1], tagged[k]) for k in sd)
    names = list(sd)
    shapes = {k: list(sd[names[int(t.flatten()[0].item())]].shape) for k, t in ldm.items()}
    # ComfyUI's refiner: 4 transformers in the middle block and in levels 1 and 2, none else.
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == [1536, 2560]
    assert "model.diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight" in shapes
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in shapes)
    assert not any(k.startswith("model.diffusion_model.input_blocks.10.1.") for k in shapes)
    meta = lambda m: {k: torch.empty(v.shape, device="meta") for k, v in m.state_dict().items()}  # noqa: E731
    shapes.update({k: list(v.shape) for k, v in vae_to_ldm(meta(vae), 4).items()})
    g = {(k if k.startswith(CLIP_PREFIX) or k.startswith("text_projection") else CLIP_PREFIX + k): v
         for k, v in meta(clip_g).items() if not k.endswith("position_ids")}
    for k, v in to_embedder_0(clip_g_to_open_clip(g, 32)).items():
        shapes[k] = list(v.shape)
    with open(SHAPES, "w") as f:
        json.dump(dict(sorted(shapes.items())), f, separators=(",", ":"))
    print(f"{len(shapes)} full-size SDXL refiner tensors -> {os.path.normpath(SHAPES)}")


def to_embedder_0(open_clip):
    """The base's bigG names (conditioner.embedders.1.model.*) at the refiner's index 0."""
    base, refiner = "conditioner.embedders.1.model.", "conditioner.embedders.0.model."
    return {refiner + k[len(base):]: v for k, v in open_clip.items()}


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2718)

    unet = round_to_fp16(UNet2DConditionModel(**UNET).eval())
    vae = round_to_fp16(
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=32,
            **VAE,
        ).eval()
    )
    clip_g = round_to_fp16(CLIPTextModelWithProjection(clip_config(CLIP_G, projection=True)).eval())
    # The UNet's config only: its weights are in the single file (loaded with this config).
    with open(os.path.join(ROOT, "unet_config.json"), "w") as f:
        json.dump(unet_config_json(unet), f, indent=1, default=list)

    single = {}
    single.update(sdxl_unet_to_ldm(half_state_dict(unet), UNET["layers_per_block"], CROSS))
    single.update(vae_to_ldm(half_state_dict(vae), len(VAE["block_out_channels"])))
    g_sd = {
        (k if k.startswith(CLIP_PREFIX) or k.startswith("text_projection") else CLIP_PREFIX + k): v
        for k, v in half_state_dict(clip_g).items()
    }
    single.update(to_embedder_0(clip_g_to_open_clip(g_sd, CLIP_G["layers"])))
    # No CLIP-L embedder (conditioner.embedders.N.transformer.*): bigG alone.
    assert not any(k.split(".")[3] == "transformer" for k in single if k.startswith("conditioner."))
    save_file({k: t.contiguous() for k, t in single.items()}, os.path.join(ROOT, "single.safetensors"))

    io = {}
    sample = torch.randn(2, 4, 16, 16, generator=g)
    timestep = torch.tensor([901.0, 7.0])
    context = torch.randn(2, 9, CLIP_G["hidden_size"], generator=g)
    pooled = torch.randn(2, CLIP_G["projection_dim"], generator=g)
    # The refiner's ids: height, width, crop top, crop left, aesthetic score.
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 6.0], [512.0, 640.0, 8.0, 0.0, 2.5]])
    with torch.no_grad():
        out = unet(sample, timestep, encoder_hidden_states=context,
                   added_cond_kwargs=dict(text_embeds=pooled, time_ids=time_ids)).sample
        # diffusers' own add_time_proj equals ComfyUI's Timestep embedder on these ids.
        diffusers_adm = torch.cat(
            [pooled, unet.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=1
        )
    comfy = [comfy_refiner_adm(pooled[i:i + 1], *time_ids[i].tolist()) for i in range(2)]
    assert torch.allclose(torch.cat(comfy), diffusers_adm, atol=1e-6), (torch.cat(comfy) - diffusers_adm).abs().max()
    io.update({
        "unet.sample": sample, "unet.timestep": timestep, "unet.context": context,
        "unet.pooled": pooled, "unet.time_ids": time_ids, "unet.out": out,
    })
    # ComfyUI's vectors: CLIPTextEncodeSDXLRefiner's ascore/width/height, and a plain
    # CLIPTextEncode's (no sizes: the latent's pixels, 64 x 96 here; default scores).
    one = pooled[:1].clone()
    io["adm.node"] = comfy_refiner_adm(one, 1024.0, 768.0, 0.0, 0.0, 7.25)
    io["adm.positive_default"] = comfy_refiner_adm(one, 64.0, 96.0, 0.0, 0.0, 6.0)
    io["adm.negative_default"] = comfy_refiner_adm(one, 64.0, 96.0, 0.0, 0.0, 2.5)
    io["adm.pooled"] = one
    save_file({k: t.contiguous().float() for k, t in io.items()}, os.path.join(ROOT, "io.safetensors"))
    print("unet out std", out.std().item())
    write_full_size_shapes()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"fixtures: {total / 1e6:.2f} MB under {os.path.normpath(ROOT)}")


if __name__ == "__main__":
    main()
