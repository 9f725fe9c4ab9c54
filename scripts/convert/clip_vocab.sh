#!/usr/bin/env bash
# Puts CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, OpenAI CLIP, MIT) in
# models/converted/clip/, taken from the PyPI wheel open-clip-torch==3.3.0 (MIT) through pip.
# Idempotent: does nothing when the file is there with the expected checksum.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=models/converted/clip
vocab=$out/bpe_simple_vocab_16e6.txt.gz
sha=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
if [ -f "$vocab" ] && [ "$(sha256sum "$vocab" | cut -d' ' -f1)" = "$sha" ]; then
  exit 0
fi
py=.venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "clip_vocab: fetching open-clip-torch==3.3.0 wheel (no dependencies) for its BPE vocabulary"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  open-clip-torch==3.3.0 -d "$tmp"
wheel=$(ls "$tmp"/open_clip_torch-3.3.0-*.whl)
mkdir -p "$out"
"$py" - "$wheel" "$out" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    with open(f"{out}/bpe_simple_vocab_16e6.txt.gz", "wb") as f:
        f.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    licence = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    with open(f"{out}/LICENSE-open_clip.txt", "wb") as f:
        f.write(z.read(licence[0]))
PY
got=$(sha256sum "$vocab" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "clip_vocab: unexpected checksum $got for $vocab" >&2
  exit 1
fi
echo "clip_vocab: wrote $vocab"
