#!/usr/bin/env bash
# Fetches the real code the chunker's snapshot tests read for languages that no
# crate in Cargo.lock ships (TypeScript, Java, Go, Ruby, C#, PHP, Kotlin, Swift,
# Scala, Elixir, Haskell, Lua, Zig), by pinned version from package registries:
# npm (`npm pack`), Debian (`apt-get download` + `dpkg -x`) and PyPI (`pip
# download` of a source distribution: Pygments' example files);
# and the public eval's corpora (../shared/eval/fetch.sh) for the benchmark test.
# Also makes sure the service tests' tools are there (systemd-analyze and
# systemd-socket-activate, from Debian's systemd package; python3 for plistlib),
# and the real clients the agent and editor tests drive: the official MCP SDK
# for Python (`mcp` from PyPI, pinned, in a venv under target/test-tools/mcp)
# and Neovim (Debian's `neovim`); and infinity-emb (PyPI, in a venv under
# target/test-tools/infinity), the OpenAI-compatible server the remote embedder's test runs.
#
#   scripts/fetch-test-corpora.sh [DEST]     # default: target/test-corpora
#
# Idempotent: a package already unpacked is left alone. Fails loudly.
set -euo pipefail

dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/target/test-corpora}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

die() { echo "fetch-test-corpora.sh: error: $*" >&2; exit 1; }

npm_pkg() { # name@version folder
  local spec="$1" folder="$2"
  [[ -d "$dest/$folder" ]] && return 0
  command -v npm >/dev/null || die "npm is needed to fetch $spec"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed (is the npm registry reachable?)"
  mkdir -p "$tmp/unpack"
  tar -xzf "$tmp"/*.tgz -C "$tmp/unpack"
  mv "$tmp/unpack/package" "$dest/$folder"
  rm -rf "$tmp"
  echo "fetched $spec"
}

deb_pkg() { # package=version folder
  local spec="$1" folder="$2"
  [[ -d "$dest/$folder" ]] && return 0
  command -v apt-get >/dev/null || die "apt-get is needed to fetch $spec"
  local tmp; tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download -q "$spec" >/dev/null 2>&1); then
    # A fresh machine may have no package lists yet.
    apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed (needs root and Debian's mirrors)"
    (cd "$tmp" && apt-get download -q "$spec" >/dev/null 2>&1) || die "apt-get download $spec failed"
  fi
  dpkg -x "$tmp"/*.deb "$tmp/unpack" || die "cannot unpack $spec"
  mv "$tmp/unpack" "$dest/$folder"
  rm -rf "$tmp"
  echo "fetched $spec"
}

pypi_sdist() { # name==version folder
  local spec="$1" folder="$2"
  [[ -d "$dest/$folder" ]] && return 0
  command -v python3 >/dev/null || die "python3 and pip are needed to fetch $spec"
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "$spec" >/dev/null \
    || die "pip download $spec failed (is PyPI reachable?)"
  mkdir -p "$tmp/unpack"
  tar -xzf "$tmp"/*.tar.gz -C "$tmp/unpack"
  mv "$tmp/unpack"/* "$dest/$folder"
  rm -rf "$tmp"
  echo "fetched $spec"
}

npm_pkg tiny-invariant@1.3.3 tiny-invariant-1.3.3
npm_pkg react-native-fs@2.20.0 react-native-fs-2.20.0
deb_pkg golang-github-pkg-errors-dev=0.9.1-2 golang-github-pkg-errors-0.9.1
deb_pkg ruby-rainbow=3.1.1-1 ruby-rainbow-3.1.1
npm_pkg expo-haptics@57.0.3 expo-haptics-57.0.3                  # Kotlin, Swift
deb_pkg gtk-sharp3-examples=2.99.3-4.1 gtk-sharp3-examples-2.99.3 # C#
deb_pkg php-psr-log=1.1.4-2 php-psr-log-1.1.4                     # PHP
deb_pkg libhugs-mtl-bundled=98.200609.21-6+b1 libhugs-mtl-98.200609.21 # Haskell
deb_pkg lua-inspect=3.1.1-2 lua-inspect-3.1.1                     # Lua
pypi_sdist pygments==2.19.1 pygments-2.19.1                       # Scala, Elixir, Zig
# The public retrieval eval's corpora (click from PyPI, serde_json from crates.io),
# by its own pinned recipe, for the benchmark command's test.
shared="${CODESEARCH_SHARED_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared}"
[[ -f "$shared/eval/fetch.sh" ]] || die "the shared eval is not at $shared/eval; set CODESEARCH_SHARED_DIR"
bash "$shared/eval/fetch.sh" "$dest/eval" >/dev/null || die "cannot fetch the eval corpora ($shared/eval/fetch.sh)"
echo "test corpora ready in $dest"

if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian's systemd package for the service tests"
    apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null || die "cannot install systemd"
  else
    die "the service tests need systemd-analyze and systemd-socket-activate: install your distribution's systemd package"
  fi
fi
command -v python3 >/dev/null || die "the service tests need python3 (plistlib)"

# The MCP tests' client: the official Python SDK, in a venv of its own.
mcp_version=2.3.0
venv="$(cd "$dest/.." && pwd)/test-tools/mcp"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$mcp_version')" 2>/dev/null; then
  echo "installing the MCP SDK for Python ($mcp_version) into $venv"
  python3 -m venv "$venv" || die "cannot make a venv at $venv (Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "mcp==$mcp_version" \
    || die "cannot install mcp==$mcp_version from PyPI"
fi

# The remote embedder's test serves the local MiniLM through infinity-emb, a real
# OpenAI-compatible embedding server. It pins an old huggingface_hub that
# transformers 5 cannot use, hence transformers 4.51; PyPI's Linux torch is the
# CUDA build (about 5.8 GB with its nvidia-* wheels; it runs on the CPU here).
infinity_pins=("infinity-emb[server,torch]==0.0.78" "transformers==4.51.3" "torch==2.15.0")
venv="$(cd "$dest/.." && pwd)/test-tools/infinity"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('infinity_emb') != '0.0.78')" 2>/dev/null \
    || [[ ! -x "$venv/bin/infinity_emb" ]]; then
  # The wheels (about 3.5 GB) unpack to about 5.8 GB; say so before pip runs out
  # of room halfway. No pip cache: it would keep the wheels as well.
  mkdir -p "$venv"
  free_kb=$(df -Pk "$venv" | awk 'NR == 2 { print $4 }')
  need_kb=$((10 * 1024 * 1024))
  if [[ -n "$free_kb" && "$free_kb" -lt "$need_kb" ]]; then
    die "installing ${infinity_pins[*]} into $venv needs about 10 GB free there while pip runs; $((free_kb / 1024 / 1024)) GB are free"
  fi
  echo "installing infinity-emb (an OpenAI-compatible embedding server, with torch: several GB) into $venv"
  python3 -m venv "$venv" || die "cannot make a venv at $venv (Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "${infinity_pins[@]}" \
    || die "cannot install ${infinity_pins[*]} from PyPI (out of disk? $(df -Ph "$venv" | awk 'NR == 2 { print $4 }') free in $venv)"
fi

# The Neovim plugin's test runs Debian's Neovim (0.7), the oldest the plugin supports.
if ! command -v nvim >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian's neovim package for the editor plugin's test"
    apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq neovim >/dev/null || die "cannot install neovim"
  else
    die "the editor plugin's test needs nvim (Neovim 0.7 or later): install your distribution's neovim package"
  fi
fi
