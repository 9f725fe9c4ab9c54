#!/usr/bin/env bash
# Memory and time of LoRAs on an SD1.5-sized checkpoint (random fp16 weights, 2.1 GB, loaded in
# fp32 on the CPU) with 0, 1 and 3 chained LoadLora nodes (random kohya LoRAs of rank 16 on
# every UNet transformer layer and CLIP layer, as sd-scripts trains them): a fresh process per
# run, txt2img 64x64, euler, 2 steps; peak resident memory (GNU time), the LoadLora nodes' time
# (weft's events) and the checkpoint load; the peak's growth per LoRA is the overhead.
#   scripts/bench_lora.sh        (WEFT_BENCH_DIR: where the checkpoint and LoRAs go; WEFT_BIN:
#   the weft binary, target/release/weft by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dir=${WEFT_BENCH_DIR:-$PWD/out/bench-sd15}
weft=${WEFT_BIN:-target/release/weft} # another build to compare with
# shellcheck source=scripts/sd15_bench_workflow.sh
source scripts/sd15_bench_workflow.sh
# Named from the checkpoint's own keys (no diffusers needed), CLIP layers as kohya names them
# (lora_te_text_model_encoder_...): LoRAs written before that fix patched the UNet only.
ls "$dir"/loras/random-r16-2.safetensors >/dev/null 2>&1 ||
  .venv/bin/python scripts/write_sd15_loras.py "$dir/loras" 3 16 "$dir/sd15.safetensors" >/dev/null

workflow() { # $1 = LoRA count, $2 = first LoRA's strength_model
  local model='$model.unet' encoder='$model.text_encoder'
  echo "weft: 1"
  echo "nodes:"
  echo "  model: {type: LoadCheckpoint, name: \"$dir/sd15.safetensors\", precision: fp32}"
  for i in $(seq 0 $(($1 - 1))); do
    local strength=1.0
    [ "$i" = 0 ] && strength=$2
    echo "  lora$i: {type: LoadLora, model: $model, text_encoder: $encoder, lora: \"$dir/loras/random-r16-$i.safetensors\", strength_model: $strength, strength_clip: 1.0}"
    model="\$lora$i.model" encoder="\$lora$i.text_encoder"
  done
  echo "  positive: {type: PromptEncode, encoder: $encoder, text: a red circle}"
  echo "  negative: {type: PromptEncode, encoder: $encoder, text: \"\"}"
  echo "  latent: {type: EmptyLatent, width: 64, height: 64}"
  echo "  sample: {type: Sampler, model: $model, positive: \$positive.conditioning, negative: \$negative.conditioning, latent: \$latent.latent, seed: 1, steps: 2, cfg: 7.0, sampler: euler, schedule: normal}"
  echo "  decode: {type: VaeDecode, vae: \$model.vae, latent: \$sample.latent}"
  echo "  save: {type: SaveImage, image: \$decode.image, prefix: lora}"
}

printf '%-6s %10s %14s %12s\n' loras peak_GiB lora_nodes_s load_s
for n in 0 1 3; do
  workflow "$n" 1.0 > "$dir/lora$n.yaml"
  /usr/bin/time -f '%M' -o "$dir/rss" "$weft" run "$dir/lora$n.yaml" --device cpu \
    --output "$dir/out" --json > "$dir/events.jsonl"
  python3 - "$dir" "$n" <<'PY'
import json, sys
d, n = sys.argv[1], sys.argv[2]
micros = {}
for line in open(f"{d}/events.jsonl"):
    e = json.loads(line)
    if e["event"] == "node_finished":
        micros[e["node"]] = e["micros"]
peak = int(open(f"{d}/rss").read().split()[-1]) * 1024 / 2**30
lora = sum(v for k, v in micros.items() if k.startswith("lora")) / 1e6
print(f"{n:<6} {peak:10.2f} {lora:14.2f} {micros['model']/1e6:12.2f}")
PY
done

echo "A new strength re-runs only the LoadLora node and what follows (tests/lora.rs): its time above is the re-patch cost."
