#!/usr/bin/env bash
# Our engine against sentence-transformers (PyTorch) on the same NVIDIA GPU, in one go:
# the same chunks (chunks.jsonl repeated to ≥ 50,000), the same max length (256), the
# same batch policy (length-sorted, ≤ MAX_BATCH texts and ≤ TOKEN_BUDGET padded tokens
# per forward pass), each run timed from text to vectors in host memory.
#
#   bench/gpu-vs-pytorch.sh --bin target/release/codesearchd-cuda --model MODEL_DIR \
#       [--chunks ../shared/reference/chunks.jsonl] [--reference ../shared/reference/ref_first20.json] \
#       [--repeat 25] [--max-batch 512] [--token-budget 65536] [--out DIR] [--sweep]
#
# MODEL_DIR: the all-MiniLM-L6-v2 folder (model.safetensors in f32, tokenizer.json, …).
# Needs python3 with torch and sentence-transformers, and the CUDA libraries that
# codesearchd links (libcublas, libcublasLt, libcurand, libnvrtc, libcudart of CUDA 13):
# when LD_LIBRARY_PATH does not already hold them, PyTorch's nvidia-* wheels are used.
# Writes one JSON line per run to DIR/results.jsonl and prints a Markdown table.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="" model="" out="${OUT:-/tmp/gpu-bench}"
chunks="$here/../../shared/reference/chunks.jsonl"
reference="$here/../../shared/reference/ref_first20.json"
repeat=25 max_batch=512 budget=65536 sweep=false
while (($#)); do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --chunks) chunks="$2"; shift 2 ;;
    --reference) reference="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --max-batch) max_batch="$2"; shift 2 ;;
    --token-budget) budget="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --sweep) sweep=true; shift ;;
    *) echo "gpu-vs-pytorch.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$bin" && -d "$model" ]] || { echo "usage: $0 --bin CODESEARCHD --model MODEL_DIR [...]" >&2; exit 2; }
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

# CUDA 13 libraries from PyTorch's wheels (nvidia/cu13/lib), after whatever is set.
if [[ "$(ldd "$bin")" == *"not found"* ]]; then
  cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cu13"
fi
if ldd "$bin" | grep "not found"; then echo "gpu-vs-pytorch.sh: libraries missing (above)" >&2; exit 1; fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, sentence_transformers as st; print("torch", torch.__version__, "sentence-transformers", st.__version__)' | tee -a "$out/gpu.txt"

ours() { # precision [extra flags...]
  local p="$1"; shift
  echo "== ours $p $*" >&2
  "$bin" bench-embed --device cuda --precision "$p" --model-path "$model" \
    --chunks "$chunks" --reference "$reference" --repeat "$repeat" \
    --batch-size "$max_batch" --token-budget "$budget" --json "$@" 2>>"$out/log.txt" \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['runtime']='codesearchd'; r['dtype']='$p'; print(json.dumps(r))" \
    | tee -a "$results"
}
peer() { # dtype [gpu_peer.py flags...]
  local d="$1"; shift
  echo "== sentence-transformers $d $*" >&2
  python3 "$here/gpu_peer.py" "$model" --chunks "$chunks" --reference "$reference" \
    --repeat "$repeat" --dtype "$d" --max-batch "$max_batch" --token-budget "$budget" "$@" \
    2>>"$out/log.txt" | tail -1 | tee -a "$results"
}

# Alternating, half precision first (the headline), then f32, then bf16. PyTorch twice:
# as it comes (its SDPA picks cuDNN attention on Hopper, which builds a plan for every
# new batch shape) and with cuDNN attention off (flash / memory-efficient kernels).
ours f16
peer fp16
peer fp16 --no-cudnn-attention
ours f32
peer fp32 --no-cudnn-attention
ours bf16
peer bf16 --no-cudnn-attention
peer fp16 --policy encode --no-cudnn-attention
ours f16
if $sweep; then
  for mb_tb in 256:32768 1024:131072; do
    max_batch="${mb_tb%%:*}" budget="${mb_tb#*:}"
    ours f16
    peer fp16 --no-cudnn-attention
  done
fi

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print()
print("| runtime | dtype | batch policy | chunks | secs | chunks/s | tokens/s | padding | query (median) | min cosine vs reference |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    pol = f"≤{r['max_batch']} texts / ≤{r['token_budget']} tokens" if r.get("token_budget") else f"encode(batch_size={r['max_batch']})"
    pad = f"{r['padding_ratio']:.3f}×" if r.get("padding_ratio") else "—"
    print(f"| {r['runtime']} | {r['dtype']} | {pol} | {r['chunks']:,} | {r['secs']:.2f} | {r['chunks_per_s']:,.0f} | {r['tokens_per_s']:,.0f} | {pad} "
          f"| {r['query_ms_median']:.2f} ms | {r['min_cos_vs_reference']:.7f} |")
EOF
