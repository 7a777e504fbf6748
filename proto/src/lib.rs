//! The codesearch protocol: what `codesearchd` and every client agree on.
//!
//! This crate is deliberately boring: method names, the error codes of design.md,
//! the shapes that cross the socket, and where the home and the socket live.
//! It knows nothing of tokio, candle, usearch or tree-sitter, so the client and
//! editor-plugin helpers can depend on it without pulling the model stack in.

pub mod paths;

use serde::{Deserialize, Serialize};

/// JSON-RPC method names, exactly as design.md spells them.
pub mod method {
    /// Semantic, lexical or hybrid search over indexed repositories.
    pub const SEARCH: &str = "search";
    /// Register a repository and index it.
    pub const REPO_ADD: &str = "repo.add";
    /// Forget a repository and delete its index.
    pub const REPO_REMOVE: &str = "repo.remove";
    /// Every registered repository with its status.
    pub const REPO_LIST: &str = "repo.list";
    /// Re-index a repository (incrementally unless `full`).
    pub const REPO_REINDEX: &str = "repo.reindex";
    /// Progress notifications pushed while a repository is indexed.
    pub const REPO_PROGRESS: &str = "repo.progress";
    /// Version, pid, loaded models, repositories and memory of the daemon.
    pub const DAEMON_STATUS: &str = "daemon.status";
    /// Ask the daemon to shut down cleanly.
    pub const DAEMON_SHUTDOWN: &str = "daemon.shutdown";
    /// The model registry.
    pub const MODELS_LIST: &str = "models.list";
    /// Embed texts with a resident model.
    pub const EMBED: &str = "embed";
}

/// JSON-RPC error codes: the standard ones and codesearch's own.
pub mod code {
    /// The line was not valid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// The JSON was not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// The params did not fit the method.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The daemon failed while handling a valid request.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// The repository named is not registered.
    pub const UNKNOWN_REPO: i32 = -32001;
    /// The model asked for is unknown, unsupported or its weights are missing.
    pub const MODEL_UNAVAILABLE: i32 = -32002;
    /// A path that does not exist, is not a directory, or leaves every indexed root.
    pub const BAD_PATH: i32 = -32003;
    /// The daemon is at capacity; retry later.
    pub const OVERLOADED: i32 = -32004;
}

/// Pooling that turns token vectors into one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average of the token vectors under the attention mask.
    Mean,
    /// The vector of the first (`[CLS]`) token.
    Cls,
}

/// One row of `models.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The canonical name, as accepted by `--model`.
    pub name: String,
    /// Other names accepted for the same model (the original codesearch's among them).
    pub aliases: Vec<String>,
    /// The Hugging Face repository the weights come from.
    pub hf_repo: String,
    /// Length of each vector.
    pub dims: usize,
    /// Inputs are truncated to this many tokens.
    pub max_tokens: usize,
    /// How token vectors become one vector.
    pub pooling: Pooling,
}
