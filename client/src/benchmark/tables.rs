//! The tables of the original codesearch's runner: performance per model,
//! then quality per model and set.

use std::io::Write;
use std::path::PathBuf;

use codesearch_proto::benchmark::Metrics;
use comfy_table::{CellAlignment, Table, presets};

use super::Args;
use super::queries::folder_name;
use super::report::Report;

/// A borderless table, its columns after the first two right-aligned.
fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for i in 2..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Writes both tables (the quality table only when queries were answered).
pub(super) fn write(
    out: &mut impl Write,
    report: &Report,
    req: &Args,
    repos: &[PathBuf],
) -> std::io::Result<()> {
    let names: Vec<String> = repos.iter().map(|r| folder_name(r)).collect();
    writeln!(out, "Performance (cold index of {})", names.join(", "))?;
    let mut perf = table(&[
        "Model",
        "Device",
        "Samples/s",
        "Peak memory",
        "Storage/1K entities",
        "Query median",
        "p95",
    ]);
    for m in &report.models {
        perf.add_row(vec![
            m.model.clone(),
            m.device.clone(),
            format!("{:.1}", m.chunks_per_s),
            m.peak_rss_bytes
                .map_or("n/a".to_owned(), |b| format!("{} MB", b / 1_000_000)),
            format!("{:.2} MB", m.storage_mb_per_1k),
            format!("{:.1} ms", m.query_ms_median),
            format!("{:.1} ms", m.query_ms_p95),
        ]);
    }
    writeln!(out, "{perf}")?;
    if report.models.iter().all(|m| m.overall.is_none()) {
        return Ok(());
    }
    let source = req
        .queries
        .as_ref()
        .map(|q| folder_name(q))
        .unwrap_or_default();
    writeln!(out)?;
    writeln!(
        out,
        "Quality ({source}, {} ranking)",
        req.mode.as_deref().unwrap_or("hybrid")
    )?;
    let mut quality = table(&[
        "Model", "Set", "n", "MRR@10", "R@1", "R@5", "R@10", "nDCG@10", "no_res",
    ]);
    for m in &report.models {
        let Some(overall) = m.overall else { continue };
        let mut rows: Vec<(String, Metrics)> =
            m.by_repo.iter().map(|(k, v)| (k.clone(), *v)).collect();
        if m.by_language.len() > 1 || m.by_repo.len() > 1 {
            rows.extend(m.by_language.iter().map(|(k, v)| (format!("lang {k}"), *v)));
        }
        rows.push(("OVERALL".to_owned(), overall));
        for (i, (set, x)) in rows.iter().enumerate() {
            quality.add_row(vec![
                if i == 0 {
                    m.model.clone()
                } else {
                    String::new()
                },
                set.clone(),
                x.n.to_string(),
                format!("{:.3}", x.mrr_at_10),
                format!("{:.3}", x.recall_at_1),
                format!("{:.3}", x.recall_at_5),
                format!("{:.3}", x.recall_at_10),
                format!("{:.3}", x.ndcg_at_10),
                x.no_results.to_string(),
            ]);
        }
    }
    writeln!(out, "{quality}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark::report::ModelSummary;

    #[test]
    fn tables_line_up_and_carry_every_figure() {
        let metrics = Metrics::from_ranks(&[Some(1), Some(3), None], 1);
        let report = Report {
            runs: Vec::new(),
            models: vec![ModelSummary {
                model: "minilm".to_owned(),
                device: "cpu".to_owned(),
                chunks_per_s: 81.26,
                peak_rss_bytes: Some(412_000_000),
                storage_mb_per_1k: 1.5,
                query_ms_median: 6.04,
                query_ms_p95: 9.9,
                overall: Some(metrics),
                by_repo: [("flask".to_owned(), metrics)].into(),
                by_language: [("python".to_owned(), metrics)].into(),
            }],
        };
        let args = Args {
            models: Vec::new(),
            repos: Vec::new(),
            queries: Some(PathBuf::from("/eval/queries.jsonl")),
            mode: None,
            results: None,
            json: false,
        };
        let mut out = Vec::new();
        write(&mut out, &report, &args, &[PathBuf::from("/eval/flask")]).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "Performance (cold index of flask)",
            "Samples/s",
            "81.3",
            "412 MB",
            "1.50 MB",
            "6.0 ms",
            "Quality (queries.jsonl, hybrid ranking)",
            "OVERALL",
            "0.444",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
        // Right-aligned numbers end in one column.
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("0.444")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let ends: Vec<usize> = lines.iter().map(|l| l.trim_end().len()).collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
    }
}
