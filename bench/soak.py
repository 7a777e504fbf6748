#!/usr/bin/env python3
"""Long soak of codesearchd: fuzz lines over raw sockets, with kill -9 and restart.

  bench/soak.py CODESEARCHD_BIN [--lines 100000] [--kills 10] [--seed 14]

Starts the daemon on a scratch home (CPU, offline), registers a small tree, then
sends LINES fuzz lines (random bytes, truncated and deeply nested JSON, wrong
types, absurd numbers, batches up to 5,000 items, notifications, subscriptions,
paths like /, /proc/self, /dev/null) over connections of 1,000 lines each, with
the tree re-indexed now and then. Between KILLS+1 equal segments the daemon is
killed with SIGKILL, in the middle of a connection's traffic, and restarted on
the same home. An exit of the daemon that this script did not cause counts as
an exit; every request with an id must get exactly one JSON line back (a
connection cut by our own kill is not counted against that). Prints one JSON
summary line at the end: lines, answers, mismatches, exits, restarts, seconds,
lines/s, the daemon's peak RSS.
"""
import argparse, json, os, pathlib, random, signal, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("--lines", type=int, default=100_000)
ap.add_argument("--kills", type=int, default=10)
ap.add_argument("--seed", type=int, default=14)
ap.add_argument("--per-connection", type=int, default=1000)
a = ap.parse_args()

rng = random.Random(a.seed)
scratch = pathlib.Path(tempfile.mkdtemp(prefix="soak-"))
home = scratch / "home"
tree = scratch / "tree"
tree.mkdir()
(tree / "paths.py").write_text(
    "def parse_path(p):\n    \"\"\"Split a path into parts.\"\"\"\n    return p.split('/')\n")
(tree / "blob.bin").write_bytes(bytes(range(256)) * 4)
sock_path = str(home / "codesearchd.sock")
env = dict(os.environ, CODESEARCH_HOME=str(home), CODESEARCH_EMBEDDING_DEVICE="cpu", HF_HUB_OFFLINE="1")
env.pop("CODESEARCH_SOCKET", None)
log = open(scratch / "daemon.log", "ab")


def start():
    p = subprocess.Popen([a.bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 60
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            s.close()
            return p
        except OSError:
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"the daemon did not start (exit {p.poll()}); log in {scratch / 'daemon.log'}")
            time.sleep(0.02)


def peak_rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


METHODS = ["search", "repo.add", "repo.remove", "repo.list", "repo.reindex", "repo.subscribe",
           "repo.unsubscribe", "daemon.status", "models.list", "embed", "benchmark.run", "no.such", ""]
PATHS = ["/", "/proc/self", "/dev/null", "/proc", "/sys", str(tree), "/nonexistent/x", "relative"]


def odd():
    return rng.choice([None, True, -1, 1e300, 2**64 - 1, -2**63, [1, "two", None], {"a": {"b": []}},
                       rng.choice(PATHS), "x" * rng.randrange(70_000)])


def params(method):
    path = odd() if rng.random() < 0.3 else rng.choice(PATHS)
    if method == "search":
        return {"query": odd() if rng.random() < 0.25 else "parse a path",
                "k": rng.choice([0, 1, 5, 1000, 1001, 2**64 - 1, -3, 2.5]),
                "mode": rng.choice(["lexical", "lexical", "hybrid", "nope", 7]),
                "repos": rng.choice([None, [str(tree)], ["/proc/self"], ["/x"] * 1001]),
                "paths": rng.choice([None, ["*.py"], ["[unclosed"], ["*"] * 1001])}
    if method == "repo.add":
        return {"path": path, "wait": rng.random() < 0.5}
    if method == "repo.remove":
        return {"path": str(tree) if rng.random() < 0.1 else path}
    if method == "repo.reindex":
        return {"path": str(tree) if rng.random() < 0.5 else path, "full": rng.random() < 0.5}
    if method == "repo.subscribe":
        return {"path": path}
    if method == "repo.unsubscribe":
        return [rng.getrandbits(60)]
    if method == "embed":
        return {"texts": rng.choice([["a"], ["x" * 100_000], ["t"] * 4097, "not a list", [1, 2]]),
                "kind": rng.choice(["query", "document", "other"])}
    if method == "benchmark.run":
        return {"repo": path, "queries": [{"id": "q", "query": "", "path": "/abs", "start_line": 0, "end_line": 0}]}
    return odd()


def line(i):
    """One fuzz line and whether it owes an answer (0 or 1)."""
    kind = rng.randrange(14)
    method = rng.choice(METHODS)
    req = {"jsonrpc": "2.0", "id": i, "method": method, "params": params(method)}
    if kind == 0:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(300))).replace(b"\n", b" ")
    elif kind == 1:
        full = json.dumps(req).encode()
        raw = full[:rng.randrange(len(full))]
    elif kind == 2:
        d = 1 + rng.randrange(3000)
        raw = b"[" * d + (b"]" * d if rng.random() < 0.5 else b"")
    elif kind == 3:
        d = 1 + rng.randrange(300)
        raw = (b'{"jsonrpc":"2.0","id":%d,"method":"search","params":' % i) + b'{"a":' * d + b"1" + b"}" * (d + 1)
    elif kind == 4:
        raw = json.dumps(rng.choice([
            {"jsonrpc": "1.0", "id": i, "method": "repo.list"}, {"jsonrpc": "2.0", "id": i, "method": 5},
            {"jsonrpc": "2.0", "id": i}, {"jsonrpc": "2.0", "id": {"an": "object"}, "method": "repo.list"},
            {"jsonrpc": "2.0", "id": [1], "method": "repo.list"}, 42, "a string", None])).encode()
    elif kind == 5:
        raw = ('{"jsonrpc":"2.0","id":%s,"method":"search","params":{"query":"q","k":%s}}' % (
            rng.choice(["1e999", "18446744073709551616", "-0", "1.5", str(i)]),
            rng.choice(["1e999", "99999999999999999999999", "-1", "NaN", "0x10"]))).encode()
    elif kind == 6:
        n = rng.choice([0, 1, 3, 50, 1000, 1001, 5000])
        items = [[{"jsonrpc": "2.0", "id": j, "method": "models.list"}, {"jsonrpc": "2.0", "method": "repo.list"},
                  j, {"jsonrpc": "2.0", "id": j, "method": "daemon.status"}][j % 4] for j in range(n)]
        raw = json.dumps(items).encode()
    elif kind == 7:
        raw = json.dumps([{"jsonrpc": "2.0", "method": "repo.list"}]).encode()
    elif kind == 8:
        raw = json.dumps({"jsonrpc": "2.0", "method": method}).encode()
    elif kind == 9:
        raw = b"  \t "
    else:
        raw = json.dumps(req).encode()
    return raw, owed(raw)


