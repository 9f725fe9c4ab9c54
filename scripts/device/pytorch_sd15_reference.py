#!/usr/bin/env python3
"""PyTorch's figures for the SD1.5 shape, to set beside weft's in the same device call.

diffusers' UNet2DConditionModel and AutoencoderKL with the SD1.5 configs and random weights
(the shape of shared/bench/sd15_pytorch_baseline.py and sd15_cuda_graphs.py), fp16 on CUDA:
  - the UNet step, batch 2 (classifier-free guidance), 64x64 latent: eager, eager with
    channels_last, and a CUDA-graph replay of the same call (static inputs);
  - the VAE decode of a 512x512 and a 1024x1024 image;
  - "txt2img 512, 20 steps, eager": 20 eager steps + one decode, what the end-to-end goal is
    measured against.
Prints one JSON object. Needs torch with CUDA and diffusers (carried as a wheel).
    python3 pytorch_sd15_reference.py [--steps 20] [--repeat 20]
"""
import argparse
import json
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
VAE = dict(
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
    sample_size=512,
)


def mean_ms(call, repeat, warmup=3):
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    dev, dt = "cuda", torch.float16
    torch.manual_seed(0)
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    unet = UNet2DConditionModel(**UNET).to(dev, dt).eval()
    vae = AutoencoderKL(**VAE).to(dev, dt).eval()
    x = torch.randn(2, 4, 64, 64, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, 768, device=dev, dtype=dt)
    t = torch.tensor([500.0, 500.0], device=dev)
    with torch.inference_mode():
        eager = mean_ms(lambda: unet(x, t, encoder_hidden_states=ctx).sample, args.repeat)
        out["unet_step_ms_eager"] = eager
        decode_512 = mean_ms(
            lambda: vae.decode(torch.randn(1, 4, 64, 64, device=dev, dtype=dt)).sample, 10)
        out["vae_decode_ms_512"] = decode_512
        out["vae_decode_ms_1024"] = mean_ms(
            lambda: vae.decode(torch.randn(1, 4, 128, 128, device=dev, dtype=dt)).sample, 5)
        x1024 = torch.randn(2, 4, 128, 128, device=dev, dtype=dt)
        out["unet_step_ms_eager_1024"] = mean_ms(
            lambda: unet(x1024, t, encoder_hidden_states=ctx).sample, max(args.repeat // 2, 3))
        out[f"txt2img_512_{args.steps}_steps_eager_ms"] = args.steps * eager + decode_512
        unet_cl = unet.to(memory_format=torch.channels_last)
        out["unet_step_ms_channels_last"] = mean_ms(
            lambda: unet_cl(x, t, encoder_hidden_states=ctx).sample, args.repeat)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                unet_cl(x, t, encoder_hidden_states=ctx)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            unet_cl(x, t, encoder_hidden_states=ctx)
        out["unet_step_ms_cuda_graph"] = mean_ms(graph.replay, args.repeat)
    out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out))


if __name__ == "__main__":
    main()
