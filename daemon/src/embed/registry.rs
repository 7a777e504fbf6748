//! The model registry: names users type, and what each name means.
//!
//! The original codesearch's names (`bge-small-mlx`, `nomic-mlx`, …) stay valid as
//! aliases so configs and muscle memory carry over.

use codesearch_proto::{ModelInfo, Pooling};

use super::EmbedError;

/// The network family of a model, which decides the code that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT encoders: MiniLM, BGE, gte-small/base, e5-v2.
    Bert,
    /// nomic-embed-text (rotary, SwiGLU).
    NomicBert,
    /// XLM-RoBERTa (bge-m3).
    XlmRoberta,
    /// RoBERTa (unixcoder, codebert).
    Roberta,
    /// Jina BERT with ALiBi.
    JinaBert,
}

impl Arch {
    /// The architecture's name as candle and Hugging Face configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::NomicBert => "nomic_bert",
            Arch::XlmRoberta => "xlm_roberta",
            Arch::Roberta => "roberta",
            Arch::JinaBert => "jina_bert",
        }
    }

    /// Whether this build can run the architecture.
    pub fn is_supported(self) -> bool {
        // RoBERTa and XLM-RoBERTa are BERT's layout with positions numbered
        // after the padding id (`BertConfig::position_offset`).
        matches!(
            self,
            Arch::Bert | Arch::Roberta | Arch::XlmRoberta | Arch::NomicBert
        )
    }
}

/// Everything codesearch knows about one model before its files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Canonical name, as accepted by `--model`.
    pub name: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// Hugging Face repository of the weights.
    pub hf_repo: &'static str,
    /// Network family.
    pub arch: Arch,
    /// Vector length.
    pub dims: usize,
    /// Truncation length when the model folder does not say otherwise.
    pub max_tokens: usize,
    /// Pooling when the model folder has no `1_Pooling/config.json`.
    pub pooling: Pooling,
    /// Prepended to queries (instruction-tuned models want one).
    pub query_prefix: &'static str,
    /// Prepended to documents.
    pub document_prefix: &'static str,
}

impl ModelSpec {
    /// The `models.list` row for this model.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.to_owned(),
            aliases: self.aliases.iter().map(|a| (*a).to_owned()).collect(),
            hf_repo: self.hf_repo.to_owned(),
            dims: self.dims,
            max_tokens: self.max_tokens,
            pooling: self.pooling,
            availability: None,
            location: None,
            device: None,
            remote_model: None,
        }
    }
}

/// The model used when nothing else is configured.
pub const DEFAULT_MODEL: &str = "minilm";

const BGE_QUERY: &str = "Represent this sentence for searching relevant passages: ";

