//! A blocking JSON-RPC client over the daemon's socket, and daemon auto-start.
//!
//! Plain `std` sockets and serde_json: the client starts in milliseconds and
//! links nothing of the model stack.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use codesearch_proto::{Method, RepoSubscribeParams, method};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An error the daemon answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// The JSON-RPC code.
    pub code: i64,
    /// The daemon's message, which says what to do.
    pub message: String,
}

/// One connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Notifications that arrived while waiting for an answer.
    notifications: VecDeque<Value>,
}

impl Client {
    /// Connects to `socket`.
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        Ok(Self {
            reader: BufReader::new(stream),
            next_id: 1,
            notifications: VecDeque::new(),
        })
    }

    /// The next notification (`{"method", "params"}`) the daemon pushes.
    pub fn next_notification(&mut self) -> anyhow::Result<Value> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(n);
        }
        loop {
            let v = self.read_message("a notification")?;
            if v.get("id").is_none() {
                return Ok(v);
            }
        }
    }

    /// Gives up on an answer after `limit` (none by default: an indexing pass
    /// followed by `codesearch index` may run for an hour). A read that times
    /// out leaves the connection unusable; open another.
    pub fn set_timeout(&mut self, limit: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(limit))?;
        self.reader.get_ref().set_write_timeout(Some(limit))
    }

    fn read_message(&mut self, waiting_for: &str) -> anyhow::Result<Value> {
        let mut line = String::new();
        if let Err(e) = self.reader.read_line(&mut line) {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                let limit = self.reader.get_ref().read_timeout().ok().flatten();
                bail!(
                    "the daemon did not answer {waiting_for} within {} s; it may be overloaded or stuck (its log is in the codesearch home, logs/codesearchd.log)",
                    limit.map_or(0, |l| l.as_secs())
                );
            }
            return Err(closed(e));
        }
        if line.is_empty() {
            bail!("the daemon closed the connection while the client waited for {waiting_for}");
        }
        serde_json::from_str(&line).context("the daemon sent invalid JSON")
    }

    /// Calls method `M` of the protocol.
    pub fn request<M: Method>(&mut self, params: &M::Params) -> anyhow::Result<M::Result> {
        let params = serde_json::to_value(params)
            .with_context(|| format!("cannot encode the params of {}", M::NAME))?;
        self.call(M::NAME, params)
    }

    /// Calls method `M` and keeps its answer as raw JSON: `--json` output and
    /// the MCP bridge pass on fields of a newer daemon that this client does
    /// not know.
    pub fn request_raw<M: Method>(&mut self, params: &M::Params) -> anyhow::Result<Value> {
        let params = serde_json::to_value(params)
            .with_context(|| format!("cannot encode the params of {}", M::NAME))?;
        self.call(M::NAME, params)
    }

    /// Subscribes this connection to `repo.progress` (a subscription, not a
    /// request-answer [`Method`]); the events come from [`Client::next_notification`].
    pub fn subscribe(&mut self, params: &RepoSubscribeParams) -> anyhow::Result<()> {
        let params = serde_json::to_value(params)?;
        let _: Value = self.call(method::REPO_SUBSCRIBE, params)?;
        Ok(())
    }

    /// Calls `method` and decodes its result.
    fn call<T: DeserializeOwned>(&mut self, method: &str, params: Value) -> anyhow::Result<T> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes()).map_err(closed)?;
        let v = loop {
            let v = self.read_message(method)?;
            if v.get("id").is_some() {
                break v;
            }
            self.notifications.push_back(v);
        };
        if let Some(e) = v.get("error") {
            return Err(RpcError {
                code: e["code"].as_i64().unwrap_or(0),
                message: e["message"].as_str().unwrap_or("unknown error").to_owned(),
            }
            .into());
        }
        serde_json::from_value(v["result"].clone())
            .with_context(|| format!("unexpected answer to {method}"))
    }
}

/// A connection, and whether this call started the daemon for it.
pub struct Connected {
    /// The connection.
    pub client: Client,
    /// The daemon was not running and was started with the caller's arguments.
    pub started: bool,
}

/// A failed read or write on the socket. Kept apart from `std::io::Error`, so
/// `main` never takes it for a closed stdout (which exits quietly).
fn closed(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("the daemon closed the connection ({e})")
}

/// Connects, starting the daemon (`codesearchd serve DAEMON_ARGS…`) first when no
/// socket answers.
pub fn connect_or_start(
    socket: &Path,
    home: &Path,
    daemon_args: &[String],
) -> anyhow::Result<Connected> {
    match Client::connect(socket) {
        Ok(client) => {
            return Ok(Connected {
                client,
                started: false,
            });
        }
        // Nothing there, or a stale socket: start the daemon.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot connect to {} (is it another user's daemon? set CODESEARCH_HOME or CODESEARCH_SOCKET to your own)",
                socket.display()
            )));
        }
    }
    let log = start_daemon(home, daemon_args)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = Client::connect(socket) {
            return Ok(Connected {
                client,
                started: true,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "started codesearchd, but it is not answering on {}; see its log at {}",
                socket.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts `codesearchd serve ARGS…` in the background, logging to
/// `home/logs/codesearchd.log`.
///
/// The daemon gets a process group of its own: the terminal's Ctrl-C (SIGINT to
/// the foreground group) then ends the command the user typed, not the daemon
/// and the indexing it started, which outlive the client by design.
pub fn start_daemon(home: &Path, args: &[String]) -> anyhow::Result<PathBuf> {
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = logs.join("codesearchd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let daemon = crate::install::daemon_path()?;
    Command::new(&daemon)
        .arg("serve")
        .args(args)
        .env(codesearch_proto::paths::STARTED_BY_ENV, "codesearch")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", daemon.display()))?;
    Ok(log_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_that_does_not_answer_in_time_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // Accepts and reads, never answers.
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut conn = BufReader::new(conn);
            let mut line = String::new();
            let _ = conn.read_line(&mut line);
            std::thread::sleep(Duration::from_millis(500));
            drop(conn);
        });
        let mut c = Client::connect(&socket).unwrap();
        c.set_timeout(Duration::from_millis(100)).unwrap();
        let started = Instant::now();
        let err = c
            .request::<method::RepoList>(&codesearch_proto::NoParams)
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let err = format!("{err:#}");
        assert!(err.contains("did not answer repo.list within"), "{err}");
        server.join().unwrap();
    }
}
