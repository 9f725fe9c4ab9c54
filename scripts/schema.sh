#!/usr/bin/env bash
# Regenerates workflows/schema.json from the node declarations and workflows/lib, suggesting only
# the models this repository ships (models/tiny-shapes), so the file is the same on every machine
# whatever set-up or the user put into models/ (tests/cli.rs committed_schema_is_fresh checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
shipped=$(mktemp -d)
trap 'rm -rf "$shipped"' EXIT
ln -s "$PWD/models/tiny-shapes" "$shipped/tiny-shapes"
target/release/weft schema --models "$shipped" -o workflows/schema.json
echo "wrote workflows/schema.json"
