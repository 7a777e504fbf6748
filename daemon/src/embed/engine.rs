//! [`CandleEmbedder`]: tokenizer, length-sorted batches, the encoder, pooling and
//! normalisation, as sentence-transformers does them.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use codesearch_proto::Pooling;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::batch::{self, BatchPolicy};
use super::bert::{self, Bert, BertConfig};
use super::device::describe;
use super::files::ModelDir;
use super::registry::ModelSpec;
use super::{EmbedError, Embedder, InputKind};

/// Texts tokenized (and length-sorted) together; a call with more is done a group
/// at a time, the groups cut from the texts ordered by byte length, and the
/// next group tokenized while the device runs this one. Two of a GPU's batches:
/// the index pipeline's calls (a commit, 8,192 texts) overlap all but the first.
const TOKENIZE_GROUP: usize = 1024;

/// How long after a query document batches stay small ([`CandleEmbedder::policy_now`]).
const SEARCHES_KEEP_BATCHES_SMALL: std::time::Duration = std::time::Duration::from_secs(2);

/// The dtype the encoder computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats: the reference; queries run in it under `Int8` too.
    F32,
    /// IEEE half: the fast path on GPUs.
    F16,
    /// bfloat16.
    Bf16,
    /// f32, with the dense layers of document batches in int8 (CPU only;
    /// queries stay f32).
    Int8,
}

impl Precision {
    fn dtype(self) -> DType {
        match self {
            Self::F32 | Self::Int8 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" => Ok(Self::Int8),
            _ => Err(format!(
                "unknown precision `{s}`; use f32, int8, f16 or bf16"
            )),
        }
    }
}

/// Counters since the embedder was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbedStats {
    /// Texts embedded.
    pub texts: u64,
    /// Real (non-padding) tokens fed to the encoder.
    pub tokens: u64,
    /// Token slots including padding.
    pub padded_tokens: u64,
    /// Forward passes.
    pub batches: u64,
}

/// A BERT-family model running on candle.
#[derive(Debug)]
pub struct CandleEmbedder {
    spec: &'static ModelSpec,
    /// Shared with the thread that tokenizes ahead during large calls.
    tokenizer: Arc<Tokenizer>,
    model: Bert,
    pooling: Pooling,
    max_tokens: usize,
    dims: usize,
    pad_id: u32,
    policy: BatchPolicy,
    stats: EmbedStats,
    /// Prepended to queries and to documents: the model's own prompts where
    /// its folder names them, else the registry's.
    query_prefix: String,
    document_prefix: String,
    /// Document batches run the dense layers in int8 ([`Precision::Int8`]).
    int8_documents: bool,
    /// When the last query was embedded: while searches come, document batches
    /// on the CPU shrink ([`Self::policy_now`]).
    last_query: Option<std::time::Instant>,
}

/// The model's tokenizer: `tokenizer.json`, or for checkpoints that ship
/// RoBERTa's original files, `vocab.json` + `merges.txt` assembled as
/// transformers' converter does (byte-level BPE, no prefix space, `<s> … </s>`).
fn load_tokenizer(
    model: &'static str,
    dir: &ModelDir,
) -> Result<(Tokenizer, std::path::PathBuf), EmbedError> {
    let json = dir.file("tokenizer.json");
    if json.is_file() {
        let t = Tokenizer::from_file(&json).map_err(|e| EmbedError::bad_file(model, &json, e))?;
        return Ok((t, json));
    }
    let (vocab, merges) = (dir.file("vocab.json"), dir.file("merges.txt"));
    let bad = |e: &dyn std::fmt::Display| EmbedError::bad_file(model, &vocab, e);
    let bpe = tokenizers::models::bpe::BPE::from_file(
        &vocab.display().to_string(),
        &merges.display().to_string(),
    )
    .build()
    .map_err(|e| bad(&e))?;
    let id = |token: &str| {
        tokenizers::Model::token_to_id(&bpe, token)
            .ok_or_else(|| bad(&format!("no `{token}` in the vocabulary")))
    };
    let (cls, sep) = (id("<s>")?, id("</s>")?);
    let mut t = Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::default().add_prefix_space(false),
    ));
    t.with_post_processor(Some(
        tokenizers::processors::roberta::RobertaProcessing::new(
            ("</s>".to_owned(), sep),
            ("<s>".to_owned(), cls),
        )
        .add_prefix_space(false),
    ));
    t.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let specials: Vec<tokenizers::AddedToken> = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]
        .into_iter()
        .filter(|s| tokenizers::Model::token_to_id(t.get_model(), s).is_some())
        .map(|s| tokenizers::AddedToken::from(s, true))
        .collect();
    t.add_special_tokens(specials).map_err(|e| bad(&e))?;
    Ok((t, vocab))
}

