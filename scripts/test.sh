#!/usr/bin/env bash
# Every test, plus format and lint checks. Tests that need set-up's converted models are
# `#[ignore]`d for a plain `cargo test` and run here (set-up has run, so a missing asset
# fails them); tests named `cuda_` need a GPU and run only where nvidia-smi sees one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets --quiet -- -D warnings
skip=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test: no GPU here; the cuda_ tests are skipped (they run where nvidia-smi sees a device)"
  skip=(--skip cuda_)
fi
cargo test --release --workspace --no-fail-fast -- --include-ignored "${skip[@]}"
# The browser editor: unit tests, then Playwright on Debian's chromium against weft serve.
(cd web-ui && npx vitest run --reporter=dot)
scripts/test-ui.sh
