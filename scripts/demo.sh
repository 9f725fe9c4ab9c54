#!/usr/bin/env bash
# The main job: run the default workflow and say where its image is.
set -euo pipefail
cd "$(dirname "$0")/.."
workflow=${1:-workflows/txt2img.yaml}
./target/release/weft run "$workflow" --output out