/// Every registered model, the default first.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "minilm",
        aliases: &["all-minilm-l6-v2"],
        hf_repo: "sentence-transformers/all-MiniLM-L6-v2",
        arch: Arch::Bert,
        dims: 384,
        max_tokens: 256,
        pooling: Pooling::Mean,
        query_prefix: "",
        document_prefix: "",
    },
    ModelSpec {
        name: "bge-small",
        aliases: &["bge-small-mlx", "bge-small-en-v1.5"],
        hf_repo: "BAAI/bge-small-en-v1.5",
        arch: Arch::Bert,
        dims: 384,
        max_tokens: 512,
        pooling: Pooling::Cls,
        query_prefix: BGE_QUERY,
        document_prefix: "",
    },
    ModelSpec {
        name: "bge-large",
        aliases: &["bge-large-mlx", "bge-large-en-v1.5"],
        hf_repo: "BAAI/bge-large-en-v1.5",
        arch: Arch::Bert,
        dims: 1024,
        max_tokens: 512,
        pooling: Pooling::Cls,
        query_prefix: BGE_QUERY,
        document_prefix: "",
    },
    ModelSpec {
        name: "bge-m3",
        aliases: &["bge-m3-mlx"],
        hf_repo: "BAAI/bge-m3",
        arch: Arch::XlmRoberta,
        dims: 1024,
        max_tokens: 8192,
        pooling: Pooling::Cls,
        query_prefix: "",
        document_prefix: "",
    },
    ModelSpec {
        name: "nomic",
        aliases: &["nomic-mlx", "nomic-embed-text-v1.5"],
        hf_repo: "nomic-ai/nomic-embed-text-v1.5",
        arch: Arch::NomicBert,
        dims: 768,
        max_tokens: 8192,
        pooling: Pooling::Mean,
        query_prefix: "search_query: ",
        document_prefix: "search_document: ",
    },
    ModelSpec {
        name: "jina-code",
        aliases: &["jina-embeddings-v2-base-code"],
        hf_repo: "jinaai/jina-embeddings-v2-base-code",
        arch: Arch::JinaBert,
        dims: 768,
        max_tokens: 8192,
        pooling: Pooling::Mean,
        query_prefix: "",
        document_prefix: "",
    },
    ModelSpec {
        name: "unixcoder",
        aliases: &["unixcoder-base"],
        hf_repo: "microsoft/unixcoder-base",
        arch: Arch::Roberta,
        dims: 768,
        max_tokens: 512,
        pooling: Pooling::Mean,
        query_prefix: "",
        document_prefix: "",
    },
    ModelSpec {
        name: "codebert",
        aliases: &["codebert-base"],
        hf_repo: "microsoft/codebert-base",
        arch: Arch::Roberta,
        dims: 768,
        max_tokens: 512,
        pooling: Pooling::Mean,
        query_prefix: "",
        document_prefix: "",
    },
];

/// Finds a model by name, alias or Hugging Face repository, ignoring ASCII case.
pub fn lookup(name: &str) -> Result<&'static ModelSpec, EmbedError> {
    let wanted = name.trim();
    MODELS
        .iter()
        .find(|m| {
            m.name.eq_ignore_ascii_case(wanted)
                || m.hf_repo.eq_ignore_ascii_case(wanted)
                || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(wanted))
        })
        .ok_or_else(|| EmbedError::UnknownModel {
            name: name.to_owned(),
            valid: valid_names(),
        })
}

/// "minilm (all-minilm-l6-v2), bge-small (bge-small-mlx), …" for error messages.
fn valid_names() -> String {
    MODELS
        .iter()
        .map(|m| match m.aliases.first() {
            Some(alias) => format!("{} ({alias})", m.name),
            None => m.name.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Canonical names of the models this build can run.
pub fn supported_names() -> String {
    MODELS
        .iter()
        .filter(|m| m.arch.is_supported())
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve_to_the_same_model() {
        for (name, canonical) in [
            ("minilm", "minilm"),
            ("all-minilm-l6-v2", "minilm"),
            ("sentence-transformers/all-MiniLM-L6-v2", "minilm"),
            ("bge-small-mlx", "bge-small"),
            ("BGE-LARGE-MLX", "bge-large"),
            ("bge-m3-mlx", "bge-m3"),
            ("nomic-mlx", "nomic"),
            ("jina-code", "jina-code"),
        ] {
            assert_eq!(lookup(name).unwrap().name, canonical, "{name}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut all: Vec<String> = MODELS
            .iter()
            .flat_map(|m| std::iter::once(m.name).chain(m.aliases.iter().copied()))
            .map(str::to_ascii_lowercase)
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a name or alias is registered twice");
    }

    #[test]
    fn unknown_model_lists_the_valid_names() {
        let err = lookup("gpt-embed-9000").unwrap_err().to_string();
        assert!(err.contains("unknown model `gpt-embed-9000`"), "{err}");
        for m in MODELS {
            assert!(err.contains(m.name), "{err} lacks {}", m.name);
        }
        assert!(err.contains("bge-small-mlx"), "{err}");
    }
}
