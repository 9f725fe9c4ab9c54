#!/usr/bin/env bash
# Builds the browser editor (web-ui/ -> web-ui/dist) with npm from the committed lockfile.
# Skipped quickly when the sources have not changed since the last build. Without npm the
# binary embeds a placeholder page instead, so the Rust build never needs Node.
set -euo pipefail
cd "$(dirname "$0")/../web-ui"
if ! command -v npm >/dev/null; then
  echo "setup: npm not found; weft serve will show a placeholder page instead of the editor" >&2
  exit 0
fi
stamp=dist/.weft-build.sha
want=$(cat package.json package-lock.json index.html vite.config.ts tsconfig.json $(find src -type f | sort) | sha256sum | cut -d' ' -f1)
if [ -f dist/index.html ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.weft-lock.sha 2>/dev/null)" != "$lock" ]; then
  echo "setup: npm ci (web-ui)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock" > node_modules/.weft-lock.sha
fi
echo "setup: building web-ui/dist"
npm run --silent build >/dev/null
echo "$want" > "$stamp"