def owed(raw):
    if raw.strip(b" \t\r\n") == b"":
        return 0
    try:
        v = json.loads(raw)
    except (ValueError, RecursionError):
        return 1
    def owes(x):
        return not (isinstance(x, dict) and "id" not in x)
    if isinstance(v, list):
        return 1 if (not v or len(v) > 1000 or any(owes(x) for x in v)) else 0
    return 1 if owes(v) else 0


def connection(lines, kill_after=None, proc=None):
    """Sends lines, reads the owed answers; returns (answers, mismatch, killed)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.settimeout(120)
    payload = b"".join(raw + b"\n" for raw, _ in lines) + b'{"jsonrpc":"2.0","id":"end","method":"models.list"}\n'
    want = sum(o for _, o in lines)
    def send():
        try:
            s.sendall(payload)
        except OSError:
            pass
    t = threading.Thread(target=send, daemon=True)
    t.start()
    f = s.makefile("rb")
    got, killed = 0, False
    while True:
        if kill_after is not None and got >= kill_after and not killed:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
        try:
            ln = f.readline()
        except OSError:
            ln = b""
        if not ln:
            break
        v = json.loads(ln)
        if isinstance(v, dict) and "method" in v and "id" not in v:
            continue
        if isinstance(v, dict) and v.get("id") == "end":
            break
        got += 1
    s.close()
    t.join(timeout=5)
    return got, (not killed and got != want), killed


t0 = time.time()
proc = start()
restarts, exits, sent, answers, mismatches, peak = 0, 0, 0, 0, 0, 0
segment = a.lines // (a.kills + 1)
kill_at = [segment * (k + 1) + rng.randrange(a.per_connection) for k in range(a.kills)]
# The tree is registered first and re-indexed by the fuzz now and then.
c = socket.socket(socket.AF_UNIX); c.connect(sock_path)
c.sendall((json.dumps({"jsonrpc": "2.0", "id": 0, "method": "repo.add", "params": {"path": str(tree), "wait": True}}) + "\n").encode())
c.makefile("rb").readline(); c.close()
i = 0
while i < a.lines:
    n = min(a.per_connection, a.lines - i)
    lines = [line(i + j) for j in range(n)]
    kill_after = None
    if kill_at and i <= kill_at[0] < i + n:
        kill_at.pop(0)
        kill_after = sum(o for _, o in lines[: rng.randrange(n)])
    peak = max(peak, peak_rss(proc.pid))
    got, bad, killed = connection(lines, kill_after, proc)
    answers += got
    mismatches += bad
    sent += n
    i += n
    if killed:
        restarts += 1
        proc = start()
    elif proc.poll() is not None:
        exits += 1
        print(f"daemon exited with {proc.returncode} after {sent} lines; log in {scratch / 'daemon.log'}", file=sys.stderr)
        proc = start()
peak = max(peak, peak_rss(proc.pid))
took = time.time() - t0
ok = proc.poll() is None
proc.send_signal(signal.SIGTERM)
proc.wait(timeout=60)
passed = exits == 0 and mismatches == 0 and ok
print(json.dumps({"lines": sent, "answers": answers, "mismatched_connections": mismatches, "exits": exits,
                  "kills": restarts, "alive_at_end": ok, "seconds": round(took, 1),
                  "lines_per_s": round(sent / took, 1), "peak_rss_mb": peak >> 20,
                  "scratch": None if passed else str(scratch)}))
if passed:
    import shutil
    shutil.rmtree(scratch, ignore_errors=True)
sys.exit(0 if passed else 1)
