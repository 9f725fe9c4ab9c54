#!/usr/bin/env bash
# The GPU checks of the performance issue, run on the device machine from what
# scripts/device/pack.sh put in .devkit-CALL/ (name it in `carry`). Two calls, each packed
# first, the second straight after the first so the machine is still warm (the first leaves
# MiniLM in /tmp/weft-kit for the second's embedded upscale+safety run):
#   embedded  txt2img and img2img on CUDA (fp16), the gpu integration tests (CPU vs GPU fp32,
#             CUDA-graph replay vs eager, device memory vs the cache), and through `weft serve`
#             1,000 runs with a new seed and prompt each (device memory flat, within the cache
#             budget) and the run latency
#   sd15      an SD1.5-shaped fp16 checkpoint written there (examples/write_sd15_checkpoint); the UNet
#             step (batch 2, 64x64, fp16) eager and replayed from a CUDA graph beside
#             PyTorch's eager, channels_last and CUDA-graph figures; txt2img 512x512 and
#             1024x1024, 20 steps, queued to PNG written through `weft serve`, beside
#             PyTorch's 20 eager steps + decode; the cache budget held with SD1.5; the
#             upscale+safety workflow
# Every check runs even if one before it failed; each appends a JSON line to $OUT/CALL.jsonl
# and its output to $OUT/CALL.log. On a CPU, for trying the plumbing:
#   WEFT_CHECK_DEVICE=cpu QUICK=1 scripts/device/gpu_checks.sh embedded
set -uo pipefail
cd "$(dirname "$0")/../.."
call=${1:?usage: scripts/device/gpu_checks.sh embedded|sd15}
device=${WEFT_CHECK_DEVICE:-cuda}
quick=${QUICK:-0}
out=${OUT:-/tmp/weft-device-out}
kit=.devkit-$call
mkdir -p "$out"
jsonl=$out/$call.jsonl
: > "$jsonl"
exec > >(tee "$out/$call.log") 2>&1

torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "== $call on $device, $(date -u +%FT%TZ), $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"

