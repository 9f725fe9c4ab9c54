#!/usr/bin/env python3
"""Converts npm `@upscalerjs/esrgan-slim` (TF.js layers models, x2 and x4) to safetensors.

Writes, under models/converted/esrgan-slim/ (skipping what exists):
  esrgan-slim-x2.safetensors, esrgan-slim-x4.safetensors   RDN weights, named after the
      Keras layers (F_m1, F_0, F_1_1, LFF_1, GFF_1, UPN1, SR, ...) as `<layer>.weight`
      [out, in, kh, kw] and `<layer>.bias`
  esrgan-slim-x2.json, esrgan-slim-x4.json   the Keras layer topology, for reference
  LICENSE                                    the package's MIT licence
  samples/fixture.png, samples/result-x{2,4}.png   the package's own example input and the
      outputs its TF.js model gives for it (weft's tests compare against them)

The package is fetched with `npm pack` (the npm registry), never installed. TF.js keeps a
weightsManifest in model.json: groups of binary shards, concatenated, holding each weight in
manifest order as little-endian data of its dtype and shape. Keras Conv2D kernels are
[kh, kw, in, out]; they are transposed to PyTorch's [out, in, kh, kw].
"""
import argparse
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
from safetensors.numpy import save_file

PACKAGE = "@upscalerjs/esrgan-slim@1.0.0"
SCALES = (2, 4)


def read_tfjs_layers_model(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        model = json.load(f)
    weights = {}
    for group in model["weightsManifest"]:
        blob = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            if "quantization" in spec:
                raise ValueError(f"{spec['name']}: quantized TF.js weights are not supported")
            dtype = np.dtype({"float32": "<f4", "int32": "<i4"}[spec["dtype"]])
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            nbytes = count * dtype.itemsize
            if offset + nbytes > len(blob):
                raise ValueError(f"{spec['name']}: shard data ends early")
            weights[spec["name"]] = np.frombuffer(blob[offset : offset + nbytes], dtype).reshape(spec["shape"]).copy()
            offset += nbytes
        if offset != len(blob):
            raise ValueError(f"{len(blob) - offset} bytes of shard data unread")
    return model, weights


def to_state_dict(weights):
    state = {}
    for name, value in weights.items():
        layer, kind = name.rsplit("/", 1)
        if kind == "kernel":
            state[f"{layer}.weight"] = np.ascontiguousarray(value.transpose(3, 2, 0, 1)).astype(np.float32)
        elif kind == "bias":
            state[f"{layer}.bias"] = value.astype(np.float32)
        else:
            raise ValueError(f"unexpected weight {name}")
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/converted/esrgan-slim")
    parser.add_argument("--package-dir", help="use an unpacked npm package folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    todo = [s for s in SCALES if not os.path.exists(os.path.join(args.out, f"esrgan-slim-x{s}.safetensors"))]
    licence = os.path.join(args.out, "LICENSE")
    samples = os.path.join(args.out, "samples")
    if not todo and os.path.exists(licence) and os.path.isdir(samples):
        return
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = args.package_dir
        if package_dir is None:
            packed = subprocess.run(["npm", "pack", "--silent", PACKAGE], cwd=tmp, check=True,
                                    capture_output=True, text=True).stdout.split()[-1]
            with tarfile.open(os.path.join(tmp, packed)) as tar:
                tar.extractall(tmp, filter="data")
            package_dir = os.path.join(tmp, "package")
        for scale in todo:
            model, weights = read_tfjs_layers_model(os.path.join(package_dir, "models", f"x{scale}"))
            state = to_state_dict(weights)
            target = os.path.join(args.out, f"esrgan-slim-x{scale}.safetensors")
            save_file(state, target + ".part", metadata={"source": PACKAGE, "scale": str(scale)})
            os.chmod(target + ".part", 0o644)
            os.replace(target + ".part", target)
            with open(os.path.join(args.out, f"esrgan-slim-x{scale}.json"), "w") as f:
                json.dump(model["modelTopology"], f, indent=1)
            print(f"esrgan_slim: wrote {target} ({len(state)} tensors)")
        shutil.copyfile(os.path.join(package_dir, "LICENSE"), licence)
        os.makedirs(samples, exist_ok=True)
        assets = os.path.join(package_dir, "assets")
        shutil.copyfile(os.path.join(assets, "fixture.png"), os.path.join(samples, "fixture.png"))
        for scale in SCALES:
            shutil.copyfile(os.path.join(assets, "samples", f"{scale}x", "result.png"),
                            os.path.join(samples, f"result-x{scale}.png"))


if __name__ == "__main__":
    main()
