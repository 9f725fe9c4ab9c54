#!/usr/bin/env bash
# CPU figures of an SD1.5-sized checkpoint (random fp16 weights, 2.1 GB): txt2img 64x64,
# euler / normal, 10 steps, cfg 7, fp32, a fresh process per run: peak resident memory (GNU
# time), checkpoint load and sampler time (weft's events), and the median time between
# sampler steps (progress events, stamped as they arrive). Compare with shared/ANCHORS.md.
#   scripts/bench_cpu_sd15.sh [RUNS]      (WEFT_THREADS=N: weft's --threads; default libtorch's)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
runs=${1:-3}
dir=${WEFT_BENCH_DIR:-/tmp/weft-bench-sd15}
# shellcheck source=scripts/sd15_bench_workflow.sh
source scripts/sd15_bench_workflow.sh
threads=()
[ -n "${WEFT_THREADS:-}" ] && threads=(--threads "$WEFT_THREADS")
printf '%-5s %12s %10s %10s %10s %10s\n' run peak_GiB load_s sampler_s step_s total_s
for i in $(seq "$runs"); do
  /usr/bin/time -f '%M' -o "$dir/rss" target/release/weft run "$dir/txt2img.yaml" --device cpu "${threads[@]}" \
    --output "$dir/out" --json |
    python3 -c 'import sys, time
for line in sys.stdin: print(f"{time.monotonic():.6f} {line}", end="", flush=True)' > "$dir/events.jsonl"
  python3 - "$dir" "$i" <<'PY'
import json, statistics, sys
d, run = sys.argv[1], sys.argv[2]
micros = {}
total = 0
steps = []
for line in open(f"{d}/events.jsonl"):
    stamp, line = line.split(" ", 1)
    e = json.loads(line)
    if e["event"] == "progress" and e["node"] == "sample":
        steps.append(float(stamp))
    if e["event"] == "node_finished":
        micros[e["node"]] = e["micros"]
    if e["event"] == "run_finished":
        total = e["micros"]
peak = int(open(f"{d}/rss").read().split()[-1]) * 1024 / 2**30
step = statistics.median(b - a for a, b in zip(steps, steps[1:]))
print(f"{run:<5} {peak:12.2f} {micros['model']/1e6:10.2f} {micros['sample']/1e6:10.2f} {step:10.3f} {total/1e6:10.2f}")
PY
done
