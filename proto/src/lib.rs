//! The codesearch protocol: what `codesearchd` and every client agree on.
//!
//! This crate is deliberately boring: method names, the error codes of design.md,
//! the shapes that cross the socket, and where the home and the socket live.
//! It knows nothing of tokio, candle, usearch or tree-sitter, so the client and
//! editor-plugin helpers can depend on it without pulling the model stack in.

pub mod benchmark;
pub mod paths;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of this protocol that `daemon.status` reports as
/// `protocol_version`. Raised when a method, field or code is added, so a
/// client can tell what a daemon offers; nothing design.md names is ever
/// renamed or dropped.
pub const PROTOCOL_VERSION: u32 = 3;

/// One request-answer method of the protocol: its name, and the shapes of its
/// params and result. The daemon registers, and every client calls, methods
/// through these, so the two cannot disagree on a shape.
///
/// Methods without params take [`NoParams`] (sent as `null`); `repo.subscribe` is a
/// subscription, not a request-answer method, and has no marker.
pub trait Method {
    /// The method name on the wire.
    const NAME: &'static str;
    /// What the method takes.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What it answers.
    type Result: Serialize + DeserializeOwned + Clone + Send + 'static;
}

/// The params of a method that takes none: sent as `null`; whatever a client
/// sends instead (`{}`, `[]`) is accepted and ignored, as it always was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoParams;

impl Serialize for NoParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoParams)
    }
}

/// JSON-RPC method names, exactly as design.md spells them, and one marker
/// type per request-answer method (see [`Method`]).
pub mod method {
    use super::{
        EmbedParams, EmbedResult, Method, ModelInfo, NoParams, RepoAddParams, RepoPathParams,
        RepoReindexParams, RepoStatus, SearchParams, SearchResult,
        benchmark::{BenchmarkParams, BenchmarkResult},
    };

