#!/usr/bin/env bash
# Runs the pinned deno with the given arguments: node_modules/.bin/deno (installed by scripts/setup.sh from
# package-lock.json), else a deno on PATH. Puts node_modules/.bin first on PATH, so that tasks calling
# `deno` or `bun` get the pinned ones too, and sets XDG_RUNTIME_DIR=/tmp when unset (silences a Vulkan warning).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/node_modules/.bin:$PATH"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if ! command -v deno >/dev/null 2>&1; then
  echo "deno not found: run 'npm run setup' (installs deno into node_modules/.bin)" >&2
  exit 127
fi
exec deno "$@"