# Unpacks KIT_NAME.xz to PATH unless PATH already holds the same bytes.
unpack() {
  python3 - "$kit/$1.xz" "$2" <<'PY'
import lzma, os, sys
data = lzma.open(sys.argv[1]).read()
path = sys.argv[2]
if not (os.path.exists(path) and open(path, "rb").read() == data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".unpacked"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
PY
}

# check NAME COMMAND...: runs it, shows its output, records ok, seconds and its last JSON line.
check() {
  local name=$1
  shift
  echo
  echo "== $name: $*"
  local started=$SECONDS
  local log
  log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  python3 - "$name" "$rc" "$((SECONDS - started))" "$log" >> "$jsonl" <<'PY'
import json, sys
name, rc, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = open(log, errors="replace").read().splitlines()
figures = None
for line in reversed(lines):
    line = line.strip()
    if line.startswith("{") and line.endswith("}"):
        try:
            figures = json.loads(line)
            break
        except json.JSONDecodeError:
            pass
print(json.dumps({"check": name, "ok": rc == 0, "seconds": seconds, "figures": figures,
                  "tail": lines[-8:]}))
PY
  rm -f "$log"
  echo "== $name: exit $rc, $((SECONDS - started)) s"
}

# serve PORT ARGS...: starts `weft serve` in the background and waits until it answers.
serve() {
  local port=$1
  shift
  target/release/weft serve --port "$port" --device "$device" "$@" > "$out/serve-$port.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/system_stats', timeout=1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "weft serve on $port did not answer; its log:"
  cat "$out/serve-$port.log"
  return 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  tail -3 "$out/serve-$1.log"
  rm -f "$out/serve-$1.log"
}

# Keeps the PNG a `weft run` wrote under a name of our own (at most 8 files come back).
keep_png() {
  local png
  png=$(ls -t "$1"/*.png 2>/dev/null | head -1)
  [ -n "$png" ] && cp "$png" "$out/$2.png"
}

unpack weft target/release/weft

case "$call" in
  embedded)
    mkdir -p models/converted/minilm
    cp -r "$kit/minilm/." models/converted/minilm/
    mkdir -p /tmp/weft-kit && cp -r "$kit/minilm" /tmp/weft-kit/
    runs=$([ "$quick" = 1 ] && echo 20 || echo 1000)

    check txt2img target/release/weft run workflows/txt2img.yaml --device "$device" --output /tmp/weft-txt2img
    keep_png /tmp/weft-txt2img "txt2img-$device"
    check img2img target/release/weft run workflows/img2img.yaml --device "$device" --output /tmp/weft-img2img
    keep_png /tmp/weft-img2img "img2img-$device"

    if [ "$device" = cuda ]; then
      # The test binary has the checkout it was built in compiled into it (/work/main).
      root=$(pwd)
      if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi
      unpack gpu-tests /tmp/weft-gpu-tests
      check gpu-tests /tmp/weft-gpu-tests --include-ignored --test-threads 1
    fi

    # Holds the model (~96 MiB: MiniLM in fp32) and a few hundred runs' values: the cache fills
    # and evicts within the first half of the runs.
    budget=$((128 << 20))
    if serve 8931 --cache-budget "$budget" --data /tmp/weft-data-embedded; then
      check memory-over-runs python3 scripts/device/server_checks.py memory http://127.0.0.1:8931 \
        --workflow txt2img --runs "$runs" --budget "$budget"
      check latency-embedded python3 scripts/device/server_checks.py latency http://127.0.0.1:8931 \
        --workflow txt2img --runs 20
      stop_server 8931
    fi
    ;;

  sd15)
    mkdir -p models/converted
    cp -r "$kit/converted/." models/converted/
    if [ -d /tmp/weft-kit/minilm ]; then
      mkdir -p models/converted/minilm && cp -r /tmp/weft-kit/minilm/. models/converted/minilm/
    fi
    unpack unet_bench /tmp/weft-unet-bench
    steps=$([ "$quick" = 1 ] && echo 3 || echo 30)

    if [ ! -f models/sd15.safetensors ]; then
      unpack write_sd15_checkpoint /tmp/weft-write-sd15
      check write-checkpoint /tmp/weft-write-sd15 models/sd15.safetensors
    fi

    if [ "$device" = cuda ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$kit"/whl/*.whl && export PYTHONPATH=/tmp/site
      check pytorch-reference python3 scripts/device/pytorch_sd15_reference.py --steps 20
      check weft-unet-512 /tmp/weft-unet-bench --graph --steps "$steps" --vae-latent 64
      check weft-unet-1024 /tmp/weft-unet-bench --graph --latent 128 --steps 10 --vae-latent 128
    else
      check weft-unet-tiny /tmp/weft-unet-bench --tiny --cpu --steps 3
    fi

    size=$([ "$quick" = 1 ] && echo 64 || echo 512)
    # JSON: what POST /api/runs takes as a document.
    cat > /tmp/weft-sd15.json <<JSON
{"weft": 1, "nodes": {
  "model": {"type": "LoadCheckpoint", "name": "sd15.safetensors"},
  "positive": {"type": "PromptEncode", "encoder": "\$model.text_encoder", "text": "a red circle on a blue background"},
  "negative": {"type": "PromptEncode", "encoder": "\$model.text_encoder", "text": ""},
  "latent": {"type": "EmptyLatent", "width": $size, "height": $size},
  "sample": {"type": "Sampler", "model": "\$model.unet", "positive": "\$positive.conditioning",
             "negative": "\$negative.conditioning", "latent": "\$latent.latent", "seed": 1,
             "steps": 20, "cfg": 7.0, "sampler": "euler", "schedule": "normal"},
  "decode": {"type": "VaeDecode", "vae": "\$model.vae", "latent": "\$sample.latent"},
  "save": {"type": "SaveImage", "image": "\$decode.image", "prefix": "sd15"}}}
JSON
weft: 1
nodes:
  model: {type: LoadCheckpoint, name: sd15.safetensors}
  positive: {type: PromptEncode, encoder: \$model.text_encoder, text: a red circle on a blue background}
  negative: {type: PromptEncode, encoder: \$model.text_encoder, text: ""}
  latent: {type: EmptyLatent, width: $size, height: $size}
  sample: {type: Sampler, model: \$model.unet, positive: \$positive.conditioning, negative: \$negative.conditioning, latent: \$latent.latent, seed: 1, steps: 20, cfg: 7.0, sampler: euler, schedule: normal}
  decode: {type: VaeDecode, vae: \$model.vae, latent: \$sample.latent}
  save: {type: SaveImage, image: \$decode.image, prefix: sd15}
YAML
    runs=$([ "$quick" = 1 ] && echo 2 || echo 10)
    if serve 8932 --data /tmp/weft-data-sd15; then
      check e2e-$size python3 scripts/device/server_checks.py latency http://127.0.0.1:8932 \
        --workflow /tmp/weft-sd15.json --runs "$runs"
      if [ "$quick" != 1 ]; then
        check e2e-1024 python3 scripts/device/server_checks.py latency http://127.0.0.1:8932 \
          --workflow /tmp/weft-sd15.json --runs 3 --set latent.width=1024 --set latent.height=1024
      fi
      stop_server 8932
    fi
    if [ "$device" = cuda ]; then
      # The same runs with the UNet called eagerly: what the CUDA graphs buy end to end.
      if WEFT_CUDA_GRAPHS=0 serve 8933 --data /tmp/weft-data-sd15-eager; then
        check e2e-512-eager python3 scripts/device/server_checks.py latency http://127.0.0.1:8933 \
          --workflow /tmp/weft-sd15.json --runs "$runs"
        stop_server 8933
      fi
    fi

    # A budget that holds the model (2.0 GiB in fp16 on CUDA, 4.0 GiB in fp32 on a CPU) and
    # some runs' values, so that later runs evict earlier ones.
    budget=$([ "$device" = cuda ] && echo $((2100 << 20)) || echo $((4150 << 20)))
    if serve 8934 --cache-budget "$budget" --data /tmp/weft-data-sd15-budget; then
      check cache-budget-sd15 python3 scripts/device/server_checks.py memory http://127.0.0.1:8934 \
        --workflow /tmp/weft-sd15.json --runs "$([ "$quick" = 1 ] && echo 3 || echo 30)" --budget "$budget"
      stop_server 8934
    fi

    check upscale-safety-sd15 target/release/weft run workflows/txt2img-upscale-safe.yaml \
      --device "$device" --set model.name=sd15.safetensors --output /tmp/weft-upscale-sd15
    if [ -f models/converted/minilm/model.safetensors ]; then
      check upscale-safety-embedded target/release/weft run workflows/txt2img-upscale-safe.yaml \
        --device "$device" --output /tmp/weft-upscale
      keep_png /tmp/weft-upscale "upscale-safe-$device"
    else
      echo "upscale-safety-embedded: skipped, MiniLM is not in /tmp/weft-kit (the machine went back between the calls)"
    fi
    ;;
  *)
    echo "gpu_checks.sh: unknown call '$call' (embedded or sd15)"
    exit 2
    ;;
esac

echo
echo "== summary ($jsonl)"
python3 - "$jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']:<24} {r['seconds']:>5} s  {json.dumps(r['figures'])[:400] if r['figures'] else ''}")
PY
