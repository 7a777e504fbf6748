#!/usr/bin/env python3
"""`codesearch search` wall time, process start to exit, on a warm daemon.

  bench/search-latency.py CODESEARCH_BIN QUERIES.jsonl REPO [REPO...] [--reindex OTHER_REPO] [--n 200]

Indexes the repositories (waiting), warms the daemon, then runs N searches taken
round-robin from the queries file and prints median and p99 in milliseconds.
With --reindex, OTHER_REPO is indexed from scratch during the timed searches, as a
fresh copy each round (a new repository embeds everything; re-indexing the same one
would reuse its cached vectors and leave the model idle), to measure searches while
the model and the store are busy.
Uses the caller's CODESEARCH_HOME (set it to a scratch folder).
"""
import argparse, json, shutil, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("queries")
ap.add_argument("repos", nargs="+")
ap.add_argument("--reindex")
ap.add_argument("--n", type=int, default=200)
# The daemon keeps the vectors of recent query texts, so cycling the queries
# would time the cache after the first round: each text gets a numbered suffix
# unless --texts repeated.
ap.add_argument("--texts", choices=["distinct", "repeated"], default="distinct")
a = ap.parse_args()

def run(*args, check=True):
    return subprocess.run([a.bin, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=check)

for repo in a.repos:
    run("index", repo)
queries = [json.loads(l)["query"] for l in open(a.queries) if l.strip()]
for q in queries[:5]:
    run("search", "--", q, check=False)

busy, copy, rounds = None, None, 0
scratch = tempfile.mkdtemp(prefix="search-latency-")
def keep_busy():
    global busy, copy, rounds
    if a.reindex and (busy is None or busy.poll() is not None):
        if copy:
            run("remove", copy, check=False)
        rounds += 1
        copy = shutil.copytree(a.reindex, f"{scratch}/other-{rounds}")
        busy = subprocess.Popen([a.bin, "index", copy], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

times = []
for i in range(a.n):
    keep_busy()
    q = queries[i % len(queries)]
    if a.texts == "distinct":
        q = f"{q} {i}"
    t = time.perf_counter()
    p = run("search", "-k", "10", "--", q, check=False)
    times.append((time.perf_counter() - t) * 1000)
    if p.returncode not in (0, 1):
        sys.exit(f"search failed: {p.stderr.decode()}")
if busy is not None:
    busy.wait()
    run("remove", copy, check=False)
shutil.rmtree(scratch, ignore_errors=True)
times.sort()
print(json.dumps({
    "searches": len(times),
    "reindexing": a.reindex,
    "index_rounds_started": rounds,
    "median_ms": round(statistics.median(times), 2),
    "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
    "max_ms": round(times[-1], 2),
}))
