#!/usr/bin/env bash
# Convert a rendered chart to PNG to look at it (the SVG check of issue 9):
#   bash benchmarks/charts/to_png.sh [benchmarks/charts/latency.svg] [out.png]
# Needs rsvg-convert (Debian: apt-get install -y librsvg2-bin). Prints the PNG's size; fails on a bad SVG.
set -euo pipefail
svg=${1:-benchmarks/charts/latency.svg}
png=${2:-${TMPDIR:-/tmp}/$(basename "${svg%.svg}").png}
command -v rsvg-convert >/dev/null || { echo "rsvg-convert missing: apt-get install -y librsvg2-bin" >&2; exit 127; }
rsvg-convert --width 1200 --background-color white "$svg" -o "$png"
python3 - "$png" <<'PY' 2>/dev/null || file "$png"
import struct, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(24)
assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", head[16:24])
print(f"{sys.argv[1]}: PNG {w}x{h}")
PY
