"""Parity fixtures for weft's ComfyUI samplers, schedulers and step noise, made by running
ComfyUI's own code from a ComfyUI checkout (not vendored; pass its folder):

  .venv/bin/python scripts/parity/comfy_samplers.py /path/to/ComfyUI

Loads comfy/k_diffusion/sampling.py, comfy/extra_samplers/uni_pc.py (and what they import) and
the scheduler functions of comfy/samplers.py without importing the rest of ComfyUI: the few
modules they touch but do not need (model patcher, latent formats) are replaced by stubs here.
Then, for every sampler weft implements and two schedulers, it samples 10 steps with CFG 7.5
around the analytic epsilon model of scripts/parity/samplers.py (in float64, so that the
comparison measures the algorithms, not float32 rounding), with the step noise ComfyUI draws
on the CPU for the seed in float32 (its default_noise_sampler and BrownianTreeNoiseSampler,
called on float32 copies), and writes the trajectories to nodes/tests/fixtures/comfy_samplers/.
Also writes KSampler.calculate_sigmas for all schedulers, torchsde BrownianTree increments,
numpy SeedSequence states and the first default_noise_sampler draws.
"""

import ast
import json
import os
import sys
import types
from functools import partial
from typing import Callable, NamedTuple

import math
import numpy as np
import scipy
import scipy.stats
import torch
import torchsde
from safetensors.torch import save_file

OUT = os.environ.get("WEFT_FIXTURE_OUT") or os.path.join(
    os.path.dirname(__file__), "..", "..", "nodes", "tests", "fixtures", "comfy_samplers")
STEPS = 10
CFG = 7.5
SEED = 1234
SHAPE = (1, 4, 4, 4)

# weft's samplers, in ComfyUI's menu order (SamplerKind::NAMES): all of ComfyUI's but the
# `_gpu` variants, which weft's importer maps to the plain ones.
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
    "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
    "ddim", "uni_pc", "uni_pc_bh2",
]
# Samplers whose callback does not see each sigma's input latent (their own step grids, or
# the first input at every step, or VP-space latents): only the start and the result are
# compared.
ENDS_ONLY = ["dpm_fast", "dpm_adaptive", "ipndm", "ipndm_v", "deis", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["karras", "normal"]


def functions_from(path, names, namespace):
    """Executes the top-level definitions `names` of a Python file into `namespace`."""
    tree = ast.parse(open(path).read(), path)
    picked = [node for node in tree.body if getattr(node, "name", None) in names
              or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))]
    missing = set(names) - {getattr(n, "name", None) for n in picked} - {
        t.id for n in picked if isinstance(n, ast.Assign) for t in n.targets}
    if missing:
        raise SystemExit(f"{path}: not found: {sorted(missing)}")
    exec(compile(ast.Module(body=picked, type_ignores=[]), path, "exec"), namespace)
    return namespace


