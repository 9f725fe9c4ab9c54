#!/usr/bin/env bash
# Regenerates web-ui/src/generated/events.ts, the editor's types of the /ws events, from the
# server's Rust types (src/server/events.rs); tests/event_types.rs checks the committed file.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p web-ui/src/generated
target/release/weft event-types > web-ui/src/generated/events.ts.new
mv web-ui/src/generated/events.ts.new web-ui/src/generated/events.ts
echo "wrote web-ui/src/generated/events.ts"
