#!/usr/bin/env bash
# Every test, plus format and lint checks. Tests that need set-up's converted models are
# `#[ignore]`d for a plain `cargo test` and run here (set-up has run, so a missing asset
# fails them); tests named `cuda_` need a GPU and run only where nvidia-smi sees one.
set -euo pipefail
cd "$(dirname "$0")/.."
# A user's clone has nothing beside it: every test runs with the folders next to the
# repository hidden behind empty mounts in a private mount namespace (where the machine allows
# one), so a test that reads outside the repository fails here as it would for the user. The
# filesystem root and the home folder (toolchains live there) are never hidden.
if [ -z "${WEFT_OUTSIDE_HIDDEN:-}" ] && unshare -m --propagation private true 2>/dev/null; then
  parent=$(dirname "$(pwd)")
  if [ "$parent" != / ] && [ "$parent" != "${HOME:-/nonexistent}" ]; then
    exec unshare -m --propagation private env WEFT_OUTSIDE_HIDDEN=1 bash -c '
      for d in "$(dirname "$(pwd)")"/*/; do
        d=${d%/}
        [ "$d" != "$(pwd)" ] && mount -t tmpfs -o size=64k,mode=0555 weft-outside "$d" 2>/dev/null
      done
      exec scripts/test.sh'
  fi
fi
[ -n "${WEFT_OUTSIDE_HIDDEN:-}" ] && echo "test: the folders beside the repository are hidden from the tests"
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
skip=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test: no GPU here; the cuda_ tests are skipped (they run where nvidia-smi sees a device)"
  skip=(--skip cuda_)
fi
# The run store's suite runs on SQLite and on a throwaway PostgreSQL server (tests/store.rs).
scripts/postgres.sh cargo test --release --workspace --no-fail-fast -- --include-ignored "${skip[@]}"
# The browser editor: unit tests, then Playwright on Debian's chromium against weft serve.
(cd web-ui && npx vitest run --reporter=dot)
scripts/test-ui.sh
