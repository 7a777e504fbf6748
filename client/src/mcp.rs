//! `codesearch mcp`: a Model Context Protocol server on stdio, for coding agents
//! (Claude Code, Codex, Cursor, VS Code, opencode), on the official Rust SDK.
//!
//! A thin bridge: every tool call is one or two requests to `codesearchd` over
//! its socket, on a connection of its own, made with the CLI's
//! [`rpc::connect_or_start`] (so a daemon that is not running, or was stopped
//! mid-session, is started again). Many sessions share one daemon and one
//! model; the bridge links none of the model stack. `initialize` answers at
//! once and indexes nothing. stdout carries the protocol and nothing else.

use std::path::{Path, PathBuf};

use codesearch_proto::{
    Hit, NoParams, RepoAddParams, RepoReindexParams, RepoState, RepoStatus, SearchParams, code,
    limits, method,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{
    ErrorData as McpError, ServerHandler, ServiceExt as _, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::pack::{self, estimate_tokens};
use crate::rpc;

/// The token budget of a `search` answer when the agent names none: a few
/// screens of code, far under the 25,000 tokens at which Claude Code refuses
/// a tool result.
pub const DEFAULT_MAX_TOKENS: usize = 6_000;

/// Largest `max_tokens` accepted (what the agents' hosts take at most).
pub const MAX_MAX_TOKENS: usize = 100_000;

/// Tokens kept for the answer's first and last lines (counts and notes), so
/// the whole answer, not only the code, keeps to `max_tokens`.
const FRAME_TOKENS: usize = 96;

/// How long one request to the daemon may take (a search waits for the model
/// to load after a start, a few seconds on a CPU).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Hits searched for the definitions of a name: its definitions come first in
/// a name query's ranking, and overloads, impls and same-named methods of other
/// types need room.
const DEFINITION_CANDIDATES: usize = 50;

/// Where the daemon is and how to start it: the CLI's settings.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// `CODESEARCH_HOME`.
    pub home: PathBuf,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// `codesearchd serve` arguments for a daemon this bridge starts.
    pub args: Vec<String>,
}

/// How hits are found.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Meaning and words together (the default, and the best for most questions).
    Hybrid,
    /// Meaning only: for questions whose words the code may not use.
    Semantic,
    /// Words and identifiers only: for exact names.
    Lexical,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Semantic => "semantic",
            Self::Lexical => "lexical",
        }
    }
}

/// `search` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// What to look for: a question in plain words ("where are failed requests
    /// retried with backoff"), an identifier (`parseConfig`, `Client::send`)
    /// or a fragment of code.
    pub query: String,
    /// How many hits to rank (1 to 100; default 10). Hits that do not fit in
    /// `max_tokens` are left out and counted.
    #[serde(default)]
    pub k: Option<usize>,
    /// Repository roots to search, absolute or relative to the working
    /// directory. Default: the indexed repository that contains the working
    /// directory, else every indexed repository.
    #[serde(default)]
    pub repos: Option<Vec<String>>,
    /// Only these languages, e.g. ["rust", "python", "typescript"].
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Only repository-relative paths matching these globs, e.g. ["src/**", "**/*.go"].
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// hybrid (default), semantic or lexical.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Most tokens the answer may take (estimated at 3 bytes a token; default
    /// 6000, at most 100000). Whole definitions are shown while they fit; the
    /// first one that does not is cut and marked.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Lines of context to show around each hit (default 0).
    #[serde(default)]
    pub context: Option<u32>,
}

/// `index` arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexArgs {
    /// The repository root, absolute or relative to the working directory.
    /// Default: the indexed repository that contains the working directory,
    /// else the working directory itself.
    #[serde(default)]
    pub path: Option<String>,
    /// Build the index again from nothing (the old one keeps answering until
    /// the new one is complete). Default false: only changed files are redone.
    #[serde(default)]
    pub full: Option<bool>,
}

/// `definition` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionArgs {
    /// The name to find the definitions of: a function, method, class, type,
    /// trait or constant, bare (`parse_config`) or qualified (`Client.send`,
    /// `Vec::push`).
    pub name: String,
    /// Repository roots to look in; default as for `search`.
    #[serde(default)]
    pub repos: Option<Vec<String>>,
    /// Most tokens the answer may take (default 6000).
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// `status` arguments: none.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {}

