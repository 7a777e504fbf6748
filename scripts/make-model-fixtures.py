#!/usr/bin/env python3
"""Makes the tiny model fixtures of tests/it/models.rs: for each architecture the
engine runs, a random-weight checkpoint of a few layers with a small tokenizer
trained on real code, and the vectors that `transformers` and
`sentence-transformers` compute for real code chunks and queries with it.

    python3 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install torch transformers sentence-transformers
    /tmp/fixtures-venv/bin/python scripts/make-model-fixtures.py [--shared ../shared]

Writes tests/fixtures/models/<name>/: config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, 1_Pooling/config.json,
sentence_bert_config.json, config_sentence_transformers.json (the files of
sentence-transformers 6, whose formats differ from those of earlier versions
that all-MiniLM-L6-v2 ships: the engine reads both), and
reference.json ({"texts", "queries", "query_prefix", "documents": [[…]],
"query_vectors": [[…]]}, vectors L2-normalised as sentence-transformers gives
them). The fixtures are checked in (about 200 KB each), so CI needs no torch:
PyPI's torch for Linux is the CUDA build, gigabytes with its nvidia-* wheels,
too heavy for a test set-up. The weights are seeded, but the tokenizer
trainers may break ties differently from run to run: a run rewrites every
fixture, each consistent in itself (the versions used are in reference.json).

Random weights are drawn wider than transformers' default (std 0.02 would make
every text's vector nearly the same, and a test comparing them could not fail):
the script checks that the chunks' vectors differ from each other.
"""
import argparse, json, os, pathlib, re, shutil, tempfile

import numpy as np
import torch
import transformers
import sentence_transformers
from sentence_transformers import SentenceTransformer, models as st_models
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ap = argparse.ArgumentParser()
ap.add_argument("--shared", default=str(pathlib.Path(__file__).resolve().parent.parent.parent / "shared"))
ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/models"))
a = ap.parse_args()

chunks = [json.loads(l)["text"] for l in open(os.path.join(a.shared, "reference/chunks.jsonl"))]
TRAIN = chunks[:1500]
# Short and long, so batches pad and the longest are cut at max_seq_length.
TEXTS = [chunks[i] for i in (3, 17, 40, 101, 250, 333, 512, 777, 1024, 1500, 1800, 1999)]
QUERIES = ["parse http headers", "where is the release version compared", "open a file and read its lines"]
MAX_SEQ = 64
BGE_QUERY = "Represent this sentence for searching relevant passages: "
OWN_QUERY_PROMPT = "Represent this code search query: "


def wordpiece():
    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    t.train_from_iterator(TRAIN, trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    t.post_processor = processors.BertProcessing(("[SEP]", t.token_to_id("[SEP]")), ("[CLS]", t.token_to_id("[CLS]")))
    t.decoder = decoders.WordPiece()
    return t, transformers.BertTokenizerFast


def byte_bpe():
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return t, transformers.RobertaTokenizerFast


def unigram():
    t = Tokenizer(models.Unigram())
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    t.train_from_iterator(TRAIN, trainers.UnigramTrainer(vocab_size=600, special_tokens=special, unk_token="<unk>"))
    t.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    t.decoder = decoders.Metaspace()
    return t, transformers.XLMRobertaTokenizerFast


def write_reference(out, name, registry_name, query_prefix, docs, queries, vocab_size):
    """Checks that the chunks' vectors differ (else a test comparing them could
    not fail) and writes reference.json."""
    sims = docs @ docs.T
    off_diagonal = sims[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.min() < 0.9, f"{name}: the chunks' vectors are too alike to test with ({off_diagonal.min():.3f})"
    json.dump({
        "made_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "sentence-transformers": sentence_transformers.__version__},
        "model": registry_name,
        "max_seq_length": MAX_SEQ,
        "texts": TEXTS,
        "queries": QUERIES,
        "query_prefix": query_prefix,
        "documents": [[round(float(x), 7) for x in v] for v in docs],
        "query_vectors": [[round(float(x), 7) for x in v] for v in queries],
    }, open(out / "reference.json", "w"), indent=0)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{name}: {size / 1024:.0f} KB, vocab {vocab_size}, min cosine between chunks {off_diagonal.min():.3f}")


# name: (tokenizer, transformers config class, extra config, pooling, registry model whose spec the test uses, query prefix)
FIXTURES = {
    "bert-cls": (wordpiece, transformers.BertConfig, {"pad_token_id": 0}, "cls", "bge-small", BGE_QUERY),
    "roberta": (byte_bpe, transformers.RobertaConfig, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                                                       "type_vocab_size": 1, "layer_norm_eps": 1e-5}, "mean", "codebert", ""),
    "xlm-roberta": (unigram, transformers.XLMRobertaConfig, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                                                             "type_vocab_size": 1, "layer_norm_eps": 1e-5}, "cls", "bge-m3", ""),
}

