#!/usr/bin/env python3
"""The peer on a GPU: sentence-transformers (PyTorch) embedding the reference chunks
with all-MiniLM-L6-v2 on the same GPU, the same chunks, the same max length and the
same batch policy as `codesearchd bench-embed`, timed the same way.

  python3 bench/gpu_peer.py MODEL_DIR [--chunks chunks.jsonl] [--reference ref_first20.json]
      [--repeat 25] [--dtype fp16|bf16|fp32] [--max-batch 512] [--token-budget 65536]
      [--policy budget|encode]

MODEL_DIR: the sentence-transformers folder (modules.json, config.json, tokenizer.json,
model.safetensors, 1_Pooling/, …), e.g. the HF cache snapshot scripts/fetch-model.sh fills.

--policy budget (default) is ours: tokenize every text once (truncation to the model's
max_seq_length, 256), sort by token length, longest first, and fill each batch up to
--max-batch texts and --token-budget padded tokens; the forward pass is the
SentenceTransformer's own modules (BERT with PyTorch's SDPA attention, mean pooling,
L2 normalisation), under torch.inference_mode, with every vector kept on the GPU until
the last batch. --policy encode is what a user writes: model.encode(texts,
batch_size=--max-batch), which sorts by characters and tokenizes per batch.

The timed region is tokenization through the vectors in host memory, like ours.
Prints one JSON line: chunks/s, non-padding tokens/s, padding ratio, the median of 50
single-query latencies, and the lowest cosine of the first 20 vectors (and the query)
against ref_first20.json.
"""
import argparse, json, os, statistics, time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared", "reference")
ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--chunks", default=os.path.join(shared, "chunks.jsonl"))
ap.add_argument("--reference", default=os.path.join(shared, "ref_first20.json"))
ap.add_argument("--repeat", type=int, default=25)
ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
ap.add_argument("--max-batch", type=int, default=512)
ap.add_argument("--token-budget", type=int, default=65536)
ap.add_argument("--policy", choices=["budget", "encode"], default="budget")
ap.add_argument("--no-cudnn-attention", action="store_true",
                help="keep PyTorch's SDPA off cuDNN (flash / memory-efficient kernels only)")
ap.add_argument("--warmup", choices=["64", "full"], default="64",
                help="untimed pass first: 64 texts (like ours) or every text (all shapes seen)")
a = ap.parse_args()
if a.no_cudnn_attention:
    torch.backends.cuda.enable_cudnn_sdp(False)

dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
model = SentenceTransformer(a.model, device="cuda", local_files_only=True)
model.max_seq_length = 256
model.to(dtype).eval()
tok = model.tokenizer
pad_id = tok.pad_token_id or 0


def plan(lens):
    """Our batch::plan: longest first, each batch under both limits."""
    order = sorted(range(len(lens)), key=lambda i: -lens[i])  # stable, like ours
    batches, cur, longest = [], [], 0
    for i in order:
        fits = len(cur) < a.max_batch and (len(cur) + 1) * max(longest, lens[i]) <= a.token_budget
        if cur and not fits:
            batches.append(cur)
            cur = []
        if not cur:
            longest = lens[i]
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


# The Rust tokenizer underneath the model's (what its __call__ runs), without Python's
# padding: one parallel encode_batch, like ours.
fast = Tokenizer.from_str(tok.backend_tokenizer.to_str())
fast.no_padding()
fast.enable_truncation(model.max_seq_length)


@torch.inference_mode()
def embed_budget(texts):
    ids = [e.ids for e in fast.encode_batch(texts)]
    lens = np.array([len(x) for x in ids])
    order, pooled, padded = [], [], 0
    for group in plan(lens.tolist()):
        width = int(lens[group[0]])
        padded += width * len(group)
        rows = np.full((len(group), width), pad_id, dtype=np.int64)
        for r, i in enumerate(group):
            rows[r, :lens[i]] = ids[i]
        mask = (np.arange(width)[None, :] < lens[group][:, None]).astype(np.int64)
        rows = torch.from_numpy(rows).to("cuda", non_blocking=True)
        features = {"input_ids": rows,
                    "attention_mask": torch.from_numpy(mask).to("cuda", non_blocking=True),
                    "token_type_ids": torch.zeros_like(rows)}
        pooled.append(model(features)["sentence_embedding"])
        order.extend(group)
    vectors = torch.cat(pooled).float().cpu()
    out = torch.empty_like(vectors)
    out[torch.tensor(order)] = vectors
    return out, int(lens.sum()), padded


def embed_encode(texts):
    v = model.encode(texts, batch_size=a.max_batch, convert_to_tensor=True,
                     show_progress_bar=False).float().cpu()
    lens = [len(x) for x in tok(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
    return v, sum(lens), None


embed = embed_budget if a.policy == "budget" else embed_encode

rows = [json.loads(l) for l in open(a.chunks) if l.strip()]
by_id = {r["id"]: r["text"] for r in rows}
ref = json.load(open(a.reference))
v20, _, _ = embed([by_id[i] for i in ref["ids"]])
cos = (torch.nn.functional.normalize(v20, dim=1)
       * torch.nn.functional.normalize(torch.tensor(ref["embeddings"]), dim=1)).sum(1)
min_cos = float(cos.min())
if ref.get("query"):
    qv, _, _ = embed([ref["query"]])
    min_cos = min(min_cos, float(torch.nn.functional.cosine_similarity(
        qv[0], torch.tensor(ref["query_embedding"]), dim=0)))

texts = [r["text"] for r in rows] * max(1, a.repeat)
embed(texts if a.warmup == "full" else texts[:64])  # warm-up
torch.cuda.synchronize()
t0 = time.perf_counter()
vectors, ntok, padded = embed(texts)
secs = time.perf_counter() - t0
assert vectors.shape[0] == len(texts)

lat = []
for _ in range(55):
    t = time.perf_counter()
    embed(["parse http headers"])
    lat.append((time.perf_counter() - t) * 1000)
print(json.dumps({
    "runtime": f"sentence-transformers / torch {torch.__version__}"
               + (" (no cuDNN attention)" if a.no_cudnn_attention else "")
               + (" (full warm-up)" if a.warmup == "full" else ""),
    "device": torch.cuda.get_device_name(0), "dtype": a.dtype, "policy": a.policy,
    "max_batch": a.max_batch, "token_budget": a.token_budget if a.policy == "budget" else None,
    "chunks": len(texts), "secs": round(secs, 3),
    "chunks_per_s": round(len(texts) / secs, 1), "tokens_per_s": round(ntok / secs),
    "padding_ratio": round(padded / ntok, 3) if padded else None,
    "query_ms_median": round(statistics.median(lat[5:]), 2),
    "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 1e6),
    "min_cos_vs_reference": round(min_cos, 6),
}))