/// The MCP server: tools that forward to the daemon.
#[derive(Debug, Clone)]
pub struct Bridge {
    daemon: Daemon,
    /// The server's working directory: the default repository is the indexed
    /// one that contains it.
    cwd: PathBuf,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Bridge {
    /// A bridge to `daemon` for an agent working in `cwd`.
    pub fn new(daemon: Daemon, cwd: PathBuf) -> Self {
        Self {
            daemon,
            cwd,
            tool_router: Self::tool_router(),
        }
    }

    /// Semantic and lexical code search.
    #[tool(
        name = "search",
        description = "Search the user's indexed code by meaning and by name. Use it before reading files to find where something is implemented, defined, configured or tested: ask in plain words (\"where are HTTP retries configured\") or give an identifier (`parseConfig`). Returns ranked hits grouped by file, each as the whole definition with line numbers (path, lines, symbol, kind, score), packed into `max_tokens`. Searches the repository that contains the working directory unless `repos` says otherwise; call `index` first if it is not indexed."
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<CallToolResult, McpError> {
        let bridge = self.clone();
        blocking(move || bridge.search_blocking(args)).await
    }

    /// Start or refresh indexing.
    #[tool(
        name = "index",
        description = "Index a repository (or refresh its index) so that `search` can find its code; the index then follows edits by itself. Returns at once with the repository's status (state `indexing` while the first pass runs; searches answer from what is indexed so far). Call `status` to follow it."
    )]
    async fn index(
        &self,
        Parameters(args): Parameters<IndexArgs>,
    ) -> Result<CallToolResult, McpError> {
        let bridge = self.clone();
        blocking(move || bridge.index_blocking(args)).await
    }

    /// Where a name is defined.
    #[tool(
        name = "definition",
        description = "Find where a function, method, class, type, trait or constant is defined, by its exact name (`parse_config`) or a qualified one (`Client.send`, `Vec::push`). Returns each definition whole, with its path and line numbers, best first. Cheaper and more precise than `search` when you know the name; use `search` for behaviour described in words."
    )]
    async fn definition(
        &self,
        Parameters(args): Parameters<DefinitionArgs>,
    ) -> Result<CallToolResult, McpError> {
        let bridge = self.clone();
        blocking(move || bridge.definition_blocking(args)).await
    }

    /// The daemon and its repositories.
    #[tool(
        name = "status",
        description = "The code-search daemon's status: the loaded embedding model, and every indexed repository with its state (indexing, ready, error), files, chunks and freshness. `working_directory_repo` is the repository searches default to."
    )]
    async fn status(
        &self,
        Parameters(_): Parameters<StatusArgs>,
    ) -> Result<CallToolResult, McpError> {
        let bridge = self.clone();
        blocking(move || bridge.status_blocking()).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("codesearch", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "codesearch finds code by meaning and by name in the user's indexed repositories. \
                 Call `search` with a question or an identifier before opening files; \
                 if the repository is not indexed, call `index` once.",
            )
    }
}

/// Runs a blocking tool body (socket I/O) off the async workers.
async fn blocking(
    f: impl FnOnce() -> Result<CallToolResult, McpError> + Send + 'static,
) -> Result<CallToolResult, McpError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(McpError::internal_error(format!("tool failed: {e}"), None)))
}

impl Bridge {
    fn connect(&self) -> anyhow::Result<rpc::Client> {
        let mut c =
            rpc::connect_or_start(&self.daemon.socket, &self.daemon.home, &self.daemon.args)?
                .client;
        // An agent waits on every tool call: a daemon that hangs must not hang it.
        c.set_timeout(CALL_TIMEOUT)?;
        Ok(c)
    }

    /// `path` made absolute against the server's working directory.
    fn absolute(&self, path: &str) -> String {
        let p = Path::new(path);
        let p = if p.is_absolute() {
            p.to_owned()
        } else {
            self.cwd.join(p)
        };
        std::path::absolute(&p).unwrap_or(p).display().to_string()
    }

    /// The repositories a tool call searches: those the agent named, else
    /// the indexed one that contains the working directory, else all (`None`).
    fn scope(
        &self,
        c: &mut rpc::Client,
        named: Option<Vec<String>>,
    ) -> anyhow::Result<Option<Vec<String>>> {
        Ok(match named {
            Some(r) if !r.is_empty() => Some(r.iter().map(|p| self.absolute(p)).collect()),
            _ => self.working_directory_repo(c)?.map(|r| vec![r]),
        })
    }

    /// The indexed repository that contains the working directory, if any.
    fn working_directory_repo(&self, c: &mut rpc::Client) -> anyhow::Result<Option<String>> {
        let repos = c.request::<method::RepoList>(&NoParams)?;
        Ok(containing(&self.cwd, &repos))
    }

