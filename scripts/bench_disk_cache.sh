#!/usr/bin/env bash
# The disk tier of the cache, measured: each workflow run twice in two `weft run` processes
# sharing a fresh --cache-dir. Prints, per run, the run's own time (weft's run_finished, model
# loads included) and the process's wall time (libtorch's start-up included), and what the
# second run executed. Workflows: the embedded txt2img (64x64, 20 steps) and an SD1.5-sized
# checkpoint (random fp16 weights, 2.1 GB, written once; 64x64, 10 steps, fp32).
#   scripts/bench_disk_cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dir=${WEFT_BENCH_DIR:-/tmp/weft-bench-sd15}
# shellcheck source=scripts/sd15_bench_workflow.sh
source scripts/sd15_bench_workflow.sh
printf '%-30s %-6s %10s %10s  %s\n' workflow run run_ms wall_ms executed
for workflow in workflows/txt2img.yaml "$dir/txt2img.yaml"; do
  cache=$(mktemp -d /tmp/weft-disk-cache.XXXXXX)
  out=$(mktemp -d /tmp/weft-disk-out.XXXXXX)
  for run in first second; do
    start=$(date +%s%N)
    target/release/weft run "$workflow" --device cpu --json --disk-cache 10GiB \
      --cache-dir "$cache" --output "$out" > "$cache.events"
    wall=$(( ($(date +%s%N) - start) / 1000000 ))
    python3 - "$cache.events" "$(basename "$(dirname "$workflow")")/$(basename "$workflow")" "$run" "$wall" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
done = [e for e in events if e["event"] == "run_finished"][-1]
ran = [e["node"] for e in events if e["event"] == "node_started"]
print(f"{sys.argv[2]:30} {sys.argv[3]:6} {done['micros'] / 1000:10.1f} {int(sys.argv[4]):10d}  "
      f"{', '.join(ran) if ran else 'nothing (all from disk)'}")
PY
  done
  echo "  disk cache: $(target/release/weft cache stats --cache-dir "$cache")"
  rm -rf "$cache" "$cache.events" "$out"
done
