//! Turning text into vectors.
//!
//! [`Embedder`] is the synchronous seam every model sits behind: a batch of texts
//! in, L2-normalised `f32` vectors out. The daemon runs one embedder per loaded
//! model on a thread of its own; nothing else touches the model.
//!
//! - `registry`: model names, aliases and what each needs.
//! - `files`: finding weights (`model_path`, the Hugging Face cache, a download).
//! - `device`: `auto`/`cpu`/`cuda`/`metal` and the errors that name the fix.
//! - `batch`: length-sorted batches under a token budget.
//! - `bert`: the BERT encoder on candle.
//! - `cpu_ops`: fused CPU kernels (attention, GELU) the encoder uses for F32 on the CPU.
//! - `int8`: int8 dense layers for document batches on the CPU (`Precision::Int8`).
//! - `cuda_ops` (feature `cuda`): fused CUDA kernels (`kernels.cu`) the encoder uses on NVIDIA GPUs.
//! - `engine`: tokenizer + batches + encoder + pooling = [`CandleEmbedder`].
//! - `queue`: the model's thread and its two-priority queue ([`EmbedWorker`], [`EmbedHandle`]).
//! - `remote`: models behind an HTTP API (OpenAI-compatible servers, Voyage).
//! - `hash` (feature `test-support`): a deterministic embedder for the offline test tier.

mod batch;
mod bert;
mod cpu_ops;
mod int8;
// The fused CUDA kernels: candle custom ops, whose launches are `unsafe`.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod cuda_ops;
mod device;
mod engine;
mod files;
#[cfg(any(test, feature = "test-support"))]
pub mod hash;
mod nomic;
mod queue;
pub mod registry;
pub mod remote;

use std::path::{Path, PathBuf};

pub use batch::BatchPolicy;
pub use device::DeviceChoice;
pub use engine::{CandleEmbedder, EmbedStats, Precision};
pub use files::{ModelDir, ModelLocator};
pub use queue::{EmbedHandle, EmbedWorker};
pub use registry::{DEFAULT_MODEL, ModelSpec};
pub use remote::{RemoteEmbedder, RemoteSpec};

/// Whether a text is something to find or something to search with.
///
/// Instruction-tuned models (BGE, nomic) want a different prefix for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputKind {
    /// Code or prose that goes into an index.
    #[default]
    Document,
    /// A search query.
    Query,
}

/// A model that embeds text. Synchronous: callers put it on a thread of its own.
pub trait Embedder: Send {
    /// Canonical registry name of the model.
    fn model_name(&self) -> &str;
    /// Length of every vector.
    fn dims(&self) -> usize;
    /// Inputs are truncated to this many tokens.
    fn max_tokens(&self) -> usize;
    /// Where the model runs, e.g. `cpu` or `cuda:0`.
    fn device_name(&self) -> String;
    /// What makes vectors comparable besides the name, when the name alone
    /// does not say it (a remote name can point at another server model).
    fn identity(&self) -> Option<String> {
        None
    }
    /// Texts one forward pass takes at most: callers with many texts hand over
    /// several batches' worth per call, so a GPU is not fed a CPU's portions.
    fn batch_size(&self) -> usize {
        32
    }
    /// Embeds `texts` in order; each vector has length [`Embedder::dims`] and norm 1.
    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Embeds like [`Embedder::embed`], but hands the model to `pause` between
    /// steps of long work, so the thread that owns it can embed something urgent
    /// (a query) without waiting for the whole call. Without steps, one call.
    fn embed_pausable(
        &mut self,
        texts: &[&str],
        kind: InputKind,
        pause: &mut dyn FnMut(&mut dyn Embedder),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _ = pause;
        self.embed(texts, kind)
    }
}

/// What to load and how to run it.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// A registry name or alias; empty means [`DEFAULT_MODEL`].
    pub model: String,
    /// Where to run it.
    pub device: DeviceChoice,
    /// A local folder with the model's files, instead of the hub cache.
    pub model_path: Option<PathBuf>,
    /// Texts per forward pass at most; `None` takes the device's default.
    pub batch_size: Option<usize>,
    /// Padded tokens per forward pass at most; `None` takes the device's default.
    pub token_budget: Option<usize>,
    /// Compute precision; `None` picks F32 on the CPU and F16 on GPUs.
    pub precision: Option<Precision>,
}

/// Threads candle's CPU kernels use (for reports; only `embed` touches candle).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// A model name resolved: one of the registry's, or a remote one.
#[derive(Debug, Clone, Copy)]
pub enum ModelChoice<'a> {
    /// Weights run here.
    Local(&'static ModelSpec),
    /// An HTTP API (`config.yaml`'s `remote:`, or a built-in name).
    Remote(&'a RemoteSpec),
}

impl ModelChoice<'_> {
    /// The canonical name.
    pub fn name(&self) -> &str {
        match self {
            ModelChoice::Local(spec) => spec.name,
            ModelChoice::Remote(spec) => &spec.name,
        }
    }
}

/// Finds `name` among the registry's models (names, aliases, Hugging Face
/// repositories, without regard to case) and then the remote ones.
pub fn resolve<'a>(name: &str, remote: &'a [RemoteSpec]) -> Result<ModelChoice<'a>, EmbedError> {
    let wanted = name.trim();
    if let Some(spec) = remote.iter().find(|r| r.name.eq_ignore_ascii_case(wanted)) {
        return Ok(ModelChoice::Remote(spec));
    }
    registry::lookup(wanted)
        .map(ModelChoice::Local)
        .map_err(|err| match err {
            EmbedError::UnknownModel { name, valid } if !remote.is_empty() => {
                let names: Vec<&str> = remote.iter().map(|r| r.name.as_str()).collect();
                EmbedError::UnknownModel {
                    name,
                    valid: format!("{valid}; remote: {}", names.join(", ")),
                }
            }
            other => other,
        })
}

