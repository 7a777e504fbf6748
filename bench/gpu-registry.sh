#!/usr/bin/env bash
# The issue-19 GPU figures on a lent GPU machine, which starts bare, takes at most
# 64 MiB a call and has no network: cargo's registry sources cold-indexed end to end
# (parallel and one-thread HNSW graph, recall@10 of both) and the engine alone beside
# sentence-transformers.
#
#   bench/gpu-registry.sh stage CODESEARCHD_CUDA   # here, on the build box: fills .gpu/
#   bench/gpu-registry.sh engine                   # there, call 1 (carry .gpu/m16 .gpu/b .gpu/ref)
#   bench/gpu-registry.sh index [both]             # there, call 2 (carry .gpu/reg), while call 1's machine is warm
#
# stage writes .gpu/ (git-ignored), in four parts that fit the carry limit two by two:
#   m16/  all-MiniLM-L6-v2 from the HF cache (scripts/fetch-model.sh) with its weights
#         cast to f16 (45 MB instead of 90): the GPU runs f16 either way
#   b/    the CUDA binary (scripts/build-cuda.sh), xz-compressed
#   ref/  ../shared/reference's chunks and reference vectors
#   reg/  the registry sources as an xz of every file <= 1 MiB plus the sizes of the
#         larger ones (recreated by truncate: they are skipped by size alone, so the pass
#         is the same), and the 440 queries of both eval sets as recall probes
# engine copies m16, b and ref to /tmp/keep on the GPU machine (a later call that does
# not carry them removes them from the tree) and runs bench/gpu-vs-pytorch.sh.
# index restores them from /tmp/keep and runs bench/gpu-index.sh on the registry, then
# with "both" the same with CODESEARCH_HNSW_INSERTS=serial.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
gpu=.gpu
die() { echo "gpu-registry.sh: error: $*" >&2; exit 1; }