    fn search_blocking(&self, args: SearchArgs) -> Result<CallToolResult, McpError> {
        if args.query.trim().is_empty() {
            return Ok(invalid("`query` is empty".to_owned()));
        }
        let k = args.k.unwrap_or(10);
        if !(1..=100).contains(&k) {
            return Ok(invalid(format!("`k` is {k}; give 1 to 100")));
        }
        let max_tokens = match budget(args.max_tokens) {
            Ok(n) => n,
            Err(why) => return Ok(invalid(why)),
        };
        for (name, list) in [
            ("repos", &args.repos),
            ("languages", &args.languages),
            ("paths", &args.paths),
        ] {
            if list
                .as_ref()
                .is_some_and(|l| l.len() > limits::MAX_FILTER_ITEMS)
            {
                return Ok(invalid(format!(
                    "`{name}` has more than {} entries",
                    limits::MAX_FILTER_ITEMS
                )));
            }
        }
        self.search_daemon(args, k, max_tokens).or_else(tool_error)
    }

    /// `search` once its arguments are checked: the daemon's part.
    fn search_daemon(
        &self,
        args: SearchArgs,
        k: usize,
        max_tokens: usize,
    ) -> anyhow::Result<CallToolResult> {
        let mut c = self.connect()?;
        let repos = self.scope(&mut c, args.repos)?;
        let scope = match &repos {
            Some(r) => r.join(", "),
            None => "every indexed repository".to_owned(),
        };
        let result = c.request::<method::Search>(&SearchParams {
            query: args.query,
            k,
            repos,
            languages: args.languages.filter(|l| !l.is_empty()),
            paths: args.paths.filter(|p| !p.is_empty()),
            mode: args.mode.map(|m| m.as_str().to_owned()),
        })?;
        if result.results.is_empty() {
            let repos = c.request::<method::RepoList>(&NoParams)?;
            let text = if repos.is_empty() {
                "No repository is indexed yet. Call `index` with the repository's path (or with no arguments for the working directory), then search again.".to_owned()
            } else if repos.iter().any(|r| r.state == RepoState::Indexing) {
                format!(
                    "No hits in {scope}. Indexing is still running; searches answer from what is indexed so far. Try again shortly, or call `status`."
                )
            } else {
                format!("No hits in {scope}. Try other words, an identifier, or fewer filters.")
            };
            return Ok(CallToolResult::success(vec![ContentBlock::text(text)]));
        }
        let total = result.results.len();
        Ok(packed_answer(
            &result.results,
            args.context.unwrap_or(0),
            max_tokens,
            |shown, files| {
                (
                    format!("{shown} of {total} hits in {files} files from {scope}, best first:"),
                    format!("{shown} of {total} hits in {files} files, best first:"),
                )
            },
        ))
    }

    fn definition_blocking(&self, args: DefinitionArgs) -> Result<CallToolResult, McpError> {
        let name = args.name.trim().to_owned();
        if name.is_empty() || name.split_whitespace().count() > 1 {
            return Ok(invalid(format!(
                "`name` is {:?}; give one identifier, optionally qualified (`Client.send`); describe behaviour with `search` instead",
                args.name
            )));
        }
        let max_tokens = match budget(args.max_tokens) {
            Ok(n) => n,
            Err(why) => return Ok(invalid(why)),
        };
        self.definition_daemon(&name, args.repos, max_tokens)
            .or_else(tool_error)
    }

