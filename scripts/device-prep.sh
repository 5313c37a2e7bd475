#!/usr/bin/env bash
# Prepare .device/ for the H200 machine (lead's tool; not part of setup): stage the runtime + Vulkan loader +
# wgpu-native with ../shared/device/stage.sh, then pack the npm runtime dependencies (JS only: no source maps,
# no type declarations, no deno/bun binaries) into .device/nm.tar.xz, which .device/go.sh unpacks as
# node_modules before running a command:   bash .device/go.sh deno run -A benchmarks/device/...
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
lib="${LONGCTX_WGPU_LIB:-.cache/wgpu/libwgpu_native.so}"
bash ../shared/device/stage.sh --lib "$lib"
tmp=$(mktemp -d)
for d in node_modules/*; do
  case "$(basename "$d")" in deno|bun|@deno|@oven|bun-types|@types|undici-types|.bin) continue ;; esac
  mkdir -p "$tmp/node_modules"; cp -r "$d" "$tmp/node_modules/"
done
# npm webgpu (Dawn): only the linux-x64 addon travels (the other platforms' builds would not fit).
if [ -d "$tmp/node_modules/webgpu/dist" ]; then
  find "$tmp/node_modules/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
fi
find "$tmp" \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete
rm -rf "$tmp/node_modules/effect/src" "$tmp/node_modules/effect/ai-docs"
tar -C "$tmp" -cf - node_modules | xz -T2 -6 > .device/nm.tar.xz
rm -rf "$tmp"
cat > .device/go.sh <<'GO'
#!/usr/bin/env bash
# On the device: unpack node_modules (JS deps) next to the tree, then run "$@" through enter.sh.
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/../node_modules" ] || tar -C "$here/.." -xJf "$here/nm.tar.xz"
exec bash "$here/enter.sh" "$@"
GO
chmod +x .device/go.sh
du -sh .device
