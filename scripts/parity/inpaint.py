"""Parity fixtures for weft's mask and inpainting nodes, made by running ComfyUI's own code from
a ComfyUI checkout (not vendored; pass its folder):

  .venv/bin/python scripts/parity/inpaint.py /path/to/ComfyUI

Takes, without importing the rest of ComfyUI, `composite` and the FeatherMask node of
comfy_extras/nodes_mask.py, the ImagePadForOutpaint, VAEEncodeForInpaint and
InpaintModelConditioning nodes of nodes.py, `reshape_mask`/`repeat_to_batch_size` of
comfy/utils.py and `KSamplerX0Inpaint` of comfy/samplers.py, and runs them on seeded random
inputs. The VAE is a stand-in that returns the pixels it is given (what is compared is the pixel
and mask work around the encode), and the model behind KSamplerX0Inpaint is an analytic
stand-in whose `scale_latent_inpaint` is BaseModel's for an EPS model (latent + noise * sigma).
GrowMask calls scipy, which set-up's environment does not have: install it beside, e.g.
  .venv/bin/python -m pip install --no-deps --target /tmp/scipy scipy
  PYTHONPATH=/tmp/scipy .venv/bin/python scripts/parity/inpaint.py /path/to/ComfyUI
(without scipy the script stops). ImageColorToMask is run on an image of few colours.
Writes nodes/tests/fixtures/inpaint/inpaint.safetensors, images in weft's [B, C, H, W] layout.
"""

import ast
import math
import os
import sys
import types

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "nodes", "tests", "fixtures", "inpaint")


def definitions_from(path, names, namespace):
    """Executes the top-level definitions `names` of a Python file into `namespace`."""
    tree = ast.parse(open(path).read(), path)
    picked = [node for node in tree.body if getattr(node, "name", None) in names]
    missing = set(names) - {node.name for node in picked}
    if missing:
        raise SystemExit(f"{path}: not found: {sorted(missing)}")
    exec(compile(ast.Module(body=picked, type_ignores=[]), path, "exec"), namespace)
    return namespace


def load(root):
    utils = definitions_from(os.path.join(root, "comfy/utils.py"),
                             {"repeat_to_batch_size", "reshape_mask"},
                             {"torch": torch, "math": math})
    comfy = types.SimpleNamespace(utils=types.SimpleNamespace(**utils))
    io = types.SimpleNamespace(ComfyNode=object, NodeOutput=lambda *outputs: outputs)
    masks = definitions_from(os.path.join(root, "comfy_extras/nodes_mask.py"),
                             {"composite", "FeatherMask"},
                             {"torch": torch, "comfy": comfy, "IO": io})
    node_helpers = types.SimpleNamespace(
        conditioning_set_values=lambda cond, values: [(c, {**extra, **values}) for c, extra in cond])
    nodes = definitions_from(os.path.join(root, "nodes.py"),
                             {"ImagePadForOutpaint", "VAEEncodeForInpaint", "InpaintModelConditioning"},
                             {"torch": torch, "math": math, "node_helpers": node_helpers,
                              "MAX_RESOLUTION": 16384})
    samplers = definitions_from(os.path.join(root, "comfy/samplers.py"), {"KSamplerX0Inpaint"},
                                {"torch": torch})
    return utils, masks, nodes, samplers


class IdentityVae:
    """A VAE whose latent is the pixels, channels first (weft's image layout)."""
    downscale_ratio = 8

    def encode(self, pixels):
        return pixels.movedim(-1, 1).clone()


