#!/usr/bin/env bash
# The browser tests: Debian's Chromium (installed with apt-get when missing; never a browser
# download) drives the editor served by a real `target/release/weft serve` on a free port,
# over a temporary copy of workflows/. Screenshots land in web-ui/screenshots/ (ignored by git).
# WEFT_UI_TESTS="e2e/sweep.test.mjs" runs only the files named.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ ! -x /usr/bin/chromium ]; then
  echo "test-ui: installing Debian's chromium"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
scripts/build-ui.sh
if [ web-ui/dist/index.html -nt target/release/weft ]; then
  echo "test-ui: web-ui/dist is newer than target/release/weft (which embeds it): run make setup or cargo build --release" >&2
fi
(cd web-ui && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)

tmp=$(mktemp -d /tmp/weft-ui-test.XXXXXX)
cp -r workflows "$tmp/workflows"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
# '*=tiny-shapes': ComfyUI's frontend test (e2e/comfyui.test.mjs) queues ComfyUI's default graph.
target/release/weft serve --listen 127.0.0.1 --port "$port" --workflows "$tmp/workflows" --data "$tmp/data" \
  --comfy-model '*=tiny-shapes' \
  >"$tmp/serve.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/api/nodes" >/dev/null && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$tmp/serve.log"; exit 1; fi
  sleep 0.1
done

cd web-ui
status=0
WEFT_URL="http://127.0.0.1:$port" WEFT_WORKFLOWS="$tmp/workflows" \
  node --test --test-concurrency=1 ${WEFT_UI_TESTS:-e2e/editor.test.mjs e2e/import.test.mjs e2e/sweep.test.mjs e2e/merge.test.mjs e2e/reattach.test.mjs e2e/values.test.mjs e2e/subgraph-state.test.mjs e2e/stale.test.mjs e2e/modes.test.mjs e2e/groups.test.mjs e2e/reroutes.test.mjs e2e/menus.test.mjs e2e/mask.test.mjs e2e/nodesize.test.mjs e2e/viewer.test.mjs e2e/queue.test.mjs e2e/queue-order.test.mjs e2e/shortcuts.test.mjs e2e/perf.test.mjs} || status=$?
# Files whose names sort before editor.test.mjs and that run a workflow go after the editor's
# (node --test orders the files it is given by name, and their runs would leave the editor's
# first txt2img with a cached checkpoint where it expects a load).
if [ -z "${WEFT_UI_TESTS:-}" ]; then
  WEFT_URL="http://127.0.0.1:$port" WEFT_WORKFLOWS="$tmp/workflows" \
    node --test --test-concurrency=1 e2e/comfyui.test.mjs e2e/convert.test.mjs e2e/details.test.mjs || status=$?
fi
if [ $status != 0 ]; then
  echo "test-ui: failed; server log:"; tail -40 "$tmp/serve.log"
fi
exit $status
