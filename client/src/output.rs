//! What the client prints: ripgrep-like hits (colored on a terminal unless
//! `NO_COLOR`), JSON lines, vimgrep lines, and status tables.

use std::io::{IsTerminal, Write};
use std::path::Path;

use codesearch_proto::{DaemonStatus, Hit, ModelInfo, RepoStatus, Skipped};

/// Snippet lines shown per hit.
const SNIPPET_LINES: usize = 4;

struct Style {
    on: bool,
}

impl Style {
    fn detect() -> Self {
        Self {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// `path:start-end  symbol  score`, then a few snippet lines.
pub fn hits(out: &mut impl Write, hits: &[Hit]) -> std::io::Result<()> {
    let s = Style::detect();
    for (i, h) in hits.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let path = Path::new(&h.repo).join(&h.path);
        let stale = if h.stale {
            " (changed since indexed)"
        } else {
            ""
        };
        writeln!(
            out,
            "{}:{}  {} {}  {}{}",
            s.paint("35", &path.display().to_string()),
            s.paint("32", &format!("{}-{}", h.start_line, h.end_line)),
            h.kind,
            s.paint("1", h.symbol.as_deref().unwrap_or("")),
            s.paint("2", &format!("{:.3}", h.score)),
            stale
        )?;
        for (n, line) in h.snippet.lines().take(SNIPPET_LINES).enumerate() {
            writeln!(
                out,
                "{}  {line}",
                s.paint("32", &format!("{:>5}", h.start_line as usize + n))
            )?;
        }
    }
    Ok(())
}

/// One `Hit` object per line.
pub fn hits_json(out: &mut impl Write, hits: &[Hit]) -> std::io::Result<()> {
    for h in hits {
        serde_json::to_writer(&mut *out, h)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `path:line:col:text`, the first line of each hit.
pub fn hits_vimgrep(out: &mut impl Write, hits: &[Hit]) -> std::io::Result<()> {
    for h in hits {
        let path = Path::new(&h.repo).join(&h.path);
        let first = h.snippet.lines().next().unwrap_or("");
        writeln!(out, "{}:{}:1:{first}", path.display(), h.start_line)?;
    }
    Ok(())
}

/// One line per repository.
pub fn repos(out: &mut impl Write, repos: &[RepoStatus]) -> std::io::Result<()> {
    if repos.is_empty() {
        return writeln!(out, "no repositories; add one with `codesearch index PATH`");
    }
    for r in repos {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(
            out,
            "{}  {state}  {} files  {} chunks  {}",
            r.path, r.files, r.chunks, r.model
        )?;
        if r.watching {
            write!(out, "  watching")?;
        }
        if r.changes_pending > 0 {
            write!(out, "  {} changes pending", r.changes_pending)?;
        }
        if let Some(e) = &r.error {
            write!(out, "  error: {e}")?;
        }
        if let Some(e) = &r.watch_error {
            write!(out, "  watch: {e}")?;
        }
        writeln!(out)?;
        if let Some(s) = r.skipped.as_ref().filter(|s| s.total > 0) {
            skipped(out, s)?;
        }
    }
    Ok(())
}

/// `  skipped 7: 3 binary, 4 too_large (e.g. logo.png, dump.sql)`: why files are missing.
fn skipped(out: &mut impl Write, s: &Skipped) -> std::io::Result<()> {
    let counts: Vec<String> = s.counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let examples: Vec<&str> = s
        .examples
        .values()
        .flatten()
        .take(Skipped::EXAMPLES)
        .map(String::as_str)
        .collect();
    write!(out, "  skipped {}: {}", s.total, counts.join(", "))?;
    if !examples.is_empty() {
        write!(out, " (e.g. {})", examples.join(", "))?;
    }
    writeln!(out)
}

/// A JSON document, pretty-printed.
pub fn json(out: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// `1h 2m`, `3m 4s` or `5s`.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The model table: each model, whether it can run here and where.
pub fn models(out: &mut impl Write, models: &[ModelInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>5} {:>10}  {:<12} {:<10} where",
        "model", "dims", "max tokens", "status", "device"
    )?;
    for m in models {
        let dims = if m.dims == 0 {
            "?".to_owned()
        } else {
            m.dims.to_string()
        };
        // Daemons before protocol 3 say nothing of availability.
        let status = m.availability.as_deref().unwrap_or("-");
        let place = match (status, &m.location, &m.remote_model) {
            ("remote", Some(url), Some(model)) => format!("{model} at {url}"),
            (_, Some(dir), _) => dir.clone(),
            ("download", None, _) => format!("{} (fetched on first use)", m.hf_repo),
            ("missing", None, _) => format!(
                "{} (not in the Hugging Face cache; `hf download {}`, or set model_path)",
                m.hf_repo, m.hf_repo
            ),
            _ => m.hf_repo.clone(),
        };
        let aliases = if m.aliases.is_empty() {
            String::new()
        } else {
            format!("  [{}]", m.aliases.join(", "))
        };
        writeln!(
            out,
            "{:<12} {:>5} {:>10}  {:<12} {:<10} {place}{aliases}",
            m.name,
            dims,
            m.max_tokens,
            status,
            m.device.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

/// `daemon status`.
pub fn daemon_status(out: &mut impl Write, s: &DaemonStatus, socket: &Path) -> std::io::Result<()> {
    writeln!(
        out,
        "codesearchd {} (pid {}) on {}, up {} s",
        s.version,
        s.pid,
        socket.display(),
        s.uptime_s
    )?;
    match s.started_by.as_deref() {
        Some(m @ ("systemd" | "launchd")) => writeln!(out, "runs under {m} (socket activation)")?,
        Some("codesearch") => writeln!(out, "auto-started by codesearch")?,
        Some(other) => writeln!(out, "started by {other}")?,
        None => writeln!(out, "started by hand (not under a service manager)")?,
    }
    if let Some(rss) = s.rss_bytes {
        writeln!(out, "memory {} MB", rss / 1_000_000)?;
    }
    for m in &s.models {
        writeln!(out, "model {} on {}", m.name, m.device)?;
    }
    repos(out, &s.repos)
}