def stand_in_denoiser(x, sigma):
    return 0.5 * x + 0.1 * torch.sin(3.0 * x) - 0.05 * sigma


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    utils, masks, nodes, samplers = load(sys.argv[1])
    torch.manual_seed(20)
    out = {}
    chw = lambda image: image.movedim(-1, 1).contiguous()

    # composite (ImageCompositeMasked: multiplier 1, images channels first).
    destination = torch.rand(2, 20, 24, 3)
    source = torch.rand(1, 12, 10, 3)
    mask = torch.rand(1, 16, 16)
    out["composite.destination"] = chw(destination)
    out["composite.source"] = chw(source)
    out["composite.mask"] = mask
    out["composite.offset"] = masks["composite"](chw(destination).clone(), chw(source), 17, 11, mask, 1, False)
    out["composite.resized"] = masks["composite"](chw(destination).clone(), chw(source), 0, 0, None, 1, True)

    # ImagePadForOutpaint.
    image = torch.rand(1, 24, 32, 3)
    padded, pad_mask = nodes["ImagePadForOutpaint"]().expand_image(image, 8, 0, 16, 8, 5)
    out["pad.image"] = chw(image)
    out["pad.padded"] = chw(padded)
    out["pad.mask"] = pad_mask

    # FeatherMask.
    feather_in = torch.rand(2, 10, 12)
    out["feather.mask"] = feather_in
    out["feather.out"] = masks["FeatherMask"].execute(feather_in, 3, 2, 4, 5)[0]

    # VAEEncodeForInpaint: an image that is not a multiple of 8, a soft mask of another size.
    image = torch.rand(1, 21, 27, 3)
    soft = torch.rand(1, 30, 30)
    out["encode.image"] = chw(image)
    out["encode.mask"] = soft
    for grow in (0, 5, 6):
        (latent,) = nodes["VAEEncodeForInpaint"]().encode(IdentityVae(), image, soft, grow)
        out[f"encode.grow{grow}.pixels"] = latent["samples"]
        out[f"encode.grow{grow}.noise_mask"] = latent["noise_mask"].squeeze(1)

    # InpaintModelConditioning, on a 24x32 image (the stand-in VAE does not crop).
    image = torch.rand(1, 24, 32, 3)
    soft = torch.rand(1, 12, 12)
    positive, negative, latent = nodes["InpaintModelConditioning"]().encode(
        [(torch.zeros(1), {})], [(torch.zeros(1), {})], image, IdentityVae(), soft, True)
    out["conditioning.image"] = chw(image)
    out["conditioning.mask"] = soft
    out["conditioning.samples"] = latent["samples"]
    out["conditioning.noise_mask"] = latent["noise_mask"].squeeze(1)
    out["conditioning.concat_latent"] = positive[0][1]["concat_latent_image"]
    out["conditioning.concat_mask"] = positive[0][1]["concat_mask"].squeeze(1)

    # KSamplerX0Inpaint with the mask prepared as comfy/sampler_helpers.prepare_mask does.
    x = torch.randn(2, 4, 6, 6)
    latent_image = torch.randn(2, 4, 6, 6)
    noise = torch.randn(2, 4, 6, 6)
    noise_mask = torch.rand(1, 48, 48)
    sigma = torch.tensor([2.5, 2.5])
    inner = lambda x, sigma, model_options={}, seed=None: stand_in_denoiser(x, sigma.view(-1, 1, 1, 1))
    inner.inner_model = types.SimpleNamespace(
        scale_latent_inpaint=lambda x, sigma, noise, latent_image: latent_image + noise * sigma.view(-1, 1, 1, 1))
    wrapped = samplers["KSamplerX0Inpaint"](inner, None)
    wrapped.latent_image = latent_image
    wrapped.noise = noise
    denoise_mask = utils["reshape_mask"](noise_mask, x.shape)
    out["x0inpaint.x"] = x
    out["x0inpaint.latent"] = latent_image
    out["x0inpaint.noise"] = noise
    out["x0inpaint.mask"] = noise_mask
    out["x0inpaint.denoised"] = wrapped(x, sigma, denoise_mask)

    # GrowMask (scipy's grey dilation and erosion) and ImageColorToMask, from nodes_mask.py.
    try:
        import numpy as np
        import scipy.ndimage
    except ImportError:
        raise SystemExit("GrowMask needs scipy: see this script's docstring")
    io = types.SimpleNamespace(ComfyNode=object, NodeOutput=lambda *outputs: outputs)
    extra = definitions_from(os.path.join(sys.argv[1], "comfy_extras/nodes_mask.py"),
                             {"GrowMask", "ImageColorToMask"},
                             {"torch": torch, "np": np, "scipy": scipy, "IO": io})
    generator = torch.Generator().manual_seed(21)
    grow_in = torch.rand(2, 13, 17, generator=generator)
    grow_in[0, 4:9, 5:12] = 1.0
    out["grow.mask"] = grow_in
    for expand in (3, -2, 0):
        for tapered in (True, False):
            out[f"grow.{expand}.{'tapered' if tapered else 'square'}"] = \
                extra["GrowMask"].execute(grow_in, expand, tapered)[0]
    # Eight colours (0 or 1/3 a channel: 85 after *255 and rounding), one pixel a hair off.
    image = torch.randint(0, 2, (2, 6, 7, 3), generator=generator).float() / 3
    image[1, 2, 3] = image[0, 0, 0] + torch.tensor([0.0, 0.0, 0.6 / 255])
    color = int(sum(round(float(v) * 255) << shift for v, shift in zip(image[0, 0, 0], (16, 8, 0))))
    out["color.image"] = chw(image)
    out["color.color"] = torch.tensor([float(color)])
    out["color.mask"] = extra["ImageColorToMask"].execute(image, color)[0]

    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.float().clone().contiguous() for k, v in out.items()}, os.path.join(OUT, "inpaint.safetensors"))
    print(f"wrote {len(out)} tensors to {os.path.normpath(OUT)}/inpaint.safetensors")


if __name__ == "__main__":
    main()
