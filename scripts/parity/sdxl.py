"""Parity fixtures for SDXL's UNet / VAE / checkpoint loading and sampling (weft-nodes).

Builds a tiny random-weight SDXL-architecture pipeline in diffusers: a UNet2DConditionModel with
addition_embed_type="text_time" (pooled text + 6 size/crop ids), a first level without
attention, per-level transformer_layers_per_block, linear projections; an AutoencoderKL with
scaling_factor 0.13025; and two tiny text towers (transformers CLIPTextModel and
CLIPTextModelWithProjection, the CLIP-L and OpenCLIP-bigG roles). Writes under
nodes/tests/fixtures/sdxl/:

  diffusers/          the diffusers folder layout (unet/, vae/, text_encoder/, text_encoder_2/,
                      scheduler/), fp16 weights
  single.safetensors  the same weights in the SDXL single-file layout (model.diffusion_model.*
                      with label_emb.0.{0,2}, first_stage_model.*,
                      conditioner.embedders.0.transformer.* (HF names),
                      conditioner.embedders.1.model.* (open_clip names, fused in_proj,
                      text_projection as x @ W)), converted below
  io.safetensors      inputs and reference outputs (fp32): UNet forward with added conditioning,
                      VAE decode, and StableDiffusionXLPipeline latent trajectories (euler,
                      dpmpp_2m) from given prompt embeddings, in k-diffusion space

and test-support/data/sdxl_ldm_shapes.json: every tensor name and shape of a full-size SDXL base
single-file checkpoint (the UNet names checked against diffusers' own LDM converter), for
examples/write_sdxl_checkpoint.rs and the key-map test.

Weights are rounded to fp16 before the reference runs, so the reference is computed in fp32 on
exactly the stored values.

Run: .venv/bin/python scripts/parity/sdxl.py
"""

import json
import os
import shutil
import sys

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(__file__))
from unet_vae import (  # noqa: E402  (the SD converters, shared)
    CLIP_PREFIX,
    half_state_dict,
    round_to_fp16,
    save_component,
    unet_config_json,
    unet_to_ldm,
    vae_to_ldm,
)

HERE = os.path.dirname(__file__)
ROOT = os.path.join(HERE, "..", "..", "nodes", "tests", "fixtures", "sdxl")
SHAPES = os.path.join(HERE, "..", "..", "test-support", "data", "sdxl_ldm_shapes.json")

UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(8, 16, 32),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(2, 2, 4),
    norm_num_groups=4,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
)
CLIP_L = dict(hidden_size=32, layers=2, act="quick_gelu")
CLIP_G = dict(hidden_size=48, layers=3, act="gelu", projection_dim=16)
CONTEXT = CLIP_L["hidden_size"] + CLIP_G["hidden_size"]
UNET.update(
    cross_attention_dim=CONTEXT,
    projection_class_embeddings_input_dim=CLIP_G["projection_dim"] + 6 * UNET["addition_time_embed_dim"],
)
VAE = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, scaling_factor=0.13025)
SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
STEPS = 6
CFG = 5.0
# Image side in pixels: the tiny VAE downsamples by 2, so the latents are 8 x 8.
SIZE = 16


def sdxl_unet_to_ldm(sd, layers_per_block, cross):
    """The SD UNet converter plus SDXL's added-conditioning MLP (label_emb.0.{0,2})."""
    added = {k: v for k, v in sd.items() if k.startswith("add_embedding.")}
    out = unet_to_ldm({k: v for k, v in sd.items() if k not in added}, layers_per_block, cross)
    for k, v in added.items():
        layer = {"linear_1": "0", "linear_2": "2"}[k.split(".")[1]]
        out[f"model.diffusion_model.label_emb.0.{layer}.{k.split('.')[-1]}"] = v
    return out


