#!/usr/bin/env bash
# Cold indexing of one large repository on an NVIDIA GPU, the whole pipeline (walk,
# parse, embed, SQLite, HNSW), with one or more codesearchd builds in turn, so
# that a change is measured against its base on the same machine in one run.
#
#   bench/gpu-index.sh --model MODEL_DIR --repo DIR [--recall PROBES [--queries FILE]] BIN [BIN...]
#
# --recall (and --queries) pass through to bench-index: the HNSW graph's recall@10
# against an exact scan, with PROBES stored chunks (and the queries' texts) as probes.
# The environment passes through too: CODESEARCH_HNSW_INSERTS=serial measures the
# one-thread graph build.
#
# MODEL_DIR: an all-MiniLM-L6-v2 folder (config.json, tokenizer.json, model.safetensors);
# BIN: codesearchd binaries built with `scripts/build-cuda.sh`. Each indexes this
# bench/ folder first (the first CUDA start compiles the PTX, cached by the driver),
# then runs `codesearchd bench-index --device cuda` on DIR into a fresh index folder.
# Also prints `bench-embed` for the first BIN on the reference chunks (../shared/reference,
# or $REFERENCE), the engine alone, as the ceiling the pipeline is measured against.
# Needs the CUDA 13 libraries codesearchd links; when LD_LIBRARY_PATH lacks them,
# PyTorch's nvidia-* wheels are used, as in bench/gpu-vs-pytorch.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
model="" repo="" bins=() extra=()
while (($#)); do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --recall) extra+=(--recall "$2"); shift 2 ;;
    --queries) extra+=(--queries "$2" --results /dev/null); shift 2 ;;
    -*) echo "gpu-index.sh: unknown argument $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[[ -d "$model" && -d "$repo" && ${#bins[@]} -gt 0 ]] || {
  echo "usage: $0 --model MODEL_DIR --repo DIR BIN [BIN...]" >&2; exit 2; }

if [[ "$(ldd "${bins[0]}")" == *"not found"* ]]; then
  cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cu13"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "repository: $repo ($(find "$repo" -type f | wc -l) files, $(du -sh --apparent-size "$repo" | cut -f1))"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for bin in "${bins[@]}"; do
  # A small warm-up index first: the first CUDA start compiles the PTX (cached by the driver).
  "$bin" bench-index --device cuda --model-path "$model" --index-dir "$scratch/warm" "$here" >/dev/null 2>&1
  rm -rf "$scratch/warm" "$scratch/index"
  echo "== $bin"
  "$bin" bench-index --device cuda --model-path "$model" --index-dir "$scratch/index" "${extra[@]}" "$repo" 2>&1 \
    | grep -v -E '^\s*$|INFO'
done
reference="${REFERENCE:-$here/../../shared/reference}"
if [[ -f "$reference/chunks.jsonl" ]]; then
  echo "== engine alone: ${bins[0]} bench-embed"
  "${bins[0]}" bench-embed --device cuda --model-path "$model" --chunks "$reference/chunks.jsonl" \
    --reference "$reference/ref_first20.json" --repeat 25 2>/dev/null
fi
