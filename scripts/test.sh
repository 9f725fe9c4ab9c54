#!/usr/bin/env bash
# Every test, plus format and lint checks. Tests that need set-up's converted models are
# `#[ignore]`d for a plain `cargo test` and run here (set-up has run, so a missing asset
# fails them); tests named `cuda_` need a GPU and run only where nvidia-smi sees one.
set -euo pipefail
cd "$(dirname "$0")/.."
# A user's clone has no ../shared beside it: where one is here (a developer's machine, CI),
# every test runs with it hidden behind an empty mount in a private mount namespace, so a
# test that reads it fails here as it would for the user.
if [ -d ../shared ] && [ -z "${WEFT_SHARED_HIDDEN:-}" ]; then
  if unshare -m --propagation private true 2>/dev/null; then
    exec unshare -m --propagation private env WEFT_SHARED_HIDDEN=1 bash -c \
      'mount -t tmpfs -o size=64k,mode=0555 weft-no-shared ../shared && exec scripts/test.sh'
  fi
  echo "test: ../shared cannot be hidden here (no mount namespace); the tests run beside it" >&2
fi
scripts/check-standalone.sh
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
