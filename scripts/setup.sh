#!/usr/bin/env bash
# One-shot, idempotent set-up: project virtualenv with torch 2.11.0 (what tch 0.24.0 links
# against), the Python packages the model converters and parity fixtures use, converted
# weights under models/, and a release build of weft. Running it twice skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv="$root/.venv"
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  echo "setup: creating virtualenv .venv"
  python3 -m venv "$venv"
fi

# torch: PyPI's default Linux wheel (CUDA 13 build, also runs on CPU-only machines).
if ! "$py" -c 'import torch,sys; sys.exit(0 if torch.__version__.split("+")[0]=="2.11.0" else 1)' 2>/dev/null; then
  echo "setup: installing torch==2.11.0 (large download, once)"
  "$py" -m pip install -q --disable-pip-version-check torch==2.11.0
fi

# Extra Python packages (model converters, parity fixtures, the ComfyUI client that
# tests/comfy_clients.rs runs); each list line is a pip spec.
if [ -f scripts/requirements-setup.txt ]; then
  stamp="$venv/.weft-requirements.sha"
  want=$(sha256sum scripts/requirements-setup.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing scripts/requirements-setup.txt"
    "$py" -m pip install -q --disable-pip-version-check -r scripts/requirements-setup.txt
    echo "$want" > "$stamp"
  fi
fi

# Converted weights (each converter skips what it already made).
if [ -x scripts/convert_models.sh ]; then
  scripts/convert_models.sh
fi

# The LoRA of workflows/lora.yaml, made from the embedded model's committed weights.
if [ ! -f models/loras/tiny-shapes-prompt-dampener.safetensors ]; then
  echo "setup: writing models/loras/tiny-shapes-prompt-dampener.safetensors"
  "$py" scripts/write_demo_lora.py
fi

# PostgreSQL, for the run store's suite (make test starts a throwaway server with
# scripts/postgres.sh): Debian's package, installed as test-ui.sh installs chromium.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "setup: installing Debian's postgresql"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q postgresql >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q postgresql >/dev/null; }
fi

# The browser editor: built before cargo so the release binary embeds web-ui/dist.
scripts/build-ui.sh

# shellcheck source=scripts/env.sh
source scripts/env.sh
if [ "${WEFT_SKIP_BUILD:-0}" != 1 ]; then
  echo "setup: cargo build --release"
  cargo build --release --quiet
fi