    macro_rules! methods {
        ($($(#[$doc:meta])* $marker:ident = $name:ident: $params:ty => $result:ty;)*) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $marker;
            impl Method for $marker {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*};
    }

    methods! {
        /// `search`.
        Search = SEARCH: SearchParams => SearchResult;
        /// `repo.add`.
        RepoAdd = REPO_ADD: RepoAddParams => RepoStatus;
        /// `repo.remove`.
        RepoRemove = REPO_REMOVE: RepoPathParams => ();
        /// `repo.list`.
        RepoList = REPO_LIST: NoParams => Vec<RepoStatus>;
        /// `repo.reindex`.
        RepoReindex = REPO_REINDEX: RepoReindexParams => RepoStatus;
        /// `daemon.status`.
        DaemonStatus = DAEMON_STATUS: NoParams => super::DaemonStatus;
        /// `daemon.shutdown`.
        DaemonShutdown = DAEMON_SHUTDOWN: NoParams => ();
        /// `models.list`.
        ModelsList = MODELS_LIST: NoParams => Vec<ModelInfo>;
        /// `embed`.
        Embed = EMBED: EmbedParams => EmbedResult;
        /// `benchmark.run`.
        BenchmarkRun = BENCHMARK_RUN: BenchmarkParams => BenchmarkResult;
    }

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
    /// Subscribe this connection to `repo.progress` (of one repository, or all).
    pub const REPO_SUBSCRIBE: &str = "repo.subscribe";
    /// End a `repo.subscribe` subscription.
    pub const REPO_UNSUBSCRIBE: &str = "repo.unsubscribe";
    /// Version, pid, loaded models, repositories and memory of the daemon.
    pub const DAEMON_STATUS: &str = "daemon.status";
    /// Ask the daemon to shut down cleanly.
    pub const DAEMON_SHUTDOWN: &str = "daemon.shutdown";
    /// The model registry.
    pub const MODELS_LIST: &str = "models.list";
    /// Embed texts with a resident model.
    pub const EMBED: &str = "embed";
    /// Index a repository with one model into a scratch index and measure speed,
    /// memory, storage and the quality of answers to labelled queries.
    pub const BENCHMARK_RUN: &str = "benchmark.run";
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
    /// Done by a remote server, whose pooling is its own (since protocol 3).
    Server,
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
    /// `local` (weights found), `download` (fetched on first use), `missing`
    /// (not found, and `HF_HUB_OFFLINE` forbids a download), `remote` (an
    /// HTTP API) or `unsupported` (this build cannot run it). Since protocol 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// The weights' folder, or a remote model's endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The device it runs on once loaded (`cpu`, `cuda:0`, …); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A remote model's name on its server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
}

/// Longest request line the daemon reads; longer ones get `INVALID_REQUEST`.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Limits on what one client may ask; each is a clear error past the limit.
pub mod limits {
    /// Requests in one batch (`[...]`); more is `INVALID_REQUEST`.
    pub const MAX_BATCH: usize = 1000;
    /// Open `repo.subscribe` subscriptions per connection; more is `OVERLOADED`.
    pub const MAX_SUBSCRIPTIONS: usize = 16;
    /// Texts per `embed` call; more is `INVALID_PARAMS`.
    pub const MAX_EMBED_TEXTS: usize = 4096;
    /// Bytes of one `embed` text that are embedded; the rest is cut (the model
    /// reads a few hundred tokens of it at most anyway).
    pub const MAX_EMBED_TEXT_BYTES: usize = 64 * 1024;
    /// Bytes of a `search` query; more is `INVALID_PARAMS`.
    pub const MAX_QUERY_BYTES: usize = 64 * 1024;
    /// Largest `k` of a search.
    pub const MAX_K: usize = 1000;
    /// Entries of a search's `repos`, `languages` or `paths` filter.
    pub const MAX_FILTER_ITEMS: usize = 1000;
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The repository root.
    pub repo: String,
    /// Path relative to `repo`.
    pub path: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, 1-based, inclusive.
    pub end_line: u32,
    /// Qualified symbol, when the chunk is an entity.
    pub symbol: Option<String>,
    /// `function`, `method`, `class`, …, or `window`.
    pub kind: String,
    /// Language name.
    pub language: String,
    /// Relevance; higher is better.
    pub score: f32,
    /// The first lines of the hit as they are on disk.
    pub snippet: String,
    /// The file changed after it was indexed.
    pub stale: bool,
}

/// Where a repository's indexing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoState {
    /// A run is in progress; searches answer from what is indexed.
    Indexing,
    /// Up to date.
    Ready,
    /// The last run failed; `error` says why.
    Error,
}

/// A repository as `repo.list` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// The repository root.
    pub path: String,
    /// Where indexing stands.
    pub state: RepoState,
    /// The model its index was built with.
    pub model: String,
    /// Files indexed.
    pub files: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Files waiting to be indexed.
    pub pending: u64,
    /// When the last run finished (seconds since the epoch).
    pub indexed_at: Option<u64>,
    /// What went wrong, in state `error`.
    pub error: Option<String>,
    /// A file watcher follows the repository (or periodic rescans stand in for
    /// one; see `watch_error`).
    #[serde(default)]
    pub watching: bool,
    /// Why watching is degraded, with the fix (e.g. inotify watches run out).
    #[serde(default)]
    pub watch_error: Option<String>,
    /// Changed paths seen by the watcher and not yet applied.
    #[serde(default)]
    pub changes_pending: u64,
    /// When the watcher last applied changes (seconds since the epoch).
    #[serde(default)]
    pub last_change_at: Option<u64>,
    /// Chunks the model embedded for this repository since the daemon started.
    #[serde(default)]
    pub chunks_embedded: u64,
    /// Files the last whole pass left out, by reason; `null` before one ended.
    #[serde(default)]
    pub skipped: Option<Skipped>,
}

/// Files a pass left out: how many per reason, and a few example paths.
///
/// Reasons: `binary` (a NUL byte in the first 8 KiB), `too_large` (over the
/// size cap, 1 MiB, whatever the file's metadata says), `generated` (minified:
/// very long lines on average), `not_utf8`, `symlink_outside_root` (or
/// dangling), `unreadable` (permissions, FIFOs, sockets, devices).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Files skipped in all.
    pub total: u64,
    /// Files per reason; reasons with none are absent.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Up to [`Skipped::EXAMPLES`] repository-relative paths per reason.
    #[serde(default)]
    pub examples: std::collections::BTreeMap<String, Vec<String>>,
}

impl Skipped {
    /// Example paths kept per reason.
    pub const EXAMPLES: usize = 5;
}

/// `embed` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Texts to embed.
    pub texts: Vec<String>,
    /// `document` (default) or `query`.
    #[serde(default)]
    pub kind: EmbedKind,
    /// A model other than the daemon's default.
    #[serde(default)]
    pub model: Option<String>,
}

/// Documents and queries are embedded differently by instruction-tuned models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedKind {
    /// Something to find.
    #[default]
    Document,
    /// Something to search with.
    Query,
}

/// `embed` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResult {
    /// Canonical model name.
    pub model: String,
    /// Vector length.
    pub dims: usize,
    /// One L2-normalised vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
}

/// A model the daemon has loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedModel {
    /// Canonical name.
    pub name: String,
    /// Where it runs, e.g. `cpu` or `cuda:0`.
    pub device: String,
}

