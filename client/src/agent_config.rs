//! `codesearch mcp install --client NAME`: writes the `codesearch mcp` entry
//! where each coding agent looks for its MCP servers (docs/MCP.md lists them).
//!
//! Existing files are edited, not replaced: other servers and settings stay,
//! in their order; an entry named `codesearch` is replaced; a file that cannot
//! be read as the format its client uses is left alone with an error that
//! shows the entry to add by hand. Files are written whole to a temp file and
//! renamed over the old one, so a crash leaves the old file or the new one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

/// The server's name in every client's configuration.
const NAME: &str = "codesearch";

/// A coding agent whose configuration `mcp install` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Code: `.mcp.json` in the project (the working directory).
    Claude,
    /// Codex: `~/.codex/config.toml` (`$CODEX_HOME/config.toml`).
    Codex,
    /// Cursor: `~/.cursor/mcp.json`.
    Cursor,
    /// VS Code: `.vscode/mcp.json` in the workspace (the working directory).
    Vscode,
    /// opencode: `~/.config/opencode/opencode.json`.
    Opencode,
}

/// Where the files go: the user's home and the project.
#[derive(Debug)]
pub struct Places<'a> {
    /// `$HOME`.
    pub home: &'a Path,
    /// The project folder (the working directory).
    pub project: &'a Path,
    /// `$CODEX_HOME`, when set.
    pub codex_home: Option<&'a Path>,
}

/// The file `client` reads its MCP servers from.
pub fn config_file(client: Client, places: &Places<'_>) -> PathBuf {
    match client {
        Client::Claude => places.project.join(".mcp.json"),
        Client::Codex => places
            .codex_home
            .map_or_else(|| places.home.join(".codex"), Path::to_owned)
            .join("config.toml"),
        Client::Cursor => places.home.join(".cursor/mcp.json"),
        Client::Vscode => places.project.join(".vscode/mcp.json"),
        Client::Opencode => places.home.join(".config/opencode/opencode.json"),
    }
}

/// Writes `command mcp` into `client`'s configuration; returns the file.
pub fn install(client: Client, command: &Path, places: &Places<'_>) -> anyhow::Result<PathBuf> {
    let file = config_file(client, places);
    let old = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let command = command.display().to_string();
    let new = match client {
        Client::Codex => codex(old.as_deref(), &command, &file)?,
        _ => json_config(client, old.as_deref(), &command, &file)?,
    };
    write(&file, &new)?;
    Ok(file)
}

/// The entry `client` needs, in its own shape.
fn entry(client: Client, command: &str) -> (&'static str, Value) {
    match client {
        Client::Claude | Client::Cursor => {
            ("mcpServers", json!({"command": command, "args": ["mcp"]}))
        }
        Client::Vscode => (
            "servers",
            json!({"type": "stdio", "command": command, "args": ["mcp"]}),
        ),
        Client::Opencode => (
            "mcp",
            json!({"type": "local", "command": [command, "mcp"], "enabled": true}),
        ),
        Client::Codex => unreachable!("codex's file is TOML"),
    }
}

fn json_config(
    client: Client,
    old: Option<&str>,
    command: &str,
    file: &Path,
) -> anyhow::Result<String> {
    let (section, server) = entry(client, command);
    let by_hand = || {
        serde_json::to_string_pretty(&json!({ section: { NAME: server.clone() } }))
            .unwrap_or_default()
    };
    let mut root = match old.map(str::trim) {
        None | Some("") => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => bail!(
                "{} is not a JSON object; left as it is. Add this by hand:\n{}",
                file.display(),
                by_hand()
            ),
            Err(e) => bail!(
                "cannot read {} as JSON ({e}; comments are not supported here); left as it is. Add this by hand:\n{}",
                file.display(),
                by_hand()
            ),
        },
    };
    if client == Client::Opencode && !root.contains_key("$schema") {
        root.insert(
            "$schema".to_owned(),
            Value::String("https://opencode.ai/config.json".to_owned()),
        );
    }
    let servers = root
        .entry(section)
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(servers) = servers else {
        bail!(
            "`{section}` in {} is not an object; left as it is. Add this by hand:\n{}",
            file.display(),
            by_hand()
        );
    };
    servers.insert(NAME.to_owned(), server);
    Ok(serde_json::to_string_pretty(&Value::Object(root))? + "\n")
}