def load_comfy(root):
    sys.path.insert(0, root)
    # comfy.model_sampling imports make_beta_schedule from a module with heavy imports: take
    # just that function.
    util = types.ModuleType("comfy.ldm.modules.diffusionmodules.util")
    util.__dict__.update({"torch": torch, "np": np, "math": math})
    functions_from(os.path.join(root, "comfy/ldm/modules/diffusionmodules/util.py"),
                   {"make_beta_schedule"}, util.__dict__)
    for name in ["comfy.ldm", "comfy.ldm.modules", "comfy.ldm.modules.diffusionmodules"]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[util.__name__] = util

    # The sampling code only uses the model patcher to install a post-CFG hook.
    patcher = types.ModuleType("comfy.model_patcher")

    def set_model_options_post_cfg_function(model_options, post_cfg_function, disable_cfg1_optimization=False):
        model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [post_cfg_function]
        if disable_cfg1_optimization:
            model_options["disable_cfg1_optimization"] = True
        return model_options

    patcher.set_model_options_post_cfg_function = set_model_options_post_cfg_function
    sys.modules["comfy.model_patcher"] = patcher
    # Newer sampling.py files take their progress bar from comfy.utils (heavy imports).
    for name in ["comfy.utils", "comfy.memory_management"]:
        stub = types.ModuleType(name)
        stub.model_trange = lambda *a, disable=None, **k: range(*a)
        sys.modules[name] = stub

    import comfy
    import comfy.model_sampling as model_sampling

    comfy.model_patcher = patcher  # the package attribute `comfy.model_patcher.…` resolves to
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.extra_samplers.uni_pc as uni_pc

    samplers_ns = {"torch": torch, "math": math, "numpy": numpy_module(), "scipy": scipy,
                   "k_diffusion_sampling": k_sampling, "NamedTuple": NamedTuple,
                   "Callable": Callable, "partial": partial, "logging": __import__("logging")}
    functions_from(os.path.join(root, "comfy/samplers.py"), {
        "simple_scheduler", "ddim_scheduler", "normal_scheduler", "beta_scheduler",
        "linear_quadratic_schedule", "kl_optimal_scheduler", "SchedulerHandler",
        "SCHEDULER_HANDLERS", "SCHEDULER_NAMES", "calculate_sigmas", "KSAMPLER_NAMES",
        "SAMPLER_NAMES", "KSampler",
    }, samplers_ns)
    return model_sampling, k_sampling, uni_pc, samplers_ns


def numpy_module():
    return np


def analytic_eps(x_in, t, context):
    """The stand-in model of scripts/parity/samplers.py (epsilon prediction)."""
    ctx = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    t = t.view(-1, 1, 1, 1).to(x_in.dtype)
    return 0.8 * x_in + 0.1 * torch.sin(3.0 * x_in) + 0.05 * (t / 1000.0) + 0.2 * ctx


class GuidedModel:
    """What ComfyUI's sampler functions call: denoised = CFG of the model's x0 predictions,
    then the sampler's post-CFG hooks (how CFG++ samplers read the unconditional x0)."""

    def __init__(self, model_sampling, cond, uncond):
        self.ms = model_sampling
        self.cond, self.uncond = cond, uncond
        # model.inner_model.inner_model.model_sampling and model.inner_model.model_patcher.
        self.inner_model = types.SimpleNamespace(
            inner_model=types.SimpleNamespace(model_sampling=model_sampling),
            model_patcher=types.SimpleNamespace(get_model_object=lambda name: model_sampling))

    def __call__(self, x, sigma, model_options={}, seed=None, **kwargs):
        x_in = self.ms.calculate_input(sigma, x)
        t = self.ms.timestep(sigma)
        preds = []
        for ctx in (self.cond, self.uncond):
            eps = analytic_eps(x_in, t, ctx.to(x.dtype).expand(x.shape[0], -1, -1))
            preds.append(self.ms.calculate_denoised(sigma, eps, x))
        cond_pred, uncond_pred = preds
        denoised = uncond_pred + (cond_pred - uncond_pred) * CFG
        for fn in model_options.get("sampler_post_cfg_function", []):
            denoised = fn({"denoised": denoised, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                           "cond_scale": CFG, "sigma": sigma, "input": x, "model_options": model_options})
        return denoised


def float32_noise_samplers(k_sampling):
    """Makes ComfyUI's noise samplers draw what they draw for a float32 latent on the CPU, and
    hand it over in float64 (the samplers run in float64 here)."""
    default_noise_sampler = k_sampling.default_noise_sampler
    brownian = k_sampling.BrownianTreeNoiseSampler

    def default_float32(x, seed=None):
        sampler = default_noise_sampler(x.float(), seed=seed)
        return lambda sigma, sigma_next: sampler(sigma, sigma_next).to(x.dtype)

    class BrownianFloat32:
        def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x, cpu=False):
            self.dtype = x.dtype
            self.inner = brownian(x.float(), sigma_min.float(), sigma_max.float(), seed=seed, cpu=cpu)

        def __call__(self, sigma, sigma_next):
            return self.inner(sigma.float(), sigma_next.float()).to(self.dtype)

    k_sampling.default_noise_sampler = default_float32
    k_sampling.BrownianTreeNoiseSampler = BrownianFloat32


