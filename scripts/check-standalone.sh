#!/usr/bin/env bash
# The repository stands alone: a clone has no ../shared beside it and no machine's paths, so
# no tracked file that the README's commands build or run may name them. Markdown is prose
# (it may cite the project's notes); scripts/device/ runs only on a lent GPU machine, whose
# test binaries carry the checkout path they were built in; scripts/test.sh names ../shared
# only to hide it from the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\.\./shared|/work/|/root/|/home/[a-z]'
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  hits=$(git grep -nIE "$pattern" -- . ':!*.md' ':!scripts/device/' ':!scripts/check-standalone.sh' ':!scripts/test.sh' \
    ':!web-ui/package-lock.json' || true)
else
  hits=$(grep -rnIE "$pattern" --exclude='*.md' --exclude=check-standalone.sh --exclude=test.sh \
    --exclude=package-lock.json --exclude-dir=device --exclude-dir=target --exclude-dir=.venv \
    --exclude-dir=node_modules --exclude-dir=dist --exclude-dir=converted . || true)
fi
if [ -n "$hits" ]; then
  echo "check-standalone: these lines name a path outside the repository (../shared or a machine path);" >&2
  echo "carry the data into the repository and name it relative to the root:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "check-standalone: no tracked file names ../shared or a machine path"