/// Codex's TOML: the `[mcp_servers.codesearch]` table is replaced or appended;
/// the rest of the file is kept byte for byte.
fn codex(old: Option<&str>, command: &str, file: &Path) -> anyhow::Result<String> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let table = format!(
        "[mcp_servers.{NAME}]\ncommand = {}\nargs = [\"mcp\"]\n",
        quote(command)
    );
    let old = old.unwrap_or("");
    let header = format!("[mcp_servers.{NAME}]");
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let start = lines.iter().position(|l| l.trim() == header);
    // Any other spelling of the same server (`[mcp_servers."codesearch"]`, a
    // `codesearch = {…}` under `[mcp_servers]`, an inline `mcp_servers = {…}`)
    // would make a second table a duplicate key, which Codex refuses: leave
    // the file to the user then.
    let own_table = start.map_or(0..0, |s| s..table_end(&lines, s));
    let elsewhere = lines.iter().enumerate().any(|(i, l)| {
        let t = l.trim();
        !own_table.contains(&i)
            && (t.contains("mcp_servers") && t.contains(NAME)
                || (t.starts_with(NAME) || t.starts_with(&format!("\"{NAME}\"")))
                    && t.contains('='))
    });
    if elsewhere {
        bail!(
            "{} names the {NAME} server in a form this command does not edit; left as it is. Make it:\n{table}",
            file.display()
        );
    }
    let Some(start) = start else {
        let mut text = old.to_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&table);
        return Ok(text);
    };
    let end = table_end(&lines, start);
    let mut text: String = lines[..start].concat();
    text.push_str(&table);
    if end < lines.len() {
        text.push('\n');
        text.push_str(&lines[end..].concat());
    }
    Ok(text)
}

/// The line after our table: the next table header that is not one of its
/// own sub-tables (`[mcp_servers.codesearch.env]`), or the end.
fn table_end(lines: &[&str], start: usize) -> usize {
    lines[start + 1..]
        .iter()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with('[') && !l.starts_with(&format!("[mcp_servers.{NAME}."))
        })
        .map_or(lines.len(), |i| start + 1 + i)
}

