//! `codesearch daemon install|uninstall`: the service-manager files for this
//! user, filled in from the templates in `systemd/` and `launchd/`.
//!
//! Nothing needs root: systemd user units go to `~/.config/systemd/user`
//! (`$XDG_CONFIG_HOME` honoured), LaunchAgents to `~/Library/LaunchAgents`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const SERVICE: &str = include_str!("../../systemd/codesearchd.service");
const SOCKET: &str = include_str!("../../systemd/codesearchd.socket");
const AGENT: &str = include_str!("../../launchd/com.codesearch.codesearchd.plist");
const AGENT_SOCKET: &str = include_str!("../../launchd/com.codesearch.codesearchd.socket.plist");
const AGENT_FILE: &str = "com.codesearch.codesearchd.plist";

/// Which service manager to write files for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manager {
    /// systemd user units (Linux): a socket unit and the service it starts.
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

impl Manager {
    /// This platform's.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

/// What goes into the templates.
pub struct Paths<'a> {
    /// The codesearch home.
    pub home: &'a Path,
    /// The socket clients use.
    pub socket: &'a Path,
}

/// Writes the unit files; prints them and the command that enables them.
pub fn install(
    out: &mut impl Write,
    manager: Manager,
    socket_activation: bool,
    p: &Paths<'_>,
) -> anyhow::Result<()> {
    let daemon = daemon_path()?;
    let fill = |template: &str| {
        template
            .replace("@CODESEARCHD@", &daemon.display().to_string())
            .replace("@HOME@", &p.home.display().to_string())
            .replace("@SOCKET@", &p.socket.display().to_string())
    };
    let dir = unit_dir(manager)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir_all(p.home.join("logs"))
        .with_context(|| format!("cannot create {}", p.home.join("logs").display()))?;
    let files: Vec<(PathBuf, String)> = match manager {
        Manager::Systemd => vec![
            (dir.join("codesearchd.socket"), fill(SOCKET)),
            (dir.join("codesearchd.service"), fill(SERVICE)),
        ],
        Manager::Launchd => {
            let template = if socket_activation {
                AGENT_SOCKET
            } else {
                AGENT
            };
            vec![(dir.join(AGENT_FILE), fill(template))]
        }
    };
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    match manager {
        Manager::Systemd => writeln!(
            out,
            "enable it with:\n  systemctl --user daemon-reload && systemctl --user enable --now codesearchd.socket"
        )?,
        Manager::Launchd => writeln!(
            out,
            "enable it with:\n  launchctl bootstrap gui/$(id -u) {}",
            files[0].0.display()
        )?,
    }
    if crate::rpc::Client::connect(p.socket).is_ok() {
        writeln!(
            out,
            "a codesearchd already answers on {}: run `codesearch daemon stop` first, so the service manager can take the socket",
            p.socket.display()
        )?;
    }
    Ok(())
}

/// Removes the unit files (and the links that enabled them); prints what to run
/// so the service manager forgets them.
pub fn uninstall(out: &mut impl Write, manager: Manager) -> anyhow::Result<()> {
    let dir = unit_dir(manager)?;
    let files: Vec<PathBuf> = match manager {
        Manager::Systemd => vec![
            dir.join("codesearchd.socket"),
            dir.join("codesearchd.service"),
            dir.join("sockets.target.wants/codesearchd.socket"),
            dir.join("default.target.wants/codesearchd.service"),
        ],
        Manager::Launchd => vec![dir.join(AGENT_FILE)],
    };
    let mut removed = 0;
    for path in &files {
        match std::fs::remove_file(path) {
            Ok(()) => {
                removed += 1;
                writeln!(out, "removed {}", path.display())?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    if removed == 0 {
        writeln!(out, "nothing to remove in {}", dir.display())?;
        return Ok(());
    }
    match manager {
        Manager::Systemd => writeln!(
            out,
            "then run:\n  systemctl --user stop codesearchd.socket codesearchd.service; systemctl --user daemon-reload"
        )?,
        Manager::Launchd => writeln!(
            out,
            "then run:\n  launchctl bootout gui/$(id -u)/com.codesearch.codesearchd"
        )?,
    }
    Ok(())
}

fn unit_dir(manager: Manager) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set; it says where your unit files go")?;
    Ok(match manager {
        Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map_or_else(|| home.join(".config"), PathBuf::from)
            .join("systemd/user"),
        Manager::Launchd => home.join("Library/LaunchAgents"),
    })
}

/// `codesearchd`'s absolute path: next to this binary, else on PATH. The one
/// place the client looks for the daemon, to start it (`rpc::start_daemon`)
/// or to name it in service files.
pub fn daemon_path() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("codesearchd")))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("codesearchd"))
                .find(|p| p.is_file())
        })
    };
    let Some(found) = beside.or_else(on_path) else {
        bail!(
            "cannot find codesearchd next to codesearch or on PATH; install both (see docs/INSTALL.md)"
        );
    };
    found
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", found.display()))
}