/// `daemon.status` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Models loaded.
    pub models: Vec<LoadedModel>,
    /// Registered repositories.
    pub repos: Vec<RepoStatus>,
    /// Resident memory, where the OS reports it.
    pub rss_bytes: Option<u64>,
    /// Who started the daemon: `systemd` or `launchd` (socket activation),
    /// `codesearch` (auto-started by the client), or `null` (by hand).
    #[serde(default)]
    pub started_by: Option<String>,
    /// The [`PROTOCOL_VERSION`] the daemon speaks; 1 for daemons from before
    /// the field existed.
    #[serde(default = "protocol_v1")]
    pub protocol_version: u32,
}

fn protocol_v1() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_has_the_fields_of_the_contract() {
        let hit = Hit {
            repo: "/r".into(),
            path: "src/a.rs".into(),
            start_line: 1,
            end_line: 3,
            symbol: Some("f".into()),
            kind: "function".into(),
            language: "rust".into(),
            score: 0.5,
            snippet: "fn f() {}".into(),
            stale: false,
        };
        let v = serde_json::to_value(&hit).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "end_line",
                "kind",
                "language",
                "path",
                "repo",
                "score",
                "snippet",
                "stale",
                "start_line",
                "symbol"
            ]
        );
        assert_eq!(serde_json::from_value::<Hit>(v).unwrap(), hit);
    }

    #[test]
    fn no_params_is_sent_as_null_and_ignores_what_it_gets() {
        assert_eq!(
            serde_json::to_value(NoParams).unwrap(),
            serde_json::Value::Null
        );
        for sent in ["null", "{}", "[]", r#"{"x":1}"#] {
            assert_eq!(serde_json::from_str::<NoParams>(sent).unwrap(), NoParams);
        }
        // A daemon from before `protocol_version` speaks version 1.
        let old =
            r#"{"version":"0.1.0","pid":1,"uptime_s":0,"models":[],"repos":[],"rss_bytes":null}"#;
        assert_eq!(
            serde_json::from_str::<DaemonStatus>(old)
                .unwrap()
                .protocol_version,
            1
        );
    }

    #[test]
    fn embed_params_default_and_reject_unknown_fields() {
        let p: EmbedParams = serde_json::from_str(r#"{"texts":["a"]}"#).unwrap();
        assert_eq!((p.kind, p.model), (EmbedKind::Document, None));
        let p: EmbedParams = serde_json::from_str(r#"{"texts":[],"kind":"query"}"#).unwrap();
        assert_eq!(p.kind, EmbedKind::Query);
        assert!(serde_json::from_str::<EmbedParams>(r#"{"texts":[],"knd":"query"}"#).is_err());
    }
}

/// `repo.add` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoAddParams {
    /// The repository root.
    pub path: String,
    /// A model other than the daemon's default.
    #[serde(default)]
    pub model: Option<String>,
    /// Answer only when the first indexing run has finished.
    #[serde(default)]
    pub wait: bool,
}

/// `repo.subscribe` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSubscribeParams {
    /// Only this repository root; every repository when absent.
    #[serde(default)]
    pub path: Option<String>,
}

/// The `result` of a `repo.progress` notification: where one indexing run stands.
///
/// Sent when a run starts, about every 100 ms while it runs, and once at its end
/// with `state` `ready` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoProgress {
    /// The repository root.
    pub path: String,
    /// `indexing` while the run goes on; `ready` or `error` at its end.
    pub state: RepoState,
    /// Files the walk found (0 until the walk has finished).
    pub files_total: u64,
    /// Files dealt with so far (unchanged, indexed or skipped).
    pub files_done: u64,
    /// Chunks the model embedded so far in this run.
    pub chunks_embedded: u64,
    /// Chunks written so far in this run.
    pub chunks_written: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// What went wrong, in state `error`.
    #[serde(default)]
    pub error: Option<String>,
}

/// `repo.remove` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoPathParams {
    /// The repository root.
    pub path: String,
}

/// `repo.reindex` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoReindexParams {
    /// The repository root.
    pub path: String,
    /// Drop the index and build it again, instead of an incremental run.
    #[serde(default)]
    pub full: bool,
    /// Answer only when the run has finished.
    #[serde(default)]
    pub wait: bool,
}

/// `search` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What to look for, in words or code.
    pub query: String,
    /// Hits wanted.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Repository roots to search; all when absent.
    #[serde(default)]
    pub repos: Option<Vec<String>>,
    /// Languages to keep (`rust`, `python`, …); all when absent.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Globs over repository-relative paths to keep; all when absent.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// `hybrid`, `semantic` or `lexical`.
    #[serde(default)]
    pub mode: Option<String>,
}

fn default_k() -> usize {
    10
}

/// `search` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Hits, best first.
    pub results: Vec<Hit>,
    /// Time the daemon spent, in milliseconds.
    pub took_ms: f64,
}
