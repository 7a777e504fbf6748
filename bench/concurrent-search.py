#!/usr/bin/env python3
"""Searches/s and latency with many clients at once, on a warm daemon.

  bench/concurrent-search.py CODESEARCH_BIN QUERIES.jsonl REPO [REPO...]
      [--clients 1,8,32,64] [--seconds 10] [--texts distinct|repeated]
      [--mode hybrid|semantic|lexical]

Indexes the repositories (waiting) through the client, then for each client
count opens that many connections to the daemon's socket (as editors and agents
do: one connection each, JSON-RPC lines), and each sends `search` requests one
after another for the given seconds. Prints, per count: searches/s in all,
p50 and p99 of each request's time (send to answer), and errors.

--texts distinct (default) makes every query text unique (a numbered suffix),
so no answer can come from a cache; --texts repeated cycles through the file's
queries as they are, as agents repeating a search would.
Uses the caller's CODESEARCH_HOME (set it to a scratch folder).
"""
import argparse, json, os, socket, statistics, subprocess, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("queries")
ap.add_argument("repos", nargs="+")
ap.add_argument("--clients", default="1,8,32,64")
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--texts", choices=["distinct", "repeated"], default="distinct")
ap.add_argument("--k", type=int, default=10)
ap.add_argument("--mode", choices=["hybrid", "semantic", "lexical"], default="hybrid")
a = ap.parse_args()

for repo in a.repos:
    subprocess.run([a.bin, "index", repo], stdout=subprocess.DEVNULL, check=True)
home = os.environ.get("CODESEARCH_HOME") or os.path.expanduser("~/.codesearch")
sock_path = os.environ.get("CODESEARCH_SOCKET") or os.path.join(home, "codesearchd.sock")
queries = [json.loads(l)["query"] for l in open(a.queries) if l.strip()]
repos = [os.path.realpath(r) for r in a.repos]


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    return s, s.makefile("rb")


def search(conn, reader, rid, text):
    req = {"jsonrpc": "2.0", "id": rid, "method": "search",
           "params": {"query": text, "k": a.k, "repos": repos, "mode": a.mode}}
    conn.sendall((json.dumps(req) + "\n").encode())
    while True:
        line = reader.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        msg = json.loads(line)
        if msg.get("id") == rid:
            return msg


counter = iter(range(10**9))
counter_lock = threading.Lock()


def next_text(i):
    with counter_lock:
        n = next(counter)
    q = queries[(i + n) % len(queries)]
    return f"{q} {n}" if a.texts == "distinct" else q


def client(i, stop_at, lat, errors):
    conn, reader = connect()
    rid = 0
    try:
        while time.monotonic() < stop_at:
            rid += 1
            t0 = time.monotonic()
            try:
                msg = search(conn, reader, rid, next_text(i))
            except (OSError, ValueError) as e:
                errors.append(repr(e))
                conn, reader = connect()
                continue
            if "error" in msg:
                errors.append(msg["error"].get("message", "?"))
            else:
                lat.append(time.monotonic() - t0)
    finally:
        conn.close()


# Warm: the model, the indexes' pages.
conn, reader = connect()
for n, q in enumerate(queries[:10]):
    search(conn, reader, n + 1, q)
conn.close()

print(f"{'clients':>7}  {'searches/s':>10}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}   ({a.texts} texts, {a.mode}, {a.seconds:g} s each)")
for n in [int(c) for c in a.clients.split(",")]:
    lat, errors = [], []
    start = time.monotonic()
    stop_at = start + a.seconds
    threads = [threading.Thread(target=client, args=(i, stop_at, lat, errors)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    lat.sort()
    p = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    print(f"{n:>7}  {len(lat) / took:>10.1f}  {p(0.5):>7.1f}  {p(0.99):>7.1f}  {len(errors):>6}", flush=True)
    if errors:
        print("   first error:", errors[0])