    fn definition_daemon(
        &self,
        name: &str,
        repos: Option<Vec<String>>,
        max_tokens: usize,
    ) -> anyhow::Result<CallToolResult> {
        let mut c = self.connect()?;
        let repos = self.scope(&mut c, repos)?;
        let result = c.request::<method::Search>(&SearchParams {
            query: name.to_owned(),
            k: DEFINITION_CANDIDATES,
            repos,
            languages: None,
            paths: None,
            mode: None,
        })?;
        let found: Vec<Hit> = result
            .results
            .into_iter()
            .filter(|h| h.symbol.as_deref().is_some_and(|s| defines(s, name)))
            .collect();
        if found.is_empty() {
            return Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "No definition named `{name}` is indexed in this scope. `search` finds code by what it does, or by a part of a name."
            ))]));
        }
        let n = found.len();
        Ok(packed_answer(&found, 0, max_tokens, |_, _| {
            (
                format!("{n} definition(s) of `{name}`, best first:"),
                "Definitions, best first:".to_owned(),
            )
        }))
    }

    fn index_blocking(&self, args: IndexArgs) -> Result<CallToolResult, McpError> {
        self.index_daemon(args).or_else(tool_error)
    }

    fn index_daemon(&self, args: IndexArgs) -> anyhow::Result<CallToolResult> {
        let mut c = self.connect()?;
        let path = match &args.path {
            Some(p) if !p.trim().is_empty() => self.absolute(p),
            _ => match self.working_directory_repo(&mut c)? {
                Some(r) => r,
                None => {
                    // The git repository the agent works in; never a whole
                    // home folder or file system by default (keys live there).
                    let root = git_root(&self.cwd).unwrap_or_else(|| self.cwd.clone());
                    let home = std::env::var_os("HOME").map(PathBuf::from);
                    if root.parent().is_none() || home.is_some_and(|h| h == root) {
                        return Ok(invalid(format!(
                            "the working directory {} is not inside a project; give `path`, the repository's root",
                            root.display()
                        )));
                    }
                    root.display().to_string()
                }
            },
        };
        let full = args.full.unwrap_or(false);
        let mut status = c.request::<method::RepoAdd>(&RepoAddParams {
            path,
            model: None,
            wait: false,
        })?;
        // A repository added before and idle now gets an incremental run.
        if full || status.state != RepoState::Indexing {
            status = c.request::<method::RepoReindex>(&RepoReindexParams {
                path: status.path,
                full,
                wait: false,
            })?;
        }
        let note = match status.state {
            RepoState::Indexing => {
                "Indexing runs in the background; `search` answers from what is indexed so far, and `status` shows how far it is."
            }
            RepoState::Ready => "The index is up to date.",
            RepoState::Error => "Indexing failed; `error` says why.",
        };
        json_result(&serde_json::json!({ "repository": status, "note": note }))
    }

    fn status_blocking(&self) -> Result<CallToolResult, McpError> {
        self.status_daemon().or_else(tool_error)
    }

    fn status_daemon(&self) -> anyhow::Result<CallToolResult> {
        let mut c = self.connect()?;
        // Raw JSON: fields of a newer daemon pass through.
        let mut status = c.request_raw::<method::DaemonStatus>(&NoParams)?;
        let repos: Vec<RepoStatus> =
            serde_json::from_value(status["repos"].clone()).unwrap_or_default();
        if let Some(obj) = status.as_object_mut() {
            obj.insert(
                "working_directory_repo".to_owned(),
                containing(&self.cwd, &repos).into(),
            );
        }
        json_result(&status)
    }
}

/// Whether a chunk's qualified `symbol` defines `name`: the same last parts,
/// whatever separates them (`::`, `.`, `#`, `/`), and ASCII case kept (in most
/// languages `Config` and `config` are two things).
fn defines(symbol: &str, name: &str) -> bool {
    let parts = |s: &str| -> Vec<String> {
        s.split([':', '.', '#', '/', '\\'])
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (symbol, name) = (parts(symbol), parts(name));
    !name.is_empty() && symbol.ends_with(&name)
}

/// `hits` packed into `max_tokens` under a heading, with what was left out
/// and why. `heading(shown, files)` gives the heading and a shorter one for
/// when the first would take more than its share of the frame (it may name
/// folders the agent chose).
fn packed_answer(
    hits: &[Hit],
    context: u32,
    max_tokens: usize,
    heading: impl Fn(usize, usize) -> (String, String),
) -> CallToolResult {
    let packed = pack::pack(
        hits,
        context,
        max_tokens - FRAME_TOKENS,
        pack::Format::Text,
        pack::read_file,
    );
    let (long, short) = heading(hits.len() - packed.omitted, packed.files.len());
    let mut text = if estimate_tokens(&long) + 1 > FRAME_TOKENS / 2 {
        short
    } else {
        long
    };
    text.push_str("\n\n");
    text.push_str(&packed.render(pack::Format::Text));
    if packed.files.is_empty() && !hits_readable(hits) {
        text.push_str(
            "The hits' files cannot be read now (moved or deleted since they were indexed?); call `index` to refresh the index.\n",
        );
    } else if packed.files.is_empty() {
        text.push_str(&format!(
            "The best hit does not fit in max_tokens={max_tokens}; raise max_tokens.\n"
        ));
    } else if packed.omitted > 0 {
        text.push_str(&format!(
            "\n({} more hits left out to keep within max_tokens={max_tokens}; raise it, lower k, or narrow the query.)\n",
            packed.omitted
        ));
    }
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// The answer's token budget: `max_tokens`, or the default; out of range is
/// an error that says the range.
fn budget(max_tokens: Option<usize>) -> Result<usize, String> {
    let n = max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if (FRAME_TOKENS * 2..=MAX_MAX_TOKENS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "`max_tokens` is {n}; give {} to {MAX_MAX_TOKENS}",
            FRAME_TOKENS * 2
        ))
    }
}

