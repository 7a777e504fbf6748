//! A queries file split over the repositories of one `codesearch benchmark`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use codesearch_proto::benchmark::{BenchmarkQuery, QueryLine, parse_queries};

/// The query lines of `path`; an error names the file and line.
pub(super) fn read_queries(path: &Path) -> anyhow::Result<Vec<QueryLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read queries from {}", path.display()))?;
    let lines =
        parse_queries(&text).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), e.line))?;
    if lines.is_empty() {
        bail!("{} has no queries", path.display());
    }
    Ok(lines)
}

/// Queries per repository: by `corpus` = the repository's folder name, or all
/// of them to the only repository.
pub(super) fn assign(
    lines: &[QueryLine],
    repos: &[PathBuf],
    file: &Path,
) -> anyhow::Result<Vec<Vec<BenchmarkQuery>>> {
    let mut out = vec![Vec::new(); repos.len()];
    let names: Vec<String> = repos.iter().map(|r| folder_name(r)).collect();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for q in lines {
        let slot = match (&q.corpus, repos.len()) {
            (None, 1) => Some(0),
            (None, _) => bail!(
                "{}: query {} has no \"corpus\" field, so it cannot be matched to one of {} repositories",
                file.display(),
                q.id,
                repos.len()
            ),
            (Some(c), 1) if !names.contains(c) && lines.iter().all(|l| l.corpus == q.corpus) => {
                Some(0)
            }
            (Some(c), _) => names.iter().position(|n| n == c),
        };
        match slot {
            Some(i) => out[i].push(q.query()),
            None => {
                *skipped
                    .entry(q.corpus.clone().unwrap_or_default())
                    .or_default() += 1
            }
        }
    }
    if out.iter().all(Vec::is_empty) {
        bail!(
            "no query in {} is for {} (queries name their repository folder in \"corpus\")",
            file.display(),
            names.join(", ")
        );
    }
    for (corpus, n) in skipped {
        let _ = writeln!(
            std::io::stderr(),
            "codesearch: note: {n} queries are for `{corpus}`, which is not among the repositories given; add --repo …/{corpus} to include them"
        );
    }
    Ok(out)
}

/// A repository's folder name, which queries name in `corpus`.
pub(super) fn folder_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
