#!/usr/bin/env bash
# ComfyUI and weft side by side (scripts/compare_comfyui.py): starts a ComfyUI checkout and
# `weft serve` on the CPU with the same SD1.5-shaped checkpoint (random fp16 weights, 2.1 GB,
# written by examples/write_sd15_checkpoint.rs), runs the comparison, stops both.
#   scripts/compare_comfyui.sh COMFYUI_DIR [COMFYUI_PYTHON] [-- compare_comfyui.py options]
# COMFYUI_PYTHON defaults to COMFYUI_DIR's python on PATH. Needs `cargo build --release`.
# Raw figures go to $WEFT_COMPARE_DIR (default /tmp/weft-compare). CPU threads: WEFT_THREADS
# (weft's --threads) and COMFY_THREADS (OMP_NUM_THREADS for ComfyUI); default: libtorch's.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
comfy=$(cd "${1:?usage: $0 COMFYUI_DIR [COMFYUI_PYTHON] [-- options]}" && pwd)
shift
python=python3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then python=$1; shift; fi
[ "${1:-}" = "--" ] && shift
dir=${WEFT_COMPARE_DIR:-/tmp/weft-compare}
comfy_port=${COMFY_PORT:-8188}
weft_port=${WEFT_PORT:-8189}
mkdir -p "$dir/models/checkpoints"
ckpt=$dir/models/checkpoints/sd15.safetensors
if [ ! -f "$ckpt" ]; then
  cargo run --release --quiet --example write_sd15_checkpoint -- "$ckpt"
fi
# weft finds its CLIP vocabulary under models/converted (set-up writes it).
ln -sfn "$PWD/models/converted" "$dir/models/converted"
ln -f "$ckpt" "$comfy/models/checkpoints/sd15.safetensors" 2>/dev/null ||
  ln -sf "$ckpt" "$comfy/models/checkpoints/sd15.safetensors"
rm -rf "$dir/data" "$dir/workflows" "$dir/comfy-out"
mkdir -p "$dir/workflows" "$dir/comfy-out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
comfy_env=()
[ -n "${COMFY_THREADS:-}" ] && comfy_env=(env "OMP_NUM_THREADS=$COMFY_THREADS")
weft_args=()
[ -n "${WEFT_THREADS:-}" ] && weft_args=(--threads "$WEFT_THREADS")
(cd "$comfy" && exec "${comfy_env[@]}" "$python" main.py --cpu --listen 127.0.0.1 --port "$comfy_port" \
  --output-directory "$dir/comfy-out") > "$dir/comfyui.log" 2>&1 &
pids+=($!)
comfy_pid=$!
target/release/weft serve --device cpu --port "$weft_port" --models "$dir/models" \
  --workflows "$dir/workflows" --data "$dir/data" "${weft_args[@]}" > "$dir/weft.log" 2>&1 &
pids+=($!)
weft_pid=$!
for url in "http://127.0.0.1:$comfy_port" "http://127.0.0.1:$weft_port"; do
  for _ in $(seq 240); do
    curl -sf "$url/system_stats" > /dev/null && break
    sleep 0.5
  done
  curl -sf "$url/system_stats" > /dev/null || { echo "$url did not start" >&2; exit 1; }
done
stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "$(date -u) ComfyUI $(git -C "$comfy" rev-parse HEAD 2>/dev/null || cat "$comfy/COMMIT" 2>/dev/null || echo '?')" \
  "($(sed -n 's/__version__ = //p' "$comfy/comfyui_version.py")), weft $(git rev-parse --short HEAD), $(nproc) cores," \
  "threads: ComfyUI ${COMFY_THREADS:-default}, weft ${WEFT_THREADS:-default}"
.venv/bin/python scripts/compare_comfyui.py --comfy-url "http://127.0.0.1:$comfy_port" \
  --weft-url "http://127.0.0.1:$weft_port" --comfy-pid "$comfy_pid" --weft-pid "$weft_pid" \
  --json "$dir/raw-$stamp.json" --ckpt-file "$ckpt" "$@"
