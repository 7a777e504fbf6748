//! Where codesearch keeps its state: `CODESEARCH_HOME` and the socket.
//!
//! Resolution lives here, once, so the daemon and every client agree.

use std::path::PathBuf;

/// Environment variable naming the codesearch home (default `~/.codesearch`).
pub const ENV_HOME: &str = "CODESEARCH_HOME";
/// Environment variable naming the socket (default `$CODESEARCH_HOME/codesearchd.sock`).
pub const ENV_SOCKET: &str = "CODESEARCH_SOCKET";
/// Set by the client on a daemon it starts, so `daemon.status` can say so.
pub const STARTED_BY_ENV: &str = "CODESEARCH_STARTED_BY";
/// File name of the socket inside the home.
pub const SOCKET_FILE: &str = "codesearchd.sock";

/// The codesearch home: `$CODESEARCH_HOME`, else `$HOME/.codesearch`.
///
/// Returns `None` only when neither variable is set, which a caller reports as
/// "set CODESEARCH_HOME".
pub fn home() -> Option<PathBuf> {
    home_with(&non_empty_env)
}

/// [`home`] with `env` standing in for the environment (its empty values
/// count as unset, as the caller decides).
pub fn home_with(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env(ENV_HOME)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".codesearch")))
}

/// The socket path: `$CODESEARCH_SOCKET`, else `<home>/codesearchd.sock`.
pub fn socket() -> Option<PathBuf> {
    socket_with(&non_empty_env)
}

/// [`socket`] with `env` standing in for the environment.
pub fn socket_with(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env(ENV_SOCKET)
        .map(PathBuf::from)
        .or_else(|| home_with(env).map(|h| h.join(SOCKET_FILE)))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
