#!/usr/bin/env bash
# Packs what one device call needs into .devkit-CALL/ (ignored by git; name it in `carry`):
# the device machine has torch but no cargo and no network, and a call carries 64 MiB at most
# with the tracked tree, so the checks are split in two calls, each packed on its own:
#   embedded  the weft binary and the gpu integration tests (xz), MiniLM in fp16 (the embedded
#             model's text encoder; 88 MB in fp32 would not fit)
#   sd15      the weft binary and the unet_bench example (xz), the upscaler and open_nsfw
#             (fp16), the CLIP vocabulary, the SD1.5-shaped checkpoint writer (xz), and
#             diffusers as wheels for the PyTorch reference
# Pack both before the first call: the second call should follow the first within the
# machine's 30 s warm time. Then, on the device: scripts/device/gpu_checks.sh CALL.
#   scripts/device/pack.sh embedded|sd15
set -euo pipefail
cd "$(dirname "$0")/../.."
call=${1:?usage: scripts/device/pack.sh embedded|sd15}
source scripts/env.sh
kit=.devkit-$call
rm -rf "$kit"
mkdir -p "$kit"
py=.venv/bin/python

xz_into() { # FILE NAME: FILE compressed into the kit as NAME.xz
  xz -T2 -6 -c "$1" > "$kit/$2.xz"
}

case "$call" in
  embedded)
    cargo build --release --quiet --bin weft
    # The gpu tests' binary, built like `cargo test` builds it, found by its name.
    tests_json=$(cargo test --release --quiet --test gpu --no-run --message-format=json)
    tests_bin=$(printf '%s\n' "$tests_json" | "$py" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
    xz_into target/release/weft weft
    xz_into "$tests_bin" gpu-tests
    mkdir -p "$kit/minilm/1_Pooling"
    src=models/converted/minilm
    "$py" - "$src/model.safetensors" "$kit/minilm/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
import torch
tensors = load_file(sys.argv[1])
save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()},
          sys.argv[2], metadata={"format": "pt"})
PY
    cp "$src/tokenizer.json" "$src/config.json" "$kit/minilm/"
    cp "$src/1_Pooling/config.json" "$kit/minilm/1_Pooling/"
    ;;
  sd15)
    cargo build --release --quiet --bin weft
    cargo build --release --quiet -p weft-nodes --example unet_bench
    cargo build --release --quiet --example write_sd15_checkpoint
    xz_into target/release/weft weft
    xz_into target/release/examples/unet_bench unet_bench
    xz_into target/release/examples/write_sd15_checkpoint write_sd15_checkpoint
    mkdir -p "$kit/converted/realesrgan" "$kit/converted/open_nsfw" "$kit/converted/clip" "$kit/whl"
    cp models/converted/realesrgan/realesr-animevideov3.safetensors "$kit/converted/realesrgan/"
    "$py" - models/converted/open_nsfw/open_nsfw.safetensors "$kit/converted/open_nsfw/open_nsfw.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
import torch
tensors = load_file(sys.argv[1])
save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()},
          sys.argv[2], metadata={"format": "pt"})
PY
    cp models/converted/clip/bpe_simple_vocab_16e6.txt.gz "$kit/converted/clip/"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      -d "$kit/whl" diffusers==0.42.1 importlib_metadata==10.2.0
    ;;
  *)
    echo "pack.sh: unknown call '$call' (embedded or sd15)" >&2
    exit 2
    ;;
esac

tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
kit_bytes=$(du -sb "$kit" | cut -f1)
total=$((tracked + kit_bytes))
awk -v call="$call" -v k="$kit_bytes" -v t="$tracked" 'BEGIN {
  printf "pack %s: kit %.1f MiB + tracked %.1f MiB = %.1f MiB (a call carries 64 MiB at most)\n",
    call, k / 1048576, t / 1048576, (k + t) / 1048576 }'
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "pack.sh: too large for one call" >&2
  exit 1
fi
