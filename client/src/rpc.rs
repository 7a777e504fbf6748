//! A blocking JSON-RPC client over the daemon's socket, and daemon auto-start.
//!
//! Plain `std` sockets and serde_json: the client starts in milliseconds and
//! links nothing of the model stack.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
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
}

impl Client {
    /// Connects to `socket`.
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        Ok(Self {
            reader: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Calls `method` and decodes its result.
    pub fn call<T: DeserializeOwned>(&mut self, method: &str, params: Value) -> anyhow::Result<T> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let stream = self.reader.get_mut();
        stream
            .write_all(line.as_bytes())
            .context("the daemon closed the connection")?;
        let mut answer = String::new();
        self.reader
            .read_line(&mut answer)
            .context("the daemon closed the connection")?;
        if answer.is_empty() {
            bail!("the daemon closed the connection without answering {method}");
        }
        let v: Value = serde_json::from_str(&answer).context("the daemon sent invalid JSON")?;
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

/// Connects, starting the daemon first when no socket answers.
pub fn connect_or_start(socket: &Path, home: &Path) -> anyhow::Result<Client> {
    match Client::connect(socket) {
        Ok(c) => return Ok(c),
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
    let log = start_daemon(home)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Client::connect(socket) {
            return Ok(c);
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

/// Starts `codesearchd` in the background, logging to `home/logs/codesearchd.log`.
pub fn start_daemon(home: &Path) -> anyhow::Result<PathBuf> {
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = logs.join("codesearchd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let daemon = daemon_binary();
    Command::new(&daemon)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {}; install it next to codesearch or on PATH",
                daemon.display()
            )
        })?;
    Ok(log_path)
}

/// `codesearchd` next to this binary, else from PATH.
fn daemon_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("codesearchd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("codesearchd"))
}
