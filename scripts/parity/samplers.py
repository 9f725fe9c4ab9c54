"""Parity fixtures for weft's samplers, sigma schedules and seeded noise.

Runs diffusers' schedulers (Euler, Euler ancestral, Heun, DDIM, DPM-Solver++ 2M, SDE-DPM-Solver++ 2M,
LCM) for 10 steps with classifier-free guidance around a small analytic epsilon model, and writes
the sigmas, model timesteps, per-step noise and whole latent trajectories (in k-diffusion space:
x / sqrt(alpha_cumprod)) to nodes/tests/fixtures/samplers/. Also writes `torch.manual_seed(seed);
torch.randn(shape)` for a few seeds and shapes (ComfyUI's prepare_noise) to check weft's noise.rs.

The analytic model stands in for a UNet (none exists in weft yet); nodes/tests/samplers_parity.rs
implements the same formula. The Rust samplers only see a denoiser, so a UNet drops in later.

Run: .venv/bin/python scripts/parity/samplers.py
"""

import json
import math
import os

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
)
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "nodes", "tests", "fixtures", "samplers")
STEPS = 10
CFG = 7.5
SEED = 1234
SHAPE = (2, 4, 8, 8)
MASK64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def step_seed(seed: int, step: int) -> int:
    """Seed of the step noise given to diffusers' stochastic schedulers here (weft's tests pass
    the same noise as fixed noise; weft's seeded step noise is ComfyUI's, see comfy_samplers.py)."""
    return splitmix64(seed ^ (((step + 1) * 0xD1B54A32D192ED03) & MASK64))


def analytic_eps(x_in, t, context, prediction):
    """The stand-in model: elementwise in x, linear in t, one scalar per batch item from context."""
    ctx = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    t = t.view(-1, 1, 1, 1) if torch.is_tensor(t) and t.ndim > 0 else t
    out = 0.8 * x_in + 0.1 * torch.sin(3.0 * x_in) + 0.05 * (t / 1000.0) + 0.2 * ctx
    if prediction == "v_prediction":
        out = out - 0.3 * x_in
    return out


def guided(x_in, t, uncond, cond, prediction):
    batch = x_in.shape[0]
    model_in = torch.cat([x_in, x_in])
    ctx = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
    t_batch = torch.full((2 * batch,), float(t), dtype=torch.float32)
    out = analytic_eps(model_in, t_batch, ctx, prediction)
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + CFG * (out_cond - out_uncond)


COMMON = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

CASES = [
    # name, sampler, scheduler factory, quantized timesteps, prediction
    ("euler_normal", "euler", lambda: EulerDiscreteScheduler(**COMMON, timestep_spacing="linspace"), False, "epsilon"),
    (
        "euler_karras",
        "euler",
        lambda: EulerDiscreteScheduler(**COMMON, timestep_spacing="linspace", use_karras_sigmas=True),
        False,
        "epsilon",
    ),
    (
        "euler_v_normal",
        "euler",
        lambda: EulerDiscreteScheduler(**COMMON, timestep_spacing="linspace", prediction_type="v_prediction"),
        False,
        "v_prediction",
    ),
    (
        "euler_ancestral_normal",
        "euler_ancestral",
        lambda: EulerAncestralDiscreteScheduler(**COMMON, timestep_spacing="linspace"),
        False,
        "epsilon",
    ),
    ("heun_normal", "heun", lambda: HeunDiscreteScheduler(**COMMON, timestep_spacing="linspace"), False, "epsilon"),
    (
        "heun_karras",
        "heun",
        lambda: HeunDiscreteScheduler(**COMMON, timestep_spacing="linspace", use_karras_sigmas=True),
        False,
        "epsilon",
    ),
    (
        "ddim_uniform",
        "ddim",
        lambda: DDIMScheduler(
            **COMMON, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=True, clip_sample=False
        ),
        False,
        "epsilon",
    ),
    (
        "dpmpp_2m_linspace",
        "dpmpp_2m",
        lambda: DPMSolverMultistepScheduler(**COMMON, algorithm_type="dpmsolver++", solver_order=2),
        False,
        "epsilon",
    ),
    (
        "dpmpp_2m_karras",
        "dpmpp_2m",
        lambda: DPMSolverMultistepScheduler(
            **COMMON, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        ),
        True,
        "epsilon",
    ),
    (
        "dpmpp_2m_sde_linspace",
        "dpmpp_2m_sde",
        lambda: DPMSolverMultistepScheduler(**COMMON, algorithm_type="sde-dpmsolver++", solver_order=2),
        False,
        "epsilon",
    ),
    (
        "dpmpp_2m_sde_karras",
        "dpmpp_2m_sde",
        lambda: DPMSolverMultistepScheduler(
            **COMMON, algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=True
        ),
        True,
        "epsilon",
    ),
    ("lcm", "lcm", lambda: LCMScheduler(**COMMON), False, "epsilon"),
]