def sampler_function(name, k_sampling, uni_pc):
    if name == "uni_pc":
        return uni_pc.sample_unipc
    if name == "uni_pc_bh2":
        return uni_pc.sample_unipc_bh2
    if name == "ddim":  # ComfyUI's ddim is k-diffusion's Euler
        return k_sampling.sample_euler
    if name in ("dpm_fast", "dpm_adaptive"):
        return partial(dpm_solver_function, getattr(k_sampling, f"sample_{name}"), name == "dpm_fast")
    return getattr(k_sampling, f"sample_{name}")


def dpm_solver_function(sample, fixed_steps, model, x, sigmas, extra_args=None, callback=None, disable=None):
    """How comfy/samplers.py's ksampler() calls sample_dpm_fast / sample_dpm_adaptive: from
    sigmas[0] to the last sigma above 0, in len(sigmas) - 1 model calls (fast) or as many as
    its error control takes (adaptive)."""
    sigma_min = sigmas[-1]
    if sigma_min == 0:
        sigma_min = sigmas[-2]
    if fixed_steps:
        return sample(model, x, sigma_min, sigmas[0], len(sigmas) - 1, extra_args=extra_args,
                      callback=callback, disable=disable)
    return sample(model, x, sigma_min, sigmas[0], extra_args=extra_args, callback=callback, disable=disable)


