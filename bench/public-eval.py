#!/usr/bin/env python3
"""The public eval (../shared/eval) through the real CLI, scored.

  bench/public-eval.py CODESEARCH_BIN CORPORA [--mode hybrid] [--out results.jsonl] [--no-index]

CORPORA is the folder `../shared/eval/fetch.sh CORPORA` filled. Each corpus is indexed
with `codesearch index`, every query runs as `codesearch search --json -k 10 --repo
CORPUS -- QUERY` (a process per query, as a user runs it), and `score.py` prints
MRR@10, Recall@k and nDCG@10 per corpus and overall. Uses the caller's
CODESEARCH_HOME.
"""
import argparse, json, subprocess, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent.parent / "shared" / "eval"

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("corpora")
ap.add_argument("--mode", default="hybrid")
ap.add_argument("--out", default="public-eval-results.jsonl")
ap.add_argument("--no-index", action="store_true")
ap.add_argument("--eval", default=str(EVAL))
a = ap.parse_args()

ev = Path(a.eval)
corpora = Path(a.corpora).resolve()
roots = {c["name"]: corpora / c["name"] for c in json.load(open(ev / "corpora.json"))}
if not a.no_index:
    for name, root in roots.items():
        subprocess.run([a.bin, "index", str(root)], stdout=subprocess.DEVNULL, check=True)

with open(a.out, "w") as out:
    for line in open(ev / "queries.jsonl"):
        if not line.strip():
            continue
        q = json.loads(line)
        root = roots[q["corpus"]]
        p = subprocess.run(
            [a.bin, "search", "--json", "-k", "10", "--mode", a.mode, "--repo", str(root), "--", q["query"]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if p.returncode not in (0, 1):
            sys.exit(f"search failed for {q['id']}: {p.stderr}")
        hits = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        results = [{"path": h["path"], "start_line": h["start_line"], "end_line": h["end_line"]} for h in hits]
        out.write(json.dumps({"id": q["id"], "results": results}) + "\n")
sys.exit(subprocess.run([sys.executable, str(ev / "score.py"), a.out]).returncode)
