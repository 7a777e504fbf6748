#!/usr/bin/env python3
"""`codesearch search` wall time, process start to exit, on a warm daemon.

  bench/search-latency.py CODESEARCH_BIN QUERIES.jsonl REPO [REPO...] [--reindex OTHER_REPO] [--n 200]

Indexes the repositories (waiting), warms the daemon, then runs N searches taken
round-robin from the queries file and prints median and p99 in milliseconds.
With --reindex, a full re-index of OTHER_REPO runs during the timed searches
(restarted whenever it finishes), to measure searches while the model is busy.
Uses the caller's CODESEARCH_HOME (set it to a scratch folder).
"""
import argparse, json, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("queries")
ap.add_argument("repos", nargs="+")
ap.add_argument("--reindex")
ap.add_argument("--n", type=int, default=200)
a = ap.parse_args()

def run(*args, check=True):
    return subprocess.run([a.bin, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=check)

for repo in a.repos + ([a.reindex] if a.reindex else []):
    run("index", repo)
queries = [json.loads(l)["query"] for l in open(a.queries) if l.strip()]
for q in queries[:5]:
    run("search", q, check=False)

busy = None
def keep_busy():
    global busy
    if a.reindex and (busy is None or busy.poll() is not None):
        busy = subprocess.Popen([a.bin, "index", "--full", a.reindex], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

times = []
for i in range(a.n):
    keep_busy()
    q = queries[i % len(queries)]
    t = time.perf_counter()
    p = run("search", q, "-k", "10", check=False)
    times.append((time.perf_counter() - t) * 1000)
    if p.returncode not in (0, 1):
        sys.exit(f"search failed: {p.stderr.decode()}")
if busy is not None:
    busy.wait()
times.sort()
print(json.dumps({
    "searches": len(times),
    "reindexing": a.reindex,
    "median_ms": round(statistics.median(times), 2),
    "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
    "max_ms": round(times[-1], 2),
}))