def ksampler_sigmas(samplers_ns, model_sampling, sampler, scheduler, steps, denoise=1.0):
    """ComfyUI's KSampler(...).sigmas: the schedule, with the penultimate sigma discarded for
    dpm_2, dpm_2_ancestral, uni_pc and uni_pc_bh2, and the tail of a longer one for denoise < 1."""
    ks = object.__new__(samplers_ns["KSampler"])
    ks.model = types.SimpleNamespace(get_model_object=lambda name: model_sampling)
    ks.device = "cpu"
    ks.scheduler, ks.sampler = scheduler, sampler
    ks.set_steps(steps, denoise)
    return ks.sigmas


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("COMFYUI_DIR")
    if not root:
        raise SystemExit(__doc__)
    root = os.path.abspath(root)
    ms_module, k_sampling, uni_pc, samplers_ns = load_comfy(root)
    model_sampling = ms_module.ModelSamplingDiscrete()
    model_sampling.__class__ = type("EPSDiscrete", (ms_module.ModelSamplingDiscrete, ms_module.EPS), {})
    os.makedirs(OUT, exist_ok=True)
    tensors, meta = {}, {"steps": STEPS, "cfg": CFG, "seed": SEED, "shape": list(SHAPE),
                         "sampler_names": samplers_ns["SAMPLER_NAMES"],
                         "scheduler_names": samplers_ns["SCHEDULER_NAMES"]}

    # Schedules: KSampler.calculate_sigmas for every scheduler, plain and discarding, and denoise.
    schedules = []
    for scheduler in samplers_ns["SCHEDULER_NAMES"]:
        for steps in (1, 2, 7, 10, 25):
            for sampler, denoise in (("euler", 1.0), ("dpm_2", 1.0), ("euler", 0.6)):
                sigmas = ksampler_sigmas(samplers_ns, model_sampling, sampler, scheduler, steps, denoise)
                if torch.isnan(sigmas).any():
                    # kl_optimal of 1 step divides by zero in ComfyUI (weft gives [sigma_max, 0]).
                    continue
                schedules.append({"scheduler": scheduler, "steps": steps, "sampler": sampler,
                                  "denoise": denoise, "sigmas": [float(s) for s in sigmas]})
    meta["schedules"] = schedules

    # Step noise: default_noise_sampler's first draws and Brownian tree increments.
    x32 = torch.zeros(SHAPE)
    draw = k_sampling.default_noise_sampler(x32, seed=SEED)
    tensors["default_noise"] = torch.stack([draw(None, None) for _ in range(3)])
    brownian = []
    for i, (t0, t1, seed, shape, queries) in enumerate([
        (0.0291675, 14.614642, SEED, SHAPE, [(0.0291675, 14.614642), (5.5, 9.75), (1.0, 1.2), (0.03, 0.031)]),
        (0.1, 1.0, 0, (3, 5), [(0.2, 0.9), (0.1, 0.55), (0.55, 1.0)]),
        (0.002, 80.0, 2**40 + 7, (2, 3), [(0.002, 80.0), (17.25, 17.2501), (0.5, 40.0)]),
    ]):
        tree = torchsde.BrownianTree(torch.tensor(t0, dtype=torch.float32), torch.zeros(shape),
                                     torch.tensor(t1, dtype=torch.float32), entropy=seed)
        entry = {"t0": float(torch.tensor(t0, dtype=torch.float32)),
                 "t1": float(torch.tensor(t1, dtype=torch.float32)), "seed": seed,
                 "shape": list(shape), "queries": []}
        for j, (a, b) in enumerate(queries):
            a32, b32 = float(torch.tensor(a, dtype=torch.float32)), float(torch.tensor(b, dtype=torch.float32))
            tensors[f"brownian.{i}.{j}"] = tree(a32, b32)
            entry["queries"].append([a32, b32])
        brownian.append(entry)
    meta["brownian"] = brownian
    meta["seed_sequence"] = [
        {"entropy": e, "spawn_key": list(k), "pool_size": p,
         "state": [int(v) for v in np.random.SeedSequence(entropy=e, spawn_key=k, pool_size=p).generate_state(4)]}
        for e, k, p in [(0, (), 4), (SEED, (), 24), (SEED, (5, 3), 24), (2**40 + 7, (123456789, 27), 24),
                        (2**64 - 1, (0, 0), 24)]
    ]

    # Trajectories.
    float32_noise_samplers(k_sampling)
    gen = torch.Generator().manual_seed(99)
    cond = torch.randn(1, 3, 8, generator=gen)
    uncond = torch.randn(1, 3, 8, generator=gen)
    tensors["cond"], tensors["uncond"] = cond, uncond
    model = GuidedModel(model_sampling, cond, uncond)
    noise = torch.randn(SHAPE, generator=torch.manual_seed(SEED))  # ComfyUI's prepare_noise
    cases = {}
    for sampler in SAMPLERS:
        for scheduler in SCHEDULERS:
            dtype = torch.float64
            sigmas = ksampler_sigmas(samplers_ns, model_sampling, sampler, scheduler, STEPS).to(dtype)
            x = noise.to(dtype) * torch.sqrt(1.0 + sigmas[0] ** 2)  # EPS.noise_scaling, max denoise
            inputs = []
            callback = lambda d: inputs.append(d["x"].clone())
            fn = sampler_function(sampler, k_sampling, uni_pc)
            # uni_pc builds coefficient tensors with torch.tensor([...]) in the default dtype:
            # float64 while it runs in float64.
            torch.set_default_dtype(torch.float64 if sampler.startswith("uni_pc") else torch.float32)
            out = fn(model, x.clone(), sigmas.clone(), extra_args={"model_options": {}, "seed": SEED},
                     callback=callback, disable=True)
            torch.set_default_dtype(torch.float32)
            name = f"{sampler}.{scheduler}"
            # k-diffusion's callback sees each step's input latent, so the trajectory is those
            # inputs, then the result (ENDS_ONLY: the start and the result).
            if sampler in ENDS_ONLY:
                trajectory = [x, out]
            else:
                assert len(inputs) == len(sigmas) - 1, (name, len(inputs))
                trajectory = inputs + [out]
            tensors[f"{name}.trajectory"] = torch.stack(trajectory)
            cases[name] = {"sampler": sampler, "scheduler": scheduler, "sigmas": [float(s) for s in sigmas],
                           "dtype": "float32" if dtype == torch.float32 else "float64"}
    meta["cases"] = cases
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "comfy_samplers.safetensors"))
    meta["comfyui"] = os.environ.get("COMFYUI_COMMIT", "unknown")
    with open(os.path.join(OUT, "comfy_samplers.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(cases)} trajectories, {len(schedules)} schedules to {OUT}")


if __name__ == "__main__":
    main()
