#!/usr/bin/env python3
"""The semble development split through the daemon's `search` method, scored.

  bench/semble-dev.py CODESEARCH_BIN CHECKOUTS [--mode hybrid] [--out results.jsonl]
                      [--repos a,b] [--no-index] [--json-out scores.json]

CHECKOUTS is the folder `../shared/eval-semble-dev/materialize.sh MIRROR CHECKOUTS`
filled (it holds `materialized.json`). Each repository's `benchmark_root` is indexed
with `codesearch index` (the path users run; it waits for the pass), then every query
of `dataset/queries.jsonl` for it goes to the daemon's `search` method over the
socket (the method the CLI, the MCP bridge and editor plugins call), restricted to
that repository, k=10. The results file is what `score.py` reads; the script runs
it in chunk mode and prints its table (per repository, per language, the published
peers on the same repositories).

Uses the caller's CODESEARCH_HOME (set it to a scratch folder to measure a cold
index); `--no-index` searches what the daemon already has.
"""
import argparse, json, os, socket, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLIT = HERE.parent.parent / "shared" / "eval-semble-dev"

ap = argparse.ArgumentParser()
ap.add_argument("bin", help="the codesearch client binary")
ap.add_argument("checkouts")
ap.add_argument("--mode", default="hybrid")
ap.add_argument("--out", default="semble-dev-results.jsonl")
ap.add_argument("--json-out")
ap.add_argument("--repos", help="comma-separated subset")
ap.add_argument("--no-index", action="store_true")
ap.add_argument("--split", default=str(SPLIT))
ap.add_argument("-k", type=int, default=10)
a = ap.parse_args()

split = Path(a.split)
checkouts = Path(a.checkouts).resolve()
materialized = json.load(open(checkouts / "materialized.json"))["repos"]
wanted = set(a.repos.split(",")) if a.repos else None
roots = {}
for r in materialized:
    if wanted and r["name"] not in wanted:
        continue
    roots[r["name"]] = (checkouts / r["name"] / (r["benchmark_root"] or "")).resolve()

home = Path(os.environ.get("CODESEARCH_HOME", Path.home() / ".codesearch"))
sock_path = os.environ.get("CODESEARCH_SOCKET", str(home / "codesearchd.sock"))


def index(name, root):
    t = time.perf_counter()
    p = subprocess.run([a.bin, "index", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"index {name} ({root}) failed: {p.stderr.decode()}")
    return time.perf_counter() - t


class Rpc:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.id = 0

    def call(self, method, params):
        self.id += 1
        self.f.write(json.dumps({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}).encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("id") == self.id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]


index_s = {}
if not a.no_index:
    for name, root in roots.items():
        index_s[name] = round(index(name, root), 1)
        print(f"indexed {name} in {index_s[name]} s", file=sys.stderr)
if not os.path.exists(sock_path):
    subprocess.run([a.bin, "status"], stdout=subprocess.DEVNULL, check=True)
rpc = Rpc(sock_path)
status = {r["path"]: r for r in rpc.call("repo.list", {})}

queries = [json.loads(l) for l in open(split / "dataset" / "queries.jsonl") if l.strip()]
took = []
with open(a.out, "w") as out:
    for q in queries:
        if q["repo"] not in roots:
            continue
        root = roots[q["repo"]]
        res = rpc.call("search", {"query": q["query"], "k": a.k, "repos": [str(root)], "mode": a.mode})
        took.append(res["took_ms"])
        results = [
            {"repo": q["repo"], "path": str(root / h["path"]), "start_line": h["start_line"], "end_line": h["end_line"]}
            for h in res["results"]
        ]
        out.write(json.dumps({"id": q["id"], "results": results}) + "\n")

chunks = sum(status.get(str(r), {}).get("chunks", 0) for r in roots.values())
took.sort()
print(json.dumps({
    "queries": len(took),
    "chunks": chunks,
    "index_s": index_s,
    "search_median_ms": round(took[len(took) // 2], 2) if took else None,
}), file=sys.stderr)
cmd = [sys.executable, str(split / "score.py"), a.out, "--materialized", str(checkouts), "--mode", "chunk"]
if a.json_out:
    cmd += ["--json-out", a.json_out]
sys.exit(subprocess.run(cmd).returncode)