# Schedulers that keep x in variance-preserving form (x_vp = x_k * sqrt(alpha_cumprod)).
VP_SAMPLERS = {"ddim", "dpmpp_2m", "dpmpp_2m_sde", "lcm"}


def sigma_of_alpha_cumprod(ac):
    return math.sqrt((1.0 - ac) / ac)


def run_case(name, sampler, make, quantized, prediction, noise, uncond, cond):
    sched = make()
    sched.set_timesteps(STEPS)
    vp = sampler in VP_SAMPLERS
    if sampler == "heun":
        # Heun repeats inner sigmas/timesteps for its second evaluation; keep one of each.
        sigmas = [float(sched.sigmas[0])] + [float(s) for s in sched.sigmas[1::2]]
        timesteps = [float(t) for t in sched.timesteps[0::2]]
    elif sampler == "ddim" or sampler == "lcm":
        ac = sched.alphas_cumprod
        timesteps = [float(t) for t in sched.timesteps]
        sigmas = [sigma_of_alpha_cumprod(float(ac[int(t)])) for t in sched.timesteps] + [0.0]
    else:
        sigmas = [float(s) for s in sched.sigmas]
        timesteps = [float(t) for t in sched.timesteps]
    assert len(sigmas) == STEPS + 1, (name, len(sigmas))
    assert len(timesteps) == STEPS, (name, timesteps)

    x_k = noise * math.sqrt(1.0 + sigmas[0] ** 2)
    x = x_k / math.sqrt(1.0 + sigmas[0] ** 2) if vp else x_k.clone()
    trajectory = [x_k.clone()]
    step_noise = []
    done = 0
    for index, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)
        model_out = guided(x_in, t, uncond, cond, prediction)
        if sampler == "heun":
            x = sched.step(model_out, t, x).prev_sample
            # A full Heun step ends after its second evaluation; the last step (to sigma 0) has one.
            if not sched.state_in_first_order and index != len(sched.timesteps) - 1:
                continue
        else:
            generator = torch.Generator().manual_seed(step_seed(SEED, done))
            x = sched.step(model_out, t, x, generator=generator).prev_sample
        step_noise.append(torch.randn(SHAPE, generator=torch.Generator().manual_seed(step_seed(SEED, done))))
        done += 1
        scale = math.sqrt(1.0 + sigmas[done] ** 2) if vp else 1.0
        trajectory.append(x * scale)
    assert done == STEPS
    tensors = {
        f"{name}.trajectory": torch.stack(trajectory).float().contiguous(),
    }
    meta = dict(sampler=sampler, sigmas=sigmas, timesteps=timesteps, quantized=quantized, prediction=prediction)
    return tensors, meta, torch.stack(step_noise)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    noise = torch.randn(SHAPE)
    uncond = torch.randn(1, 4, 32) * 0.5
    cond = torch.randn(1, 4, 32) * 0.5 + 0.3

    tensors = {"noise": noise, "uncond": uncond, "cond": cond}
    cases = {}
    step_noise = None
    for name, sampler, make, quantized, prediction in CASES:
        case_tensors, meta, noise_used = run_case(name, sampler, make, quantized, prediction, noise, uncond, cond)
        tensors.update(case_tensors)
        cases[name] = meta
        step_noise = noise_used
    tensors["step_noise"] = step_noise.contiguous()

    # ComfyUI's prepare_noise: torch.manual_seed(seed); torch.randn(shape) on the CPU.
    initial = []
    for i, (seed, shape) in enumerate(
        [(0, [1, 4, 8, 8]), (42, [2, 4, 16, 16]), (2**32 + 7, [1, 4, 3, 5]), (2**63 + 5, [3]), (123456789, [1, 4, 9, 7])]
    ):
        torch.manual_seed(seed)
        tensors[f"initial_noise.{i}"] = torch.randn(shape)
        initial.append(dict(seed=seed, shape=shape))

    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "samplers.safetensors"))

    # Reference schedules of the SD discrete schedule (float64 numpy, ComfyUI's definitions).
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    train_sigmas = np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)
    meta = dict(
        steps=STEPS,
        cfg=CFG,
        seed=SEED,
        shape=list(SHAPE),
        cases=cases,
        initial_noise=initial,
        train_sigmas_scaled_linear=[float(s) for s in train_sigmas],
    )
    with open(os.path.join(OUT, "samplers.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT, "cases:", ", ".join(cases))


if __name__ == "__main__":
    main()