/// The encoder a `config.json` describes, by its `model_type`.
enum Family {
    /// BERT, RoBERTa, XLM-RoBERTa: one layout.
    Bert(BertConfig),
    /// NomicBert: rotary positions, SwiGLU, its own config names.
    Nomic(super::nomic::NomicConfig),
}

impl Family {
    fn read(model: &'static str, path: &Path) -> Result<Self, EmbedError> {
        let config: serde_json::Value = read_json(model, path)?;
        fn parse<T: serde::de::DeserializeOwned>(
            model: &'static str,
            path: &Path,
            v: serde_json::Value,
        ) -> Result<T, EmbedError> {
            serde_json::from_value(v).map_err(|e| EmbedError::bad_file(model, path, e))
        }
        let model_type = config
            .get("model_type")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        match model_type.as_deref() {
            None | Some("bert" | "roberta" | "xlm-roberta") => {
                parse(model, path, config).map(Family::Bert)
            }
            Some("nomic_bert") => parse(model, path, config).map(Family::Nomic),
            Some(t) => Err(EmbedError::bad_file(
                model,
                path,
                format!(
                    "model_type `{t}` is not one this engine runs (bert, roberta, xlm-roberta, nomic_bert)"
                ),
            )),
        }
    }

    /// Tokens the model's positions cover.
    fn max_tokens(&self) -> usize {
        match self {
            Family::Bert(c) => c.max_tokens(),
            Family::Nomic(c) => c.max_tokens(),
        }
    }

    /// Vector length and padding id.
    fn dims_and_pad(&self) -> (usize, u32) {
        match self {
            Family::Bert(c) => (c.hidden_size, c.pad_token_id),
            Family::Nomic(c) => (c.n_embd, c.pad_token_id.unwrap_or(0)),
        }
    }
}

/// `1_Pooling/config.json`: sentence-transformers before 6 writes one flag per
/// mode, 6 and later one `pooling_mode` string.
#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode: Option<String>,
}

impl PoolingConfig {
    fn pooling(&self) -> Option<Pooling> {
        match self.pooling_mode.as_deref() {
            Some("cls") => Some(Pooling::Cls),
            Some("mean") => Some(Pooling::Mean),
            Some(_) => None,
            None if self.pooling_mode_cls_token => Some(Pooling::Cls),
            None if self.pooling_mode_mean_tokens => Some(Pooling::Mean),
            None => None,
        }
    }
}

/// `sentence_bert_config.json`; sentence-transformers 6 and later leave the
/// length out of it (it is the tokenizer's `model_max_length` then).
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `tokenizer_config.json`.
#[derive(Deserialize)]
struct TokenizerConfig {
    /// transformers writes a huge sentinel (about 1e30) when a model sets none.
    #[serde(default)]
    model_max_length: Option<f64>,
}

/// `config_sentence_transformers.json`: the prompts a model wants before
/// queries and documents (sentence-transformers 3 and later).
#[derive(Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
}