/// Loads the model `options` name, on the device it asks for.
pub fn load(options: &EmbedOptions, locator: &ModelLocator) -> Result<CandleEmbedder, EmbedError> {
    let name = if options.model.trim().is_empty() {
        DEFAULT_MODEL
    } else {
        options.model.as_str()
    };
    let spec = registry::lookup(name)?;
    if !spec.arch.is_supported() {
        return Err(EmbedError::Unsupported {
            model: spec.name,
            hf_repo: spec.hf_repo,
            arch: spec.arch.as_str(),
            supported: registry::supported_names(),
        });
    }
    let device = options.device.open()?;
    let dir = locator.locate(spec, options.model_path.as_deref())?;
    let policy = BatchPolicy::for_device(&device, options.batch_size, options.token_budget);
    CandleEmbedder::load(spec, &dir, device, policy, options.precision)
}

/// Everything that can go wrong between a model name and a vector.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The name is not in the registry.
    #[error("unknown model `{name}`; valid names: {valid}")]
    UnknownModel {
        /// What the user asked for.
        name: String,
        /// Every valid name, with its first alias.
        valid: String,
    },
    /// The model is registered but its architecture is not implemented yet.
    #[error(
        "model `{model}` ({hf_repo}) uses the {arch} architecture, which codesearch does not support yet; use one of: {supported}"
    )]
    Unsupported {
        /// Canonical name.
        model: &'static str,
        /// Hugging Face repository.
        hf_repo: &'static str,
        /// Architecture name.
        arch: &'static str,
        /// Models that do work.
        supported: String,
    },
    /// The device name is not one we know.
    #[error("unknown device `{value}`; use one of: auto, cpu, cuda, metal (mlx)")]
    UnknownDevice {
        /// What the user asked for.
        value: String,
    },
    /// The device's back end was not compiled into this binary.
    #[error(
        "device `{device}` is not compiled into this codesearchd; rebuild with `--features {feature}` (see docs/INSTALL.md) or pass `--device cpu`"
    )]
    DeviceNotCompiled {
        /// `cuda` or `metal`.
        device: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The back end is compiled in but no usable device was found.
    #[error(
        "device `{device}` is not available on this machine ({reason}); pass `--device cpu` or `--device auto`"
    )]
    DeviceUnavailable {
        /// `cuda` or `metal`.
        device: &'static str,
        /// What the driver said.
        reason: String,
    },
    /// The model's files are not where we looked.
    #[error(
        "weights for model `{model}` ({hf_repo}) not found in {searched}: {missing}; {hint}",
        searched = searched.display()
    )]
    WeightsNotFound {
        /// Canonical name.
        model: &'static str,
        /// Hugging Face repository.
        hf_repo: &'static str,
        /// The folder searched.
        searched: PathBuf,
        /// What is missing there.
        missing: String,
        /// The command or setting that fixes it.
        hint: String,
    },
    /// A model file exists but cannot be used.
    #[error("model `{model}`: cannot use {path}: {reason}", path = path.display())]
    BadModelFile {
        /// Canonical name.
        model: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Tokenizing the input failed.
    #[error("model `{model}`: tokenizer failed: {reason}")]
    Tokenize {
        /// Canonical name.
        model: &'static str,
        /// What the tokenizer said.
        reason: String,
    },
    /// The model thread has stopped (the daemon is shutting down).
    #[error("model `{model}` is no longer running (the daemon is shutting down)")]
    Closed {
        /// Canonical name.
        model: String,
    },
    /// The caller's cancellation token fired while it waited for the model.
    #[error("embedding with model `{model}` was cancelled (the daemon is shutting down)")]
    Cancelled {
        /// Canonical name.
        model: String,
    },
    /// A remote model's settings cannot be used (its key variable is not set).
    #[error("model `{model}`: {reason}")]
    RemoteSetup {
        /// The configured name.
        model: String,
        /// What is missing and where to set it.
        reason: String,
    },
    /// The embedding server did not answer usably (after its retries).
    #[error("model `{model}` at {url}: {reason}")]
    Remote {
        /// The configured name.
        model: String,
        /// The endpoint, without credentials.
        url: String,
        /// What the server said, or why it could not be reached.
        reason: String,
    },
    /// The forward pass failed.
    #[error("model `{model}` on {device}: {source}")]
    Compute {
        /// Canonical name.
        model: &'static str,
        /// Where it ran.
        device: String,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl EmbedError {
    fn bad_file(model: &'static str, path: &Path, reason: impl ToString) -> Self {
        Self::BadModelFile {
            model,
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_architecture_names_what_works() {
        let locator = ModelLocator {
            hub_cache: PathBuf::from("/nonexistent"),
            offline: true,
        };
        let options = EmbedOptions {
            model: "jina-code".into(),
            ..Default::default()
        };
        let err = load(&options, &locator).unwrap_err().to_string();
        assert!(err.contains("jina_bert"), "{err}");
        assert!(err.contains("not support yet"), "{err}");
        assert!(err.contains("minilm"), "{err}");
    }
}
