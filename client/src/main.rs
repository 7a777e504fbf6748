//! `codesearch`: the thin client of `codesearchd`.
//!
//! It never links the model stack (candle, usearch, tree-sitter); it talks to the
//! daemon over the socket that `codesearch_proto::paths` names, starting the
//! daemon when nothing answers. Exit status is grep's: 0 found, 1 nothing, 2 error.

mod agent_config;
mod benchmark;
mod install;
mod mcp;
mod output;
mod pack;
mod rpc;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use codesearch_proto::{
    NoParams, RepoAddParams, RepoPathParams, RepoProgress, RepoReindexParams, RepoState,
    RepoStatus, RepoSubscribeParams, SearchParams, method,
};

#[derive(Debug, Parser)]
#[command(
    name = "codesearch",
    version,
    about = "Semantic code search that stays warm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the model runs when this command starts the daemon: auto, cpu,
    /// cuda, metal (mlx, mps) [default: auto]
    #[arg(long, global = true, env = "CODESEARCH_EMBEDDING_DEVICE")]
    device: Option<String>,
    /// Texts per forward pass at most, when this command starts the daemon [default: 32 on CPU, 512 on GPU]
    #[arg(long, global = true)]
    batch_size: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Index a repository (default: the current directory) and keep it fresh.
    Index {
        /// The repository root.
        path: Option<PathBuf>,
        /// Embedding model for this repository (see `codesearch models`).
        #[arg(long, env = "CODESEARCH_MODEL")]
        model: Option<String>,
        /// Return at once instead of waiting for the first pass.
        #[arg(long)]
        no_wait: bool,
        /// Build the index again from nothing, beside the live one (which keeps
        /// answering) and swapped in when complete; cached vectors are reused.
        #[arg(long)]
        full: bool,
    },
    /// Search indexed repositories.
    Search {
        /// What to look for, in words or code.
        query: String,
        /// Hits to show.
        #[arg(short = 'k', long, default_value_t = 10)]
        k: usize,
        /// Only this repository (repeatable).
        #[arg(long = "repo")]
        repos: Vec<PathBuf>,
        /// Only this language (repeatable): rust, python, typescript, …
        #[arg(long = "lang")]
        languages: Vec<String>,
        /// Only paths matching this glob (repeatable), relative to the repository.
        #[arg(long = "path")]
        paths: Vec<String>,
        /// hybrid, semantic or lexical.
        #[arg(long)]
        mode: Option<String>,
        /// One JSON `Hit` per line.
        #[arg(long, conflicts_with = "vimgrep")]
        json: bool,
        /// `path:line:col:text`, for editors' quickfix lists.
        #[arg(long)]
        vimgrep: bool,
        /// Print whole hits (their definitions, read from disk) packed by rank
        /// into at most this many tokens (estimated: 3 bytes a token), merged
        /// and grouped by file; a hit that does not fit is cut and marked.
        #[arg(long, conflicts_with = "vimgrep")]
        max_tokens: Option<usize>,
        /// Lines of context around each hit, as grep's -C (whole hits are
        /// printed, packed as with --max-tokens).
        #[arg(short = 'C', long, conflicts_with = "vimgrep")]
        context: Option<u32>,
    },
    /// Daemon and repositories at a glance.
    Status {
        /// The daemon's `daemon.status` answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Registered repositories.
    List {
        /// The `repo.list` answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a repository and delete its index.
    Remove {
        /// The repository root.
        path: PathBuf,
    },
    /// The embedding models codesearch knows.
    Models,
    /// Measure models on a repository: a cold index (samples/s, peak memory,
    /// storage per 1,000 entities), query latency, and with --queries the
    /// retrieval quality (MRR@10, Recall@1/5/10, nDCG@10) per repository and language.
    Benchmark(benchmark::Args),
    /// Serve the Model Context Protocol on stdin/stdout, for coding agents.
    #[command(long_about = MCP_ABOUT)]
    Mcp {
        #[command(subcommand)]
        action: Option<McpAction>,
    },
    /// Start, stop or inspect the daemon.
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
}

const MCP_ABOUT: &str = "\
Serve the Model Context Protocol (MCP) on stdin/stdout, for coding agents.

Tools: `search` (ranked hits packed into a token budget, whole definitions
grouped by file), `definition` (where a name is defined), `index` (start or
refresh a repository's index) and `status`.
Each session is a thin bridge to the one codesearchd of this user, started when
it does not run: many agents share one daemon and one model.

Add it to an agent as a stdio server whose command is `codesearch mcp`, e.g.
  claude mcp add codesearch -- codesearch mcp
The exact set-up for Claude Code, Codex, Cursor, VS Code and opencode is in
docs/MCP.md.";

#[derive(Debug, Subcommand)]
enum McpAction {
    /// Add `codesearch mcp` to a coding agent's configuration (Claude Code and
    /// VS Code: in the project, the working directory; Codex, Cursor and
    /// opencode: for the user). Other entries are kept.
    Install {
        /// The agent.
        #[arg(long, value_enum)]
        client: agent_config::Client,
    },
}

#[derive(Debug, Subcommand)]
enum DaemonAction {
    /// Start the daemon in the background (if it is not running).
    Start,
    /// Ask the daemon to shut down.
    Stop,
    /// Whether the daemon runs, and its pid, models and service manager.
    Status,
    /// Write the service-manager files for this user (systemd user units, or a
    /// launchd LaunchAgent) and print the command that enables them.
    Install {
        /// systemd or launchd [default: this platform's]
        #[arg(long, value_enum)]
        manager: Option<install::Manager>,
        /// launchd: let launchd own the socket and start the daemon on the first
        /// connection (systemd units always do).
        #[arg(long)]
        socket_activation: bool,
    },
    /// Remove the files `daemon install` wrote.
    Uninstall {
        /// systemd or launchd [default: this platform's]
        #[arg(long, value_enum)]
        manager: Option<install::Manager>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`codesearch search … | head`) is not an error.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "codesearch: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

struct Paths {
    home: PathBuf,
    socket: PathBuf,
    /// `codesearchd serve` arguments from `--device` and `--batch-size`.
    daemon_args: Vec<String>,
}

fn paths(cli: &Cli) -> anyhow::Result<Paths> {
    let home = codesearch_proto::paths::home()
        .context("cannot find the codesearch home: set CODESEARCH_HOME or HOME")?;
    let socket = codesearch_proto::paths::socket()
        .unwrap_or_else(|| home.join(codesearch_proto::paths::SOCKET_FILE));
    let mut daemon_args = Vec::new();
    if let Some(d) = &cli.device {
        daemon_args.extend(["--device".to_owned(), d.clone()]);
    }
    if let Some(b) = cli.batch_size {
        daemon_args.extend(["--batch-size".to_owned(), b.to_string()]);
    }
    Ok(Paths {
        home,
        socket,
        daemon_args,
    })
}

/// Connects to the daemon, starting it when needed. Explicit `--device` or
/// `--batch-size` only shape a daemon this call starts: say so when one runs.
fn connect(p: &Paths) -> anyhow::Result<rpc::Client> {
    let c = rpc::connect_or_start(&p.socket, &p.home, &p.daemon_args)?;
    // Only flags typed on this command line: a device set once in the
    // environment (CODESEARCH_EMBEDDING_DEVICE) is no news on every command.
    let typed: Vec<&str> = p
        .daemon_args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(String::as_str)
        .filter(|flag| {
            std::env::args_os().any(|a| {
                a.to_str()
                    .is_some_and(|a| a == *flag || a.starts_with(&format!("{flag}=")))
            })
        })
        .collect();
    if !c.started && !typed.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "codesearch: note: codesearchd is already running, so {} does not apply; `codesearch daemon stop` first to restart it with them",
            typed.join(" and ")
        );
    }
    Ok(c.client)
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    let p = std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))?;
    Ok(p.display().to_string())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let p = paths(&cli)?;
    if let Command::Mcp { action } = cli.command {
        return mcp_command(action, p);
    }
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Daemon { action } => return daemon(action, &p),
        Command::Mcp { .. } => unreachable!("served above, before stdout is locked"),
        Command::Models => {
            let mut c = connect(&p)?;
            let models = c.request::<method::ModelsList>(&NoParams)?;
            output::models(&mut out, &models)?;
        }
        Command::Status { json } => {
            let mut c = connect(&p)?;
            if json {
                let s = c.request_raw::<method::DaemonStatus>(&NoParams)?;
                output::json(&mut out, &s)?;
            } else {
                let s = c.request::<method::DaemonStatus>(&NoParams)?;
                output::daemon_status(&mut out, &s, &p.socket)?;
            }
        }
        Command::List { json } => {
            let mut c = connect(&p)?;
            if json {
                let repos = c.request_raw::<method::RepoList>(&NoParams)?;
                output::json(&mut out, &repos)?;
            } else {
                let repos = c.request::<method::RepoList>(&NoParams)?;
                output::repos(&mut out, &repos)?;
            }
        }
        Command::Benchmark(args) => {
            let mut c = connect(&p)?;
            benchmark::run(&mut c, &mut out, &args)?;
        }
        Command::Remove { path } => {
            let mut c = connect(&p)?;
            c.request::<method::RepoRemove>(&RepoPathParams {
                path: absolute(&path)?,
            })?;
            writeln!(out, "removed {}", path.display())?;
        }
        Command::Index {
            path,
            model,
            no_wait,
            full,
        } => {
            let path = absolute(&path.unwrap_or_else(|| PathBuf::from(".")))?;
            let mut c = connect(&p)?;
            if !no_wait {
                // Before the run starts, so no progress is missed.
                c.subscribe(&RepoSubscribeParams {
                    path: Some(path.clone()),
                })?;
            }
            let mut status = c.request::<method::RepoAdd>(&RepoAddParams {
                path: path.clone(),
                model,
                wait: false,
            })?;
            // A repository added before and idle now gets an incremental run.
            if full || status.state != RepoState::Indexing {
                status = c.request::<method::RepoReindex>(&RepoReindexParams {
                    path: path.clone(),
                    full,
                    wait: false,
                })?;
            }
            if !no_wait {
                status = wait_for(&mut c, &status.path)?;
            }
            output::repos(&mut out, std::slice::from_ref(&status))?;
            if status.state == RepoState::Error {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Search {
            query,
            k,
            repos,
            languages,
            paths,
            mode,
            json,
            vimgrep,
            max_tokens,
            context,
        } => {
            // Hits are many short lines: one write at the end, not one per line.
            let mut out = std::io::BufWriter::new(&mut out);
            let mut c = connect(&p)?;
            let repos = repos
                .iter()
                .map(|r| absolute(r))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let result = c.request::<method::Search>(&SearchParams {
                query,
                k,
                repos: (!repos.is_empty()).then_some(repos),
                languages: (!languages.is_empty()).then_some(languages),
                paths: (!paths.is_empty()).then_some(paths),
                mode,
            })?;
            if max_tokens.is_some() || context.is_some() {
                let format = if json {
                    pack::Format::Json
                } else {
                    pack::Format::Text
                };
                let budget = max_tokens.unwrap_or(usize::MAX);
                let packed = pack::pack(
                    &result.results,
                    context.unwrap_or(0),
                    budget,
                    format,
                    pack::read_file,
                );
                out.write_all(packed.render(format).as_bytes())?;
                out.flush()?;
                if packed.files.is_empty() && !result.results.is_empty() {
                    eprintln!(
                        "codesearch: the best hit does not fit in {budget} tokens; raise --max-tokens"
                    );
                } else if packed.omitted > 0 {
                    eprintln!(
                        "codesearch: {} hit(s) not shown (over the token budget, or their file unreadable)",
                        packed.omitted
                    );
                }
                return Ok(if packed.files.is_empty() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                });
            }
            if json {
                output::hits_json(&mut out, &result.results)?;
            } else if vimgrep {
                output::hits_vimgrep(&mut out, &result.results)?;
            } else {
                output::hits(&mut out, &result.results)?;
            }
            out.flush()?;
            return Ok(if result.results.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn mcp_command(action: Option<McpAction>, p: Paths) -> anyhow::Result<ExitCode> {
    match action {
        // Before stdout is locked: the MCP transport writes it from another thread.
        None => mcp::serve(mcp::Daemon {
            home: p.home,
            socket: p.socket,
            args: p.daemon_args,
        })?,
        Some(McpAction::Install { client }) => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .context("HOME is not set")?;
            let project = std::env::current_dir().context("cannot read the working directory")?;
            let codex_home = std::env::var_os("CODEX_HOME").map(PathBuf::from);
            let command = std::env::current_exe().context("cannot find this program's path")?;
            let file = agent_config::install(
                client,
                &command,
                &agent_config::Places {
                    home: &home,
                    project: &project,
                    codex_home: codex_home.as_deref(),
                },
            )?;
            writeln!(
                std::io::stdout(),
                "added codesearch ({} mcp) to {}; restart the agent to load it",
                command.display(),
                file.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows `repo.progress` of `root` until its run ends, drawing a progress bar
/// with rate and ETA on stderr (when it is a terminal); then the final status.
fn wait_for(c: &mut rpc::Client, root: &str) -> anyhow::Result<RepoStatus> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} indexing {prefix}: {msg}, {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(root.to_owned());
    bar.set_message("looking for files");
    bar.enable_steady_tick(Duration::from_millis(120));
    say_indexing_continues_on_ctrl_c(&bar);
    let mut counting = false;
    loop {
        let note = c.next_notification()?;
        if note["method"] != method::REPO_PROGRESS {
            continue;
        }
        let Ok(progress) = serde_json::from_value::<RepoProgress>(note["params"]["result"].clone())
        else {
            continue;
        };
        if progress.path != root {
            continue;
        }
        if progress.files_total > 0 && !counting {
            counting = true;
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} indexing {prefix} [{bar:30}] {pos}/{len} files, {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        bar.set_length(progress.files_total);
        bar.set_position(progress.files_done);
        let rate = if progress.elapsed_s > 0.0 {
            progress.chunks_embedded as f64 / progress.elapsed_s
        } else {
            0.0
        };
        let mut message = format!("{} chunks embedded ({rate:.0}/s)", progress.chunks_embedded);
        if counting {
            message.push_str(&format!(
                ", {}",
                output::duration(Duration::from_secs_f64(progress.elapsed_s.max(0.0)))
            ));
            if let Some(eta) = eta(&progress) {
                message.push_str(&format!(" (ETA {})", output::duration(eta)));
            }
        }
        bar.set_message(message);
        if progress.state != RepoState::Indexing {
            break;
        }
    }
    bar.finish_and_clear();
    let repos = c.request::<method::RepoList>(&NoParams)?;
    repos
        .into_iter()
        .find(|r| r.path == root)
        .context("the repository was removed while it was indexed")
}

/// Time left at the run's rate so far, once there is a rate to go by: some
/// files done after at least a second. Before that, no ETA rather than `0s`.
fn eta(p: &RepoProgress) -> Option<Duration> {
    if p.files_total == 0 || p.files_done == 0 || p.elapsed_s < 1.0 {
        return None;
    }
    let rate = p.files_done as f64 / p.elapsed_s;
    let left = p.files_total.saturating_sub(p.files_done) as f64 / rate;
    left.is_finite().then(|| Duration::from_secs_f64(left))
}

/// What Ctrl-C prints while `codesearch index` follows a pass.
const INTERRUPTED: &str =
    "indexing continues in the background; `codesearch status` shows how far it is";

/// From now on, Ctrl-C (SIGINT) clears the progress bar, says that the pass
/// goes on in the daemon (which has its own process group, so the terminal's
/// SIGINT did not reach it) and exits 130, as a shell reports an interrupt.
fn say_indexing_continues_on_ctrl_c(bar: &indicatif::ProgressBar) {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) {
        Ok(s) => s,
        // Ctrl-C then ends the client the default way; the daemon still goes on.
        Err(_) => return,
    };
    let bar = bar.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            bar.finish_and_clear();
            let _ = writeln!(std::io::stderr(), "{INTERRUPTED}");
            std::process::exit(130);
        }
    });
}

fn daemon(action: DaemonAction, p: &Paths) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match action {
        DaemonAction::Start => {
            let mut c = connect(p)?;
            let s = c.request::<method::DaemonStatus>(&NoParams)?;
            writeln!(
                out,
                "codesearchd {} running (pid {}) on {}",
                s.version,
                s.pid,
                p.socket.display()
            )?;
        }
        DaemonAction::Stop => match rpc::Client::connect(&p.socket) {
            Ok(mut c) => {
                c.request::<method::DaemonShutdown>(&NoParams)?;
                // Answered means stopping: wait until it no longer takes
                // connections and has let go of its lock (the process is gone).
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let lock = p.home.join("codesearchd.lock");
                let held = || {
                    std::fs::File::open(&lock).is_ok_and(|f| {
                        matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
                    })
                };
                while rpc::Client::connect(&p.socket).is_ok() || held() {
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!(
                            "codesearchd was asked to stop but still answers on {}",
                            p.socket.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                writeln!(out, "codesearchd stopped")?;
            }
            Err(_) => writeln!(out, "codesearchd is not running")?,
        },
        DaemonAction::Install {
            manager,
            socket_activation,
        } => install::install(
            &mut out,
            manager.unwrap_or_else(install::Manager::native),
            socket_activation,
            &install::Paths {
                home: &std::path::absolute(&p.home)?,
                socket: &std::path::absolute(&p.socket)?,
            },
        )?,
        DaemonAction::Uninstall { manager } => {
            install::uninstall(&mut out, manager.unwrap_or_else(install::Manager::native))?;
        }
        DaemonAction::Status => match rpc::Client::connect(&p.socket) {
            Ok(mut c) => {
                let s = c.request::<method::DaemonStatus>(&NoParams)?;
                output::daemon_status(&mut out, &s, &p.socket)?;
            }
            Err(_) => {
                writeln!(
                    out,
                    "codesearchd is not running (no answer on {})",
                    p.socket.display()
                )?;
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