def clip_g_to_open_clip(sd, num_layers):
    """CLIPTextModelWithProjection names -> open_clip text tower (conditioner.embedders.1.model.*):
    fused in_proj, text_projection stored as the matrix of x @ W (the Linear weight transposed)."""
    pre = "conditioner.embedders.1.model."
    out = {
        pre + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        pre + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        pre + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        pre + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        pre + "text_projection": sd["text_projection.weight"].t().contiguous(),
        pre + "logit_scale": torch.tensor(4.6).half(),
    }
    for i in range(num_layers):
        src = f"text_model.encoder.layers.{i}."
        dst = f"{pre}transformer.resblocks.{i}."
        for a, b in [
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("attn.out_proj", "self_attn.out_proj"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ]:
            for leaf in ("weight", "bias"):
                out[f"{dst}{a}.{leaf}"] = sd[f"{src}{b}.{leaf}"]
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat([sd[f"{src}self_attn.{p}_proj.{leaf}"] for p in "qkv"], 0)
    return out


def clip_config(spec, projection=False):
    hidden = spec["hidden_size"]
    cfg = dict(
        vocab_size=99,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=spec["act"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=1,
    )
    if projection:
        cfg["projection_dim"] = spec["projection_dim"]
    return CLIPTextConfig(**cfg)


def trajectories(pipe, embeds, g):
    """Whole-pipeline runs (StableDiffusionXLPipeline, output_type latent) from given prompt
    embeddings: the latents before the first step and after each, in k-diffusion space
    (x = x0 + sigma * eps; the DPM-Solver works in variance-preserving space, x_vp = x /
    sqrt(1 + sigma^2)), with the sigmas the scheduler stepped through. Both schedules step on
    whole training timesteps (SDXL's own "leading" spacing for Euler), so the model sees the
    same timesteps in weft's sigma -> timestep inversion."""
    cases = {
        "euler": (EulerDiscreteScheduler(**SCHEDULE, timestep_spacing="leading", steps_offset=1), False),
        "dpmpp_2m": (
            DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="dpmsolver++", solver_order=2),
            True,
        ),
    }
    out, meta = {}, {}
    start = torch.randn(1, 4, 8, 8, generator=g)
    out["start"] = start
    for name, (scheduler, vp) in cases.items():
        pipe.scheduler = scheduler
        latents = []

        def on_step(p, i, t, kw):
            latents.append(kw["latents"].clone())
            return kw

        pipe(
            prompt_embeds=embeds["positive"],
            negative_prompt_embeds=embeds["negative"],
            pooled_prompt_embeds=embeds["pooled"],
            negative_pooled_prompt_embeds=embeds["negative_pooled"],
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            latents=start.clone(),  # the pipeline multiplies by init_noise_sigma
            height=SIZE,
            width=SIZE,
            output_type="latent",
            callback_on_step_end=on_step,
        )
        sigmas = [float(s) for s in scheduler.sigmas]
        timesteps = [float(t) for t in scheduler.timesteps]
        assert len(sigmas) == STEPS + 1 and len(latents) == STEPS, (name, len(sigmas), len(latents))
        k = lambda x, s: x * (1.0 + s * s) ** 0.5 if vp else x  # noqa: E731
        traj = [start * (1.0 + sigmas[0] ** 2) ** 0.5] + [k(x, s) for x, s in zip(latents, sigmas[1:])]
        out[f"{name}.trajectory"] = torch.stack([x[0] for x in traj])
        meta[name] = dict(sigmas=sigmas, timesteps=timesteps)
    return out, meta


def write_full_size_shapes():
    """Every tensor of a full-size SDXL base single file, name -> shape (no weights)."""
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import convert_ldm_unet_checkpoint

    base = dict(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**base)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        clip_l = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
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
    ldm = sdxl_unet_to_ldm(tagged, 2, [False, True, True])
    back = convert_ldm_unet_checkpoint(
        dict(ldm), dict(layers_per_block=2, class_embed_type=None, addition_embed_type="text_time")
    )
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:10]
    assert all(torch.equal(back[k].flatten()[:1], tagged[k]) for k in sd)
    names = list(sd)
    shapes = {k: list(sd[names[int(t.flatten()[0].item())]].shape) for k, t in ldm.items()}
    meta = lambda m: {k: torch.empty(v.shape, device="meta") for k, v in m.state_dict().items()}  # noqa: E731
    shapes.update({k: list(v.shape) for k, v in vae_to_ldm(meta(vae), 4).items()})
    for k, v in meta(clip_l).items():
        if not k.endswith("position_ids"):
            name = k if k.startswith(CLIP_PREFIX) else CLIP_PREFIX + k
            shapes["conditioner.embedders.0.transformer." + name] = list(v.shape)
    g = {(k if k.startswith(CLIP_PREFIX) or k.startswith("text_projection") else CLIP_PREFIX + k): v
         for k, v in meta(clip_g).items() if not k.endswith("position_ids")}
    for k, v in clip_g_to_open_clip(g, 32).items():
        shapes[k] = list(v.shape)
    with open(SHAPES, "w") as f:
        json.dump(dict(sorted(shapes.items())), f, separators=(",", ":"))
    print(f"{len(shapes)} full-size SDXL tensors -> {os.path.normpath(SHAPES)}")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4321)

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
    l_cfg, g_cfg = clip_config(CLIP_L), clip_config(CLIP_G, projection=True)
    clip_l = round_to_fp16(CLIPTextModel(l_cfg).eval())
    clip_g = round_to_fp16(CLIPTextModelWithProjection(g_cfg).eval())

    folder = os.path.join(ROOT, "diffusers")
    save_component(folder, "unet", unet, "diffusion_pytorch_model.safetensors", unet_config_json(unet))
    save_component(folder, "vae", vae, "diffusion_pytorch_model.safetensors", unet_config_json(vae))
    save_component(folder, "text_encoder", clip_l, "model.safetensors", l_cfg.to_dict(), CLIP_PREFIX)
    g_sd = {
        (k if k.startswith(CLIP_PREFIX) or k.startswith("text_projection") else CLIP_PREFIX + k): v
        for k, v in half_state_dict(clip_g).items()
    }
    os.makedirs(os.path.join(folder, "text_encoder_2"), exist_ok=True)
    save_file(g_sd, os.path.join(folder, "text_encoder_2", "model.safetensors"))
    with open(os.path.join(folder, "text_encoder_2", "config.json"), "w") as f:
        json.dump(g_cfg.to_dict(), f, indent=1)
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon", **SCHEDULE}, f, indent=1)

    single = {}
    single.update(sdxl_unet_to_ldm(half_state_dict(unet), UNET["layers_per_block"], [False, True, True]))
    single.update(vae_to_ldm(half_state_dict(vae), len(VAE["block_out_channels"])))
    for k, v in half_state_dict(clip_l, CLIP_PREFIX).items():
        single["conditioner.embedders.0.transformer." + k] = v
    single.update(clip_g_to_open_clip(g_sd, CLIP_G["layers"]))
    save_file({k: t.contiguous() for k, t in single.items()}, os.path.join(ROOT, "single.safetensors"))

    # UNet forward with the added conditioning, diffusers' call.
    io = {}
    sample = torch.randn(2, 4, 16, 16, generator=g)
    timestep = torch.tensor([901.0, 7.0])
    context = torch.randn(2, 9, CONTEXT, generator=g)
    text_embeds = torch.randn(2, CLIP_G["projection_dim"], generator=g)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0], [512.0, 512.0, 8.0, 0.0, 640.0, 384.0]])
    latents = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        out = unet(sample, timestep, encoder_hidden_states=context,
                   added_cond_kwargs=dict(text_embeds=text_embeds, time_ids=time_ids)).sample
        decoded = vae.decode(latents).sample
    io.update({
        "unet.sample": sample, "unet.timestep": timestep, "unet.context": context,
        "unet.text_embeds": text_embeds, "unet.time_ids": time_ids, "unet.out": out,
        "vae.latents": latents, "vae.decoded": decoded,
    })

    # The whole pipeline from given prompt embeddings (the text towers are tested elsewhere).
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=clip_l, text_encoder_2=clip_g, tokenizer=None, tokenizer_2=None,
        unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULE),
    )
    pipe.set_progress_bar_config(disable=True)
    embeds = {
        "positive": torch.randn(1, 7, CONTEXT, generator=g),
        "negative": torch.randn(1, 7, CONTEXT, generator=g),
        "pooled": torch.randn(1, CLIP_G["projection_dim"], generator=g),
        "negative_pooled": torch.randn(1, CLIP_G["projection_dim"], generator=g),
    }
    with torch.no_grad():
        traj, meta = trajectories(pipe, embeds, g)
    io.update({f"pipeline.{k}": v for k, v in embeds.items()})
    io.update({f"pipeline.{k}": v for k, v in traj.items()})
    meta.update(cfg=CFG, steps=STEPS, height=SIZE, width=SIZE)
    with open(os.path.join(ROOT, "pipeline.json"), "w") as f:
        json.dump(meta, f, indent=1)

    save_file({k: t.contiguous().float() for k, t in io.items()}, os.path.join(ROOT, "io.safetensors"))
    print("unet out std", out.std().item(), "decoded std", decoded.std().item())
    write_full_size_shapes()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"fixtures: {total / 1e6:.2f} MB under {os.path.normpath(ROOT)}")


if __name__ == "__main__":
    main()