for name, (make_tokenizer, config_class, extra, pooling, registry_name, query_prefix) in FIXTURES.items():
    out = pathlib.Path(a.out) / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.manual_seed(7)
    tok, fast_class = make_tokenizer()
    fast = fast_class(tokenizer_object=tok, model_max_length=MAX_SEQ,
                      **({"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
                         if name == "bert-cls" else
                         {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                          "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}))
    offset = extra.get("pad_token_id", 0) + 1 if name != "bert-cls" else 0
    cfg = config_class(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=MAX_SEQ + offset, hidden_act="gelu",
                       initializer_range=0.4, **extra)
    model = transformers.AutoModel.from_config(cfg)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    for extra_file in ("vocab.json", "merges.txt", "vocab.txt", "special_tokens_map.json"):
        (out / extra_file).unlink(missing_ok=True)

    word = st_models.Transformer(str(out), max_seq_length=MAX_SEQ)
    pool = st_models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)
    # The BERT fixture carries a query prompt of its own (sentence-transformers'
    # `prompts`), which the engine must prefer to the registry's instruction.
    prompts = {"query": OWN_QUERY_PROMPT, "document": ""} if name == "bert-cls" else None
    st = SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu", prompts=prompts)
    st.save(str(out))
    # Keep what the engine reads; drop the rest sentence-transformers writes.
    keep = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "1_Pooling",
            "sentence_bert_config.json", "config_sentence_transformers.json"}
    for p in out.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    with torch.inference_mode():
        docs = st.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
        if prompts:
            queries = st.encode(QUERIES, prompt_name="query", batch_size=4, normalize_embeddings=True,
                                convert_to_numpy=True)
        else:
            queries = st.encode([query_prefix + q for q in QUERIES], batch_size=4, normalize_embeddings=True,
                                convert_to_numpy=True)
    write_reference(out, name, registry_name, OWN_QUERY_PROMPT if prompts else query_prefix, docs, queries,
                    tok.get_vocab_size())
    if name == "roberta":
        # The same model as older hub checkpoints ship it (codebert-base and
        # unixcoder-base among them): PyTorch's pickle with a task head's
        # `roberta.` prefix, and the tokenizer as vocab.json + merges.txt.
        legacy = out.parent / "roberta-legacy"
        shutil.rmtree(legacy, ignore_errors=True)
        legacy.mkdir()
        for p in out.iterdir():
            if p.name not in ("model.safetensors", "tokenizer.json"):
                shutil.copytree(p, legacy / p.name) if p.is_dir() else shutil.copy(p, legacy / p.name)
        torch.save({f"roberta.{k}": v.contiguous() for k, v in model.state_dict().items()}, legacy / "pytorch_model.bin")
        tok.model.save(str(legacy))
        print(f"roberta-legacy: {sum(p.stat().st_size for p in legacy.rglob('*') if p.is_file()) / 1024:.0f} KB")


# NomicBert: transformers' own implementation (5.x) computes the reference; the
# fixture holds the checkpoint as the hub has nomic-embed-text-v1.5 (its custom
# code's config and weight names: Wqkv, fc11/fc12/fc2, norm1/norm2, emb_ln),
# which is what users' caches hold and what the engine reads.
NOMIC_PROMPTS = {"query": "search_query: ", "document": "search_document: "}
name = "nomic"
out = pathlib.Path(a.out) / name
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
torch.manual_seed(7)
tok, _ = wordpiece()
fast = transformers.BertTokenizerFast(tokenizer_object=tok, model_max_length=MAX_SEQ, pad_token="[PAD]",
                                      unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
cfg = transformers.NomicBertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=MAX_SEQ,
                                   hidden_act="silu", initializer_range=0.4, pad_token_id=0, type_vocab_size=2,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
model = transformers.NomicBertModel(cfg)
model.eval()
with tempfile.TemporaryDirectory() as native:
    model.save_pretrained(native, safe_serialization=True)
    fast.save_pretrained(native)
    word = st_models.Transformer(native, max_seq_length=MAX_SEQ)
    pool = st_models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu", prompts=NOMIC_PROMPTS)
    st.save(str(out))
    with torch.inference_mode():
        docs = st.encode(TEXTS, prompt_name="document", batch_size=4, normalize_embeddings=True,
                         convert_to_numpy=True)
        queries = st.encode(QUERIES, prompt_name="query", batch_size=4, normalize_embeddings=True,
                            convert_to_numpy=True)

# The hub's names.
state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
hub = {}
for k in list(state):
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", k)
    if k.startswith("embeddings.LayerNorm."):
        hub["emb_ln." + k.rsplit(".", 1)[1]] = state.pop(k)
    elif k.startswith("embeddings."):
        hub[k] = state.pop(k)
    elif m:
        i, rest = m.groups()
        renamed = {"self_attn.o_proj.weight": "attn.out_proj.weight", "mlp.up_proj.weight": "mlp.fc11.weight",
                   "mlp.gate_proj.weight": "mlp.fc12.weight", "mlp.down_proj.weight": "mlp.fc2.weight",
                   "post_attention_layernorm.weight": "norm1.weight", "post_attention_layernorm.bias": "norm1.bias",
                   "post_mlp_layernorm.weight": "norm2.weight", "post_mlp_layernorm.bias": "norm2.bias"}.get(rest)
        if renamed:
            hub[f"encoder.layers.{i}.{renamed}"] = state.pop(k)
for i in range(cfg.num_hidden_layers):
    hub[f"encoder.layers.{i}.attn.Wqkv.weight"] = torch.cat(
        [state.pop(f"layers.{i}.self_attn.{p}_proj.weight") for p in "qkv"], 0).contiguous()
assert not state, f"weights not carried over: {sorted(state)}"
keep = {"tokenizer.json", "tokenizer_config.json", "1_Pooling", "sentence_bert_config.json",
        "config_sentence_transformers.json"}
for p in out.iterdir():
    if p.name not in keep:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
save_file(hub, str(out / "model.safetensors"))
json.dump({
    "architectures": ["NomicBertModel"], "model_type": "nomic_bert", "activation_function": "swiglu",
    "vocab_size": cfg.vocab_size, "n_embd": cfg.hidden_size, "n_head": cfg.num_attention_heads,
    "n_layer": cfg.num_hidden_layers, "n_inner": cfg.intermediate_size, "n_positions": MAX_SEQ,
    "max_trained_positions": MAX_SEQ, "type_vocab_size": cfg.type_vocab_size, "layer_norm_epsilon": cfg.layer_norm_eps,
    "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "prenorm": False,
    "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "pad_token_id": 0,
}, open(out / "config.json", "w"), indent=2)
write_reference(out, name, "nomic", NOMIC_PROMPTS["query"], docs, queries, tok.get_vocab_size())
