#!/usr/bin/env bash
# Every test, on CPU (GPU-only tests skip themselves without a GPU), plus format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets --quiet -- -D warnings
cargo test --release --workspace --no-fail-fast
(cd web-ui && npx vitest run --reporter=dot)
scripts/test-ui.sh