/// Whether the first hit's file can be read (else nothing was packed for
/// another reason than the budget).
fn hits_readable(hits: &[Hit]) -> bool {
    hits.first()
        .is_none_or(|h| pack::read_file(&Path::new(&h.repo).join(&h.path)).is_some())
}

/// The nearest folder from `dir` up that holds `.git`.
fn git_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_owned)
}

/// The longest registered root that contains `dir`.
fn containing(dir: &Path, repos: &[RepoStatus]) -> Option<String> {
    repos
        .iter()
        .filter(|r| dir.starts_with(&r.path))
        .max_by_key(|r| r.path.len())
        .map(|r| r.path.clone())
}

fn json_result(v: &Value) -> anyhow::Result<CallToolResult> {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(v)?,
    )]))
}

/// What went wrong in a tool, as a tool result marked as an error, as the MCP
/// specification asks of input validation and execution errors alike, so the
/// model reads it and corrects itself: an unknown repository, a model that
/// cannot load, a daemon that went away or cannot start. The text says what
/// to do. (Protocol errors, such as an unknown tool, are the SDK's.)
fn tool_error(e: anyhow::Error) -> Result<CallToolResult, McpError> {
    let invalid = e
        .downcast_ref::<rpc::RpcError>()
        .is_some_and(|rpc| rpc.code == i64::from(code::INVALID_PARAMS));
    if invalid {
        return Ok(self::invalid(format!("{e:#}")));
    }
    Ok(CallToolResult::error(vec![ContentBlock::text(format!(
        "codesearch: {e:#}"
    ))]))
}

/// Arguments the tool cannot take: a tool error naming the argument.
fn invalid(why: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "codesearch: invalid arguments: {why}"
    ))])
}

/// Serves MCP on stdin/stdout until the client closes them.
pub fn serve(daemon: Daemon) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("cannot read the working directory: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let service = Bridge::new(daemon, cwd)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("MCP session did not start: {e}"))?;
        service
            .waiting()
            .await
            .map_err(|e| anyhow::anyhow!("MCP session ended with an error: {e}"))?;
        Ok::<_, anyhow::Error>(())
    })?;
    // A tool call still blocked on the daemon must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> RepoStatus {
        RepoStatus {
            path: path.into(),
            state: RepoState::Ready,
            model: "minilm".into(),
            files: 1,
            chunks: 1,
            pending: 0,
            indexed_at: None,
            error: None,
            watching: true,
            watch_error: None,
            changes_pending: 0,
            last_change_at: None,
            chunks_embedded: 0,
            skipped: None,
        }
    }

    #[test]
    fn the_working_directory_repo_is_the_innermost_registered_root() {
        let repos = [repo("/w/a"), repo("/w/a/vendor/b"), repo("/w/ab")];
        assert_eq!(
            containing(Path::new("/w/a/vendor/b/src"), &repos).as_deref(),
            Some("/w/a/vendor/b")
        );
        assert_eq!(
            containing(Path::new("/w/a/src"), &repos).as_deref(),
            Some("/w/a")
        );
        // A sibling that shares a prefix of the name is not a parent.
        assert_eq!(containing(Path::new("/w/abc"), &repos), None);
        assert_eq!(containing(Path::new("/elsewhere"), &repos), None);
    }

    #[test]
    fn a_symbol_defines_a_name_when_their_last_parts_agree() {
        assert!(defines("Client::send", "send"));
        assert!(defines("Client.send", "Client::send"));
        assert!(defines("pkg/errors.Wrap", "Wrap"));
        assert!(defines("Wrap", "Wrap"));
        assert!(!defines("Client::send_all", "send"));
        assert!(!defines("Client::send", "Other.send"));
        assert!(!defines("wrap", "Wrap"), "case is kept");
        assert!(!defines("Client::send", "::"));
    }

    #[test]
    fn daemon_errors_are_tool_errors_that_say_what_went_wrong() {
        let bad = anyhow::Error::new(rpc::RpcError {
            code: code::INVALID_PARAMS.into(),
            message: "unknown mode".into(),
        });
        let r = tool_error(bad).unwrap();
        assert_eq!(r.is_error, Some(true));
        assert!(format!("{:?}", r.content).contains("invalid arguments: unknown mode"));
        let unknown = anyhow::Error::new(rpc::RpcError {
            code: code::UNKNOWN_REPO.into(),
            message: "/x is not indexed".into(),
        });
        let r = tool_error(unknown).unwrap();
        assert_eq!(r.is_error, Some(true));
    }
}