impl CandleEmbedder {
    /// Loads the files in `dir` onto `device`.
    pub fn load(
        spec: &'static ModelSpec,
        dir: &ModelDir,
        device: Device,
        policy: BatchPolicy,
        precision: Option<Precision>,
    ) -> Result<Self, EmbedError> {
        let model = spec.name;
        let config_path = dir.file("config.json");
        let family = Family::read(model, &config_path)?;
        let pooling =
            match read_optional_json::<PoolingConfig>(model, &dir.file("1_Pooling/config.json"))? {
                Some(p) => p.pooling().ok_or_else(|| {
                    EmbedError::bad_file(
                        model,
                        &dir.file("1_Pooling/config.json"),
                        "only mean and CLS pooling are supported",
                    )
                })?,
                None => spec.pooling,
            };
        let from_tokenizer =
            read_optional_json::<TokenizerConfig>(model, &dir.file("tokenizer_config.json"))?
                .and_then(|c| c.model_max_length)
                .filter(|n| (1.0..=1e6).contains(n))
                .map(|n| n as usize);
        let max_tokens = read_optional_json::<SentenceBertConfig>(
            model,
            &dir.file("sentence_bert_config.json"),
        )?
        .and_then(|c| c.max_seq_length)
        .or(from_tokenizer)
        .unwrap_or(spec.max_tokens)
        .min(family.max_tokens());
        let prompts = read_optional_json::<SentenceTransformersConfig>(
            model,
            &dir.file("config_sentence_transformers.json"),
        )?
        .map(|c| c.prompts)
        .unwrap_or_default();
        let prompt = |kind: &str, registry: &str| {
            prompts
                .get(kind)
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(|| registry.to_owned())
        };
        let query_prefix = prompt("query", spec.query_prefix);
        let document_prefix = prompt("document", spec.document_prefix);

        let (mut tokenizer, tokenizer_path) = load_tokenizer(model, dir)?;
        // The shipped tokenizer.json may pad to a fixed length; we pad per batch.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::bad_file(model, &tokenizer_path, e))?;

        // On a CPU with byte dot products (AVX-512 VNNI or AVX-VNNI) documents go
        // int8 by default: cold indexing ~2x faster, and both eval sets within
        // 0.01 of f32 (docs/BENCHMARKS.md). With AVX2 alone, where a dense layer
        // timed at start-up says int8 is clearly faster; elsewhere f32.
        let precision = precision.unwrap_or(if !device.is_cpu() {
            Precision::F16
        } else if super::int8::Kernel::detect().is_fast() {
            Precision::Int8
        } else {
            Precision::F32
        });
        let precision = if precision == Precision::Int8 && !device.is_cpu() {
            // `device: auto` may find a GPU on one machine and not on another;
            // the config should not stop the daemon on either.
            tracing::warn!(model, device = %describe(&device), "int8 runs on the CPU only; using f16");
            Precision::F16
        } else {
            precision
        };
        if precision == Precision::Int8 && !super::int8::Kernel::detect().is_fast() {
            tracing::warn!(
                model,
                kernel = ?super::int8::Kernel::detect(),
                "on this CPU int8 dense layers are not clearly faster than f32 (no AVX-512 VNNI or AVX-VNNI, and AVX2 timed no faster): int8 documents will be no faster, or slower"
            );
        }
        let dtype = precision.dtype();
        let compute = |source| EmbedError::Compute {
            model,
            device: describe(&device),
            source,
        };
        let safetensors = dir.file("model.safetensors");
        let (vb, weights_path) = if safetensors.is_file() {
            let bytes = std::fs::read(&safetensors)
                .map_err(|e| EmbedError::bad_file(model, &safetensors, e))?;
            let vb =
                VarBuilder::from_buffered_safetensors(bytes, dtype, &device).map_err(compute)?;
            (vb, safetensors)
        } else {
            // Older hub checkpoints: PyTorch's pickle (zip) format.
            let pth = dir.file("pytorch_model.bin");
            let vb = VarBuilder::from_pth(&pth, dtype, &device)
                .map_err(|e| EmbedError::bad_file(model, &pth, e))?;
            (vb, pth)
        };
        let bert = match &family {
            Family::Bert(cfg) => Bert::load(vb, cfg),
            Family::Nomic(cfg) => super::nomic::load(vb, cfg),
        }
        .map_err(|e| EmbedError::bad_file(model, &weights_path, e))?;
        let mut bert = bert;
        let int8_documents = precision == Precision::Int8
            && bert
                .quantize()
                .map_err(|e| EmbedError::bad_file(model, &weights_path, e))?;
        let (dims, pad_id) = family.dims_and_pad();
        tracing::info!(
            model,
            dir = %dir.0.display(),
            device = %describe(&device),
            ?dtype,
            int8_documents,
            ?pooling,
            max_tokens,
            "model loaded"
        );
        Ok(Self {
            spec,
            tokenizer: Arc::new(tokenizer),
            model: bert,
            pooling,
            max_tokens,
            dims,
            pad_id,
            policy,
            stats: EmbedStats::default(),
            query_prefix,
            document_prefix,
            int8_documents,
            last_query: None,
        })
    }

    /// Whether document batches run in int8 now.
    pub fn int8_documents(&self) -> bool {
        self.int8_documents
    }

