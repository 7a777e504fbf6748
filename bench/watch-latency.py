#!/usr/bin/env python3
"""Save-to-searchable latency of the live index: a one-function edit, written to
disk, until `search` over the daemon's socket returns the new function.

  bench/watch-latency.py CODESEARCH_BIN CORPUS [--n 50]

Copies CORPUS to a scratch folder, indexes it (waiting), then N times: rewrites
one Python or Rust file as its original text plus one new function with a fresh
name, and polls `search` (every 10 ms, filtered to that file) until a hit has the
new function's name. Prints p50 and p95 in milliseconds.
Uses the caller's CODESEARCH_HOME (set it to a scratch folder).
"""
import argparse, json, os, pathlib, shutil, socket, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("corpus")
ap.add_argument("--n", type=int, default=50)
a = ap.parse_args()

home = pathlib.Path(os.environ.get("CODESEARCH_HOME", pathlib.Path.home() / ".codesearch"))
sock_path = os.environ.get("CODESEARCH_SOCKET", str(home / "codesearchd.sock"))
scratch = pathlib.Path(tempfile.mkdtemp(prefix="watch-latency-"))
root = scratch / "repo"
shutil.copytree(a.corpus, root)
subprocess.run([a.bin, "index", str(root)], check=True, stdout=subprocess.DEVNULL)

files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".rs") and "/." not in str(p))
if not files:
    sys.exit("no .py or .rs files in the corpus")
sock = socket.socket(socket.AF_UNIX)
sock.connect(sock_path)
reader = sock.makefile("r")

def search(query, rel):
    req = {"jsonrpc": "2.0", "id": 1, "method": "search",
           "params": {"query": query, "k": 20, "paths": [rel], "mode": "semantic"}}
    sock.sendall((json.dumps(req) + "\n").encode())
    return json.loads(reader.readline())["result"]["results"]

times = []
for i in range(a.n):
    f = files[(i * 7) % len(files)]
    rel = str(f.relative_to(root))
    original = f.read_text()
    name = f"probe_rotate_ledger_{i}"
    if f.suffix == ".py":
        added = f'\n\ndef {name}(ledger):\n    """Rotate ledger {i} once it is full."""\n    return ledger\n'
    else:
        added = f"\n\n/// Rotate ledger {i} once it is full.\npub fn {name}(ledger: u32) -> u32 {{\n    ledger\n}}\n"
    t = time.perf_counter()
    f.write_text(original + added)
    while True:
        if any(h.get("symbol") == name for h in search(f"rotate ledger {i} once it is full", rel)):
            break
        if time.perf_counter() - t > 30:
            sys.exit(f"edit {i} of {rel} not searchable after 30 s")
        time.sleep(0.01)
    times.append((time.perf_counter() - t) * 1000)
    f.write_text(original)
    time.sleep(0.3)  # let the restore settle, so the next edit is measured alone

subprocess.run([a.bin, "remove", str(root)], stdout=subprocess.DEVNULL)
shutil.rmtree(scratch, ignore_errors=True)
times.sort()
print(json.dumps({
    "edits": len(times),
    "corpus": a.corpus,
    "p50_ms": round(statistics.median(times), 1),
    "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
    "max_ms": round(times[-1], 1),
}))
