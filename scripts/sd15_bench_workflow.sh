#!/usr/bin/env bash
# Writes what the SD1.5-sized CPU benchmarks run: an SD1.5-sized fp16 checkpoint of random
# values (2.1 GB, once) and DIR/txt2img.yaml (64x64, euler / normal, 10 steps, cfg 7, fp32).
# Sourced by scripts/bench_cpu_sd15.sh and scripts/bench_disk_cache.sh with $dir set.
mkdir -p "$dir"
if [ ! -f "$dir/sd15.safetensors" ]; then
  cargo run --release --quiet --example write_sd15_checkpoint -- "$dir/sd15.safetensors"
fi
cat > "$dir/txt2img.yaml" <<YAML
weft: 1
nodes:
  model: {type: LoadCheckpoint, name: "$dir/sd15.safetensors", precision: fp32}
  positive: {type: PromptEncode, encoder: \$model.text_encoder, text: a red circle}
  negative: {type: PromptEncode, encoder: \$model.text_encoder, text: ""}
  latent: {type: EmptyLatent, width: 64, height: 64}
  sample: {type: Sampler, model: \$model.unet, positive: \$positive.conditioning, negative: \$negative.conditioning, latent: \$latent.latent, seed: 1, steps: 10, cfg: 7.0, sampler: euler, schedule: normal}
  decode: {type: VaeDecode, vae: \$model.vae, latent: \$sample.latent}
  save: {type: SaveImage, image: \$decode.image, prefix: sd15}
YAML