    /// Switches int8 documents off or back on (where the model was loaded
    /// with [`Precision::Int8`]), to compare the two on the same weights.
    pub fn set_int8_documents(&mut self, on: bool) -> bool {
        let quantized = self.model.is_quantized();
        self.int8_documents = on && quantized;
        self.int8_documents
    }

    /// Counters since load.
    pub fn stats(&self) -> EmbedStats {
        self.stats
    }

    /// How texts are grouped into forward passes.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Forgets the last query, so document batches take the full budget at once
    /// (a benchmark that embeds a query before timing documents).
    pub fn forget_queries(&mut self) {
        self.last_query = None;
    }

    /// The batch policy for the next forward pass. A query waits at the model for
    /// the half-layer of a document batch under way, which on a CPU is tens of
    /// milliseconds at the full token budget, more while the index pipeline's other
    /// stages share the cores; so for a while after each query, document batches
    /// on the CPU take a quarter of the budget (about 13 % fewer chunks a second
    /// while searches come, docs/BENCHMARKS.md). GPU batches are fast either way.
    fn policy_now(&self, kind: InputKind) -> BatchPolicy {
        let searching = self
            .last_query
            .is_some_and(|t| t.elapsed() < SEARCHES_KEEP_BATCHES_SMALL);
        if kind == InputKind::Document && searching && self.model.device().is_cpu() {
            BatchPolicy {
                // A text longer than this still gets a batch of its own.
                token_budget: (self.policy.token_budget / 4).max(1),
                ..self.policy
            }
        } else {
            self.policy
        }
    }

    fn compute_err(&self, source: candle_core::Error) -> EmbedError {
        EmbedError::Compute {
            model: self.spec.name,
            device: describe(self.model.device()),
            source,
        }
    }

    /// Pools and normalises a finished pass into `[n, dims]` f32 rows, on the device.
    fn pool(&self, pass: bert::Pass) -> candle_core::Result<Tensor> {
        if self.pooling == Pooling::Mean
            && let Some(pooled) = self.model.mean_pooled(&pass)?
        {
            return Ok(pooled);
        }
        let lens = self.model.lens(&pass).to_vec();
        let hidden = self.model.finish(pass)?.to_dtype(DType::F32)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            // `Server` is a remote model's; a local one reads `Mean` or `Cls`.
            Pooling::Mean | Pooling::Server => {
                let m = bert::padding_mask(&lens, hidden.dim(1)?, hidden.device())?.unsqueeze(2)?;
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?
            }
        };
        let norm = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        pooled.broadcast_div(&norm)
    }
}

impl Embedder for CandleEmbedder {
    fn model_name(&self) -> &str {
        self.spec.name
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn device_name(&self) -> String {
        describe(self.model.device())
    }

    fn batch_size(&self) -> usize {
        self.policy.max_batch
    }

    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_pausable(texts, kind, &mut |_| {})
    }

