#!/usr/bin/env bash
# Peak RSS of a cold `bench-index` against repository size (issue 14): cargo's registry
# sources (index.crates.io-1949cf8c6b5b557f) whole and in nested subsets of its crates
# (1/16, 2/16, 4/16, 8/16 by registry-buckets.tsv: 16 buckets balanced by source bytes,
# subset n/16 = buckets 16-n..15), each in a fresh process and index folder, VmRSS and
# VmHWM sampled every second into $OUT/rss.txt beside bench-index's own memory line.
#
#   bench/index-memory/run.sh BIN MODEL_DIR REGISTRY_DIR [cuda|cpu]
#
# As run on the H200 (docs/BENCHMARKS.md, "Memory while indexing"): the registry came as
# an xz of every file ≤ 1 MiB plus large.tsv (size, path) of the 40 larger ones, which the
# indexer skips by size alone, recreated here with `truncate -s` before this script.
set -u
bin=$1 model=$2 R=$3 device=${4:-cuda}
here="$(cd "$(dirname "$0")" && pwd)"
OUT=${OUT:-/tmp/index-memory}; mkdir -p "$OUT"
T0=$(date +%s)
for n in 1 2 4 8; do
  d=/tmp/sub/reg-${n}of16; rm -rf "$d"; mkdir -p "$d"
  awk -F'\t' -v lo=$((16-n)) '$1>=lo {print $2}' "$here/registry-buckets.tsv" \
    | while read -r c; do cp -al "$R/$c" "$d/"; done
done
run() { # name root seconds-it-needs
  local name=$1 root=$2
  local left=$(( 590 - ($(date +%s) - T0) ))
  if (( left < $3 )); then echo "== $name skipped: $left s left"; return; fi
  echo "== $name ($root: $(find "$root" -type f | wc -l) files) at +$(( $(date +%s) - T0 )) s"
  rm -rf "/tmp/idx-$name"
  RUST_LOG=warn "$bin" bench-index --device "$device" --model-path "$model" --index-dir "/tmp/idx-$name" "$root" > "/tmp/$name.log" 2>&1 &
  local pid=$! t; t=$(date +%s.%N)
  while kill -0 $pid 2>/dev/null; do
    echo "$name $(awk -v t="$t" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-t}') $(awk '/^VmRSS|^VmHWM/ {printf "%s ", $2}' /proc/$pid/status 2>/dev/null)" >> "$OUT/rss.txt"
    sleep 1
  done
  wait $pid; echo "rc=$?"; grep -v INFO "/tmp/$name.log"
}
run all "$R" 250
for n in 1 2 4 8; do run reg-${n}of16 /tmp/sub/reg-${n}of16 $(( 20 + 25 * n )); done
echo "total $(( $(date +%s) - T0 )) s"
