//! The `codesearchd` binary: argument parsing and the error printer; the work is in the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use codesearchd::bench;
use codesearchd::embed::{self, BatchPolicy, DeviceChoice, EmbedOptions, ModelLocator, Precision};

#[derive(Debug, Parser)]
#[command(name = "codesearchd", version, about = "The codesearch daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed a chunks.jsonl file and report chunks/s, tokens/s, peak RSS and query latency.
    BenchEmbed(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Model name or alias (see `codesearch models`).
    #[arg(long, env = "CODESEARCH_MODEL", default_value = embed::DEFAULT_MODEL)]
    model: String,
    /// auto, cpu, cuda or metal (mlx).
    #[arg(long, env = "CODESEARCH_EMBEDDING_DEVICE", default_value = "auto")]
    device: String,
    /// A folder with config.json, tokenizer.json and model.safetensors, instead of the HF cache.
    #[arg(long)]
    model_path: Option<PathBuf>,
    /// Texts per forward pass at most.
    #[arg(long, default_value_t = BatchPolicy::default().max_batch)]
    batch_size: usize,
    /// Padded tokens per forward pass at most.
    #[arg(long, default_value_t = BatchPolicy::default().token_budget)]
    token_budget: usize,
    /// f32, f16 or bf16 (default: f32 on CPU, f16 on GPU).
    #[arg(long)]
    precision: Option<Precision>,
    /// The chunks to embed (one `{"id", "text"}` object per line).
    #[arg(long, default_value = "../shared/reference/chunks.jsonl")]
    chunks: PathBuf,
    /// Reference vectors to check against (ref_first20.json); skipped if the file is absent.
    #[arg(long, default_value = "../shared/reference/ref_first20.json")]
    reference: PathBuf,
    /// Embed the chunks this many times over (to keep a GPU busy).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

// Every candle op allocates its output; glibc returns big blocks to the OS and takes
// a page fault per page on the next op. mimalloc keeps them: measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BenchEmbed(args) => bench_embed(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "codesearchd: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn bench_embed(args: BenchArgs) -> anyhow::Result<()> {
    let policy = BatchPolicy {
        max_batch: args.batch_size,
        token_budget: args.token_budget,
    };
    let options = EmbedOptions {
        model: args.model,
        device: args.device.parse::<DeviceChoice>()?,
        model_path: args.model_path,
        batch: policy,
        precision: args.precision,
    };
    // Settings and the model first: a typo should not wait for the chunks to load.
    let mut embedder = embed::load(&options, &ModelLocator::from_env())?;
    let chunks = bench::read_chunks(&args.chunks)?;
    let reference = if args.reference.is_file() {
        Some(bench::read_reference(&args.reference)?)
    } else {
        tracing::warn!(path = %args.reference.display(), "no reference vectors; skipping the cosine check");
        None
    };
    let report = bench::run(
        &mut embedder,
        &chunks,
        args.repeat,
        reference.as_ref(),
        policy,
    )
    .context("benchmark failed")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    let rss = report
        .peak_rss_bytes
        .map_or("n/a".to_owned(), |b| format!("{} MB", b / 1_000_000));
    writeln!(
        out,
        "model {} on {} ({} threads), batches of ≤{} texts / ≤{} tokens",
        report.model, report.device, report.threads, report.max_batch, report.token_budget
    )?;
    writeln!(out, "chunks          {}", report.chunks)?;
    writeln!(out, "chunks/s        {:.1}", report.chunks_per_s)?;
    writeln!(out, "tokens/s        {:.0}", report.tokens_per_s)?;
    writeln!(out, "padding         {:.3}x", report.padding_ratio)?;
    writeln!(out, "query (median)  {:.2} ms", report.query_ms_median)?;
    writeln!(out, "peak RSS        {rss}")?;
    if let Some(c) = report.min_cos_vs_reference {
        writeln!(out, "min cosine vs sentence-transformers  {c:.6}")?;
    }
    Ok(())
}