/// Writes `text` over `file` through a temp file and a rename, keeping the
/// old file's permissions (settings files may hold keys, mode 0600) and
/// writing through a symlink to its target (dotfiles are often links).
fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    let file = match std::fs::canonicalize(file) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => file.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", file.display())),
    };
    let dir = file
        .parent()
        .with_context(|| format!("{} has no folder", file.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (tmp_path, mut tmp) = tempfile_in(dir)?;
    let written = (|| {
        tmp.write_all(text.as_bytes())?;
        if let Ok(old) = std::fs::metadata(&file) {
            tmp.set_permissions(old.permissions())?;
        }
        tmp.sync_all()?;
        std::fs::rename(&tmp_path, &file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e).with_context(|| format!("cannot write {}", file.display()));
    }
    Ok(())
}

/// A new file beside the target, for the atomic rename.
fn tempfile_in(dir: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    for n in 0..100 {
        let path = dir.join(format!(
            ".codesearch-install.{}.{n}.tmp",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot write in {}", dir.display())),
        }
    }
    bail!("cannot make a temp file in {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp {
        home: tempfile::TempDir,
        project: tempfile::TempDir,
    }

    impl Tmp {
        fn new() -> Self {
            Self {
                home: tempfile::tempdir().unwrap(),
                project: tempfile::tempdir().unwrap(),
            }
        }
        fn places(&self) -> Places<'_> {
            Places {
                home: self.home.path(),
                project: self.project.path(),
                codex_home: None,
            }
        }
        fn install(&self, client: Client) -> anyhow::Result<String> {
            let file = install(client, Path::new("/opt/cs/codesearch"), &self.places())?;
            Ok(std::fs::read_to_string(file).unwrap())
        }
    }

    #[test]
    fn each_client_gets_its_own_shape_in_its_own_file() {
        let t = Tmp::new();
        let v: Value = serde_json::from_str(&t.install(Client::Claude).unwrap()).unwrap();
        assert_eq!(
            v["mcpServers"]["codesearch"],
            json!({"command": "/opt/cs/codesearch", "args": ["mcp"]})
        );
        assert!(t.project.path().join(".mcp.json").is_file());
        let v: Value = serde_json::from_str(&t.install(Client::Vscode).unwrap()).unwrap();
        assert_eq!(v["servers"]["codesearch"]["type"], "stdio");
        let v: Value = serde_json::from_str(&t.install(Client::Opencode).unwrap()).unwrap();
        assert_eq!(
            v["mcp"]["codesearch"]["command"],
            json!(["/opt/cs/codesearch", "mcp"])
        );
        assert_eq!(v["$schema"], "https://opencode.ai/config.json");
        t.install(Client::Cursor).unwrap();
        assert!(t.home.path().join(".cursor/mcp.json").is_file());
        let toml = t.install(Client::Codex).unwrap();
        assert_eq!(
            toml,
            "[mcp_servers.codesearch]\ncommand = \"/opt/cs/codesearch\"\nargs = [\"mcp\"]\n"
        );
    }

    #[test]
    fn other_servers_and_settings_stay_and_a_second_install_changes_nothing() {
        let t = Tmp::new();
        let file = t.home.path().join(".cursor/mcp.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            r#"{"zeta": 1, "mcpServers": {"other": {"command": "x"}, "codesearch": {"command": "old"}}, "alpha": true}"#,
        )
        .unwrap();
        let once = t.install(Client::Cursor).unwrap();
        let v: Value = serde_json::from_str(&once).unwrap();
        assert_eq!(v["mcpServers"]["other"], json!({"command": "x"}));
        assert_eq!(
            v["mcpServers"]["codesearch"]["command"],
            "/opt/cs/codesearch"
        );
        assert_eq!(
            (v["zeta"].clone(), v["alpha"].clone()),
            (json!(1), json!(true))
        );
        assert_eq!(t.install(Client::Cursor).unwrap(), once);
    }

    #[test]
    fn a_file_that_is_not_json_is_left_alone_with_the_entry_to_add() {
        let t = Tmp::new();
        let file = t.project.path().join(".mcp.json");
        let jsonc = "// mine\n{\"mcpServers\": {}}\n";
        std::fs::write(&file, jsonc).unwrap();
        let err = format!("{:#}", t.install(Client::Claude).unwrap_err());
        assert!(
            err.contains("Add this by hand") && err.contains("\"codesearch\""),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), jsonc);
    }

    #[test]
    fn codex_files_naming_the_server_another_way_are_left_alone() {
        let t = Tmp::new();
        let file = t.home.path().join(".codex/config.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        for other in [
            "[mcp_servers]\ncodesearch = { command = \"x\" }\n",
            "[mcp_servers.\"codesearch\"]\ncommand = \"x\"\n",
            "mcp_servers = { codesearch = { command = \"x\" } }\n",
        ] {
            std::fs::write(&file, other).unwrap();
            let err = format!("{:#}", t.install(Client::Codex).unwrap_err());
            assert!(err.contains("does not edit"), "{err}");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), other);
        }
    }

    #[test]
    fn permissions_are_kept_and_a_symlink_is_written_through() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = Tmp::new();
        let real = t.home.path().join("dotfiles/cursor-mcp.json");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "{}").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir_all(t.home.path().join(".cursor")).unwrap();
        let link = t.home.path().join(".cursor/mcp.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        t.install(Client::Cursor).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let meta = std::fs::metadata(&real).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&real)
                .unwrap()
                .contains("codesearch")
        );
        let leftovers: Vec<_> = std::fs::read_dir(real.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn codex_tables_of_others_are_kept_and_ours_replaced() {
        let t = Tmp::new();
        let file = t.home.path().join(".codex/config.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let before = "model = \"o4\"\n\n[mcp_servers.codesearch]\ncommand = \"old\"\nargs = [\"mcp\"]\n\n[mcp_servers.codesearch.env]\nX = \"1\"\n\n[mcp_servers.docs]\ncommand = \"docs\"\n";
        std::fs::write(&file, before).unwrap();
        let after = t.install(Client::Codex).unwrap();
        assert_eq!(
            after,
            "model = \"o4\"\n\n[mcp_servers.codesearch]\ncommand = \"/opt/cs/codesearch\"\nargs = [\"mcp\"]\n\n[mcp_servers.docs]\ncommand = \"docs\"\n"
        );
        assert_eq!(t.install(Client::Codex).unwrap(), after);
        // Appended to a file without it, after what is there.
        std::fs::write(&file, "model = \"o4\"").unwrap();
        assert_eq!(
            t.install(Client::Codex).unwrap(),
            "model = \"o4\"\n\n[mcp_servers.codesearch]\ncommand = \"/opt/cs/codesearch\"\nargs = [\"mcp\"]\n"
        );
    }
}