stage() {
  local bin="${1:-}"
  [[ -x "$bin" ]] || die "stage needs the CUDA build of codesearchd (scripts/build-cuda.sh) as its argument"
  local hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
  local snap
  snap="$(ls -d "$hub"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ 2>/dev/null | head -1)"
  [[ -n "$snap" && -f "$snap/model.safetensors" ]] || die "no all-MiniLM-L6-v2 in $hub: run scripts/fetch-model.sh"
  local registry
  registry="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/index.crates.io-*/ 2>/dev/null | head -1)"
  [[ -n "$registry" ]] || die "no registry sources in ${CARGO_HOME:-$HOME/.cargo}/registry/src: run cargo fetch or a build first"
  local reference="${REFERENCE:-$repo/../shared/reference}"
  [[ -f "$reference/chunks.jsonl" ]] || die "no $reference/chunks.jsonl (set REFERENCE)"

  rm -rf "$gpu" && mkdir -p "$gpu"/{m16,b,ref,reg}
  echo "== model (f16) from $snap"
  cp -L "$snap"/config.json "$snap"/tokenizer.json "$gpu/m16/"
  [[ -f "$snap/sentence_bert_config.json" ]] && cp -L "$snap/sentence_bert_config.json" "$gpu/m16/"
  [[ -d "$snap/1_Pooling" ]] && cp -rL "$snap/1_Pooling" "$gpu/m16/"
  python3 - "$snap/model.safetensors" "$gpu/m16/model.safetensors" <<'EOF'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header, body = json.loads(data[8:8 + n]), data[8 + n:]
out, parts, offset = {}, [], 0
for name, t in header.items():
    if name == "__metadata__":
        out[name] = t
        continue
    start, end = t["data_offsets"]
    raw, dtype = body[start:end], t["dtype"]
    if dtype == "F32":
        count = len(raw) // 4
        raw, dtype = struct.pack(f"<{count}e", *struct.unpack(f"<{count}f", raw)), "F16"
    out[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [offset, offset + len(raw)]}
    parts.append(raw)
    offset += len(raw)
head = json.dumps(out).encode()
head += b" " * (-len(head) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head)
    for p in parts:
        f.write(p)
EOF
  echo "== binary"
  xz -T0 -6 -c "$bin" > "$gpu/b/cs.xz"
  cp "$reference/chunks.jsonl" "$reference/ref_first20.json" "$gpu/ref/"
  echo "== registry sources from $registry"
  local root
  root="$(dirname "$(dirname "$registry")")"   # …/registry
  (cd "$root" && find "src/$(basename "$registry")" -type f -size +1024k -printf '%s %p\n') > "$gpu/reg/bigs.txt"
  (cd "$root" && find "src/$(basename "$registry")" -type f -size -1025k -print0 \
    | tar --null -cf - -T - | xz -T0 -6) > "$gpu/reg/reg.txz"
  echo "== queries"
  python3 - "$repo/../shared" "$gpu/reg/q.jsonl" <<'EOF'
import json, os, sys
shared, out = sys.argv[1], open(sys.argv[2], "w")
for line in open(os.path.join(shared, "eval", "queries.jsonl")):
    q = json.loads(line)
    out.write(json.dumps({k: q[k] for k in ("id", "query", "path", "start_line", "end_line")}) + "\n")
for line in open(os.path.join(shared, "eval-semble-dev", "dataset", "queries.jsonl")):
    q = json.loads(line)
    out.write(json.dumps({"id": q["id"], "query": q["query"], "path": q["relevant"][0]["path"],
                          "start_line": 1, "end_line": 1}) + "\n")
EOF
  du -sh "$gpu"/*
}

machine() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
}

engine() {
  mkdir -p /tmp/keep && cp -r "$gpu/m16" "$gpu/b" "$gpu/ref" /tmp/keep/
  xz -dc "$gpu/b/cs.xz" > /tmp/cs && chmod +x /tmp/cs
  machine
  bench/gpu-vs-pytorch.sh --bin /tmp/cs --model "$gpu/m16" --chunks "$gpu/ref/chunks.jsonl" \
    --reference "$gpu/ref/ref_first20.json" --out "${OUT:-/tmp}/gpu-vs-pytorch"
}

index() {
  [[ -d /tmp/keep/m16 ]] || die "run 'engine' first on this machine (it keeps the model in /tmp/keep)"
  for part in m16 ref b; do [[ -e "$gpu/$part" ]] || cp -r "/tmp/keep/$part" "$gpu/"; done
  [[ -x /tmp/cs ]] || { xz -dc "$gpu/b/cs.xz" > /tmp/cs && chmod +x /tmp/cs; }
  if [[ ! -d /tmp/reg/src ]]; then
    mkdir -p /tmp/reg && xz -dc "$gpu/reg/reg.txz" | tar -xf - -C /tmp/reg
    while read -r size path; do
      mkdir -p "/tmp/reg/$(dirname "$path")" && truncate -s "$size" "/tmp/reg/$path"
    done < "$gpu/reg/bigs.txt"
  fi
  machine
  local registry
  registry="$(ls -d /tmp/reg/src/index.crates.io-*)"
  REFERENCE="$gpu/ref" bench/gpu-index.sh --model "$gpu/m16" --repo "$registry" \
    --recall 1000 --queries "$gpu/reg/q.jsonl" /tmp/cs
  if [[ "${1:-}" == both ]]; then
    CODESEARCH_HNSW_INSERTS=serial bench/gpu-index.sh --model "$gpu/m16" --repo "$registry" \
      --recall 1000 --queries "$gpu/reg/q.jsonl" /tmp/cs
  fi
}

case "${1:-}" in
  stage) shift; stage "$@" ;;
  engine) engine ;;
  index) shift; index "$@" ;;
  *) echo "usage: $0 stage CODESEARCHD_CUDA | engine | index [both]" >&2; exit 2 ;;
esac
