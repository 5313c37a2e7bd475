#!/usr/bin/env bash
# Runs the pinned bun with the given arguments: node_modules/.bin/bun (installed by scripts/setup.sh from
# package-lock.json), else a bun on PATH. Sets XDG_RUNTIME_DIR=/tmp when unset.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/node_modules/.bin:$PATH"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if ! command -v bun >/dev/null 2>&1; then
  echo "bun not found: run 'npm run setup' (installs bun into node_modules/.bin)" >&2
  exit 127
fi
exec bun "$@"