    /// Pauses after every half-layer (attention, feed-forward) of every batch: on
    /// a CPU that is 20–45 ms of a full batch, the longest a query waits.
    fn embed_pausable(
        &mut self,
        texts: &[&str],
        kind: InputKind,
        pause: &mut dyn FnMut(&mut dyn Embedder),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Owned: the tokenizing thread reads it while the model runs.
        let prefix = match kind {
            InputKind::Query => self.query_prefix.clone(),
            InputKind::Document => self.document_prefix.clone(),
        };
        let prefix = prefix.as_str();
        let int8 = self.int8_documents && kind == InputKind::Document;
        let started = std::time::Instant::now();
        if kind == InputKind::Query {
            self.last_query = Some(started);
        }
        // Groups of texts tokenized and length-sorted together. A call of more than one
        // group is ordered by byte length first, so each group holds texts of similar
        // token lengths (padding as low as one global sort), and a thread tokenizes the
        // next groups while this one launches the current group's batches (on a GPU
        // the launches run ahead of the device, so tokenizing costs no device time).
        let groups: Vec<Vec<usize>> = if texts.len() <= TOKENIZE_GROUP {
            vec![(0..texts.len()).collect()]
        } else {
            let mut by_bytes: Vec<usize> = (0..texts.len()).collect();
            by_bytes.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
            by_bytes
                .chunks(TOKENIZE_GROUP)
                .map(<[usize]>::to_vec)
                .collect()
        };
        let mut tokenizing = std::time::Duration::ZERO;
        // Pooled rows stay on the device until every batch is queued: one copy back
        // (and one wait) per call, so a GPU never idles between batches.
        let mut order = Vec::with_capacity(texts.len());
        let mut pooled = Vec::new();
        let tokenizer = Arc::clone(&self.tokenizer);
        let model = self.spec.name;
        std::thread::scope(|scope| -> Result<(), EmbedError> {
            let (tx, rx) = sync_channel(2);
            let producer = move || {
                for group in groups {
                    let t = std::time::Instant::now();
                    let group_texts: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
                    let ids = tokenize(&tokenizer, model, prefix, &group_texts);
                    if tx.send(ids.map(|ids| (group, ids, t.elapsed()))).is_err() {
                        break;
                    }
                }
            };
            if texts.len() <= TOKENIZE_GROUP {
                producer();
            } else {
                scope.spawn(producer);
            }
            for tokenized in rx {
                let (index, ids, took) = tokenized?;
                tokenizing += took;
                let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
                // Batch by batch, so a search that arrives mid-call shrinks the
                // batches after the current one (`policy_now`).
                let by_length = batch::longest_first(&lens);
                let mut rest = &by_length[..];
                while !rest.is_empty() {
                    let (group, tail) =
                        rest.split_at(batch::take(&lens, rest, self.policy_now(kind)));
                    rest = tail;
                    let rows: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
                    let mut pass = self
                        .model
                        .begin(&rows, self.pad_id, int8)
                        .map_err(|e| self.compute_err(e))?;
                    loop {
                        let done = self
                            .model
                            .step(&mut pass)
                            .map_err(|e| self.compute_err(e))?;
                        pause(self);
                        if done {
                            break;
                        }
                    }
                    pooled.push(self.pool(pass).map_err(|e| self.compute_err(e))?);
                    self.stats.batches += 1;
                    let tokens = group.iter().map(|&i| lens[i] as u64).sum::<u64>();
                    self.stats.padded_tokens += if self.model.packs() {
                        tokens
                    } else {
                        (group.len() * lens[group[0]]) as u64
                    };
                    self.stats.tokens += tokens;
                    order.extend(group.iter().map(|&i| index[i]));
                }
            }
            Ok(())
        })?;
        let queued = started.elapsed();
        let mut out = vec![Vec::new(); texts.len()];
        if !pooled.is_empty() {
            let rows = Tensor::cat(&pooled, 0)
                .and_then(|t| t.to_vec2::<f32>())
                .map_err(|e| self.compute_err(e))?;
            for (i, v) in order.into_iter().zip(rows) {
                out[i] = v;
            }
        }
        self.stats.texts += texts.len() as u64;
        // Where a call's time goes: `tokenize` (on another thread for calls of more
        // than one group), `queue` until the last batch is launched (on a GPU the host
        // runs ahead of the device), `wait` for the device to finish.
        tracing::debug!(
            texts = texts.len(),
            tokenize_ms = tokenizing.as_secs_f64() * 1e3,
            queue_ms = queued.as_secs_f64() * 1e3,
            wait_ms = (started.elapsed() - queued).as_secs_f64() * 1e3,
            "embedded"
        );
        Ok(out)
    }
}

/// Token ids of `prefix` + each text, truncated, without padding.
fn tokenize(
    tokenizer: &Tokenizer,
    model: &'static str,
    prefix: &str,
    texts: &[&str],
) -> Result<Vec<Vec<u32>>, EmbedError> {
    let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
    let encodings = tokenizer
        .encode_batch(inputs, true)
        .map_err(|e| EmbedError::Tokenize {
            model,
            reason: e.to_string(),
        })?;
    Ok(encodings
        .into_iter()
        .map(|e| e.get_ids().to_vec())
        .collect())
}

fn read_json<T: serde::de::DeserializeOwned>(
    model: &'static str,
    path: &Path,
) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::bad_file(model, path, e))?;
    serde_json::from_str(&text).map_err(|e| EmbedError::bad_file(model, path, e))
}

fn read_optional_json<T: serde::de::DeserializeOwned>(
    model: &'static str,
    path: &Path,
) -> Result<Option<T>, EmbedError> {
    if path.is_file() {
        read_json(model, path).map(Some)
    } else {
        Ok(None)
    }
}
