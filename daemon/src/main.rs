//! The `codesearchd` binary: argument parsing and the error printer; the work is in the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use codesearchd::embed::{self, EmbedOptions, ModelLocator, Precision};
use codesearchd::{config, embed_bench};

#[derive(Debug, Parser)]
#[command(name = "codesearchd", version, about = "The codesearch daemon")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve JSON-RPC on the socket (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Embed a chunks.jsonl file and report chunks/s, tokens/s, peak RSS and query latency.
    BenchEmbed(BenchArgs),
    /// Index repositories from a cold cache and report files/s, chunks/s and storage;
    /// optionally answer a queries file for `../shared/eval/score.py`.
    BenchIndex(BenchIndexArgs),
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    embedding: EmbeddingFlags,
}

/// The embedding flags every subcommand shares; they override the environment
/// (`CODESEARCH_MODEL`, `CODESEARCH_EMBEDDING_DEVICE`) and `config.yaml`.
#[derive(Debug, Clone, Default, clap::Args)]
struct EmbeddingFlags {
    /// Model name or alias (see docs/MODELS.md) [default: minilm]
    #[arg(long)]
    model: Option<String>,
    /// auto, cpu, cuda or metal (mlx) [default: auto]
    #[arg(long)]
    device: Option<String>,
    /// A folder with config.json, tokenizer.json and model.safetensors, instead of the HF cache.
    #[arg(long)]
    model_path: Option<PathBuf>,
    /// Texts per forward pass at most [default: 32 on CPU, 512 on GPU]
    #[arg(long)]
    batch_size: Option<usize>,
}

impl EmbeddingFlags {
    /// The embedding options after flags, environment and config.yaml are merged.
    fn resolve(
        &self,
        token_budget: Option<usize>,
        precision: Option<Precision>,
    ) -> anyhow::Result<EmbedOptions> {
        let config = config::resolve(&config::Overrides {
            model: self.model.clone(),
            device: self.device.clone(),
            batch_size: self.batch_size,
            model_path: self.model_path.clone(),
        })?;
        tracing::debug!(?config, "configuration");
        let e = config.embedding;
        Ok(EmbedOptions {
            model: e.model,
            device: e.device,
            model_path: e.model_path,
            batch_size: e.batch_size,
            token_budget,
            precision: precision.or(e.precision),
        })
    }
}

#[derive(Debug, clap::Args)]
struct BenchIndexArgs {
    /// Repository roots; each is one corpus, named by its folder.
    #[arg(required = true)]
    roots: Vec<PathBuf>,
    /// Where the indexes go (a temp folder by default, removed afterwards).
    #[arg(long)]
    index_dir: Option<PathBuf>,
    /// Keep existing indexes (measure an incremental run instead of a cold one).
    #[arg(long)]
    warm: bool,
    /// Queries in the format of `../shared/eval/queries.jsonl`.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Where to write the results lines for `score.py` (with `--queries`).
    #[arg(long, default_value = "results.jsonl")]
    results: PathBuf,
    /// Ranking for the queries: hybrid, semantic or lexical.
    #[arg(long, default_value = "hybrid")]
    mode: codesearchd::search::Mode,
    /// Also measure the HNSW index's recall@10 against an exact scan, with this
    /// many stored chunks as probes (and the `--queries` texts, if given).
    #[arg(long, value_name = "PROBES")]
    recall: Option<usize>,
    /// With `--recall`: measure at each of these HNSW search expansions
    /// (comma-separated) instead of the shipped one.
    #[arg(long, value_delimiter = ',', requires = "recall")]
    ef_search: Vec<usize>,
    /// f32, int8 (documents; CPU), f16 or bf16 [default: int8 documents on a
    /// CPU with VNNI, or AVX2 where int8 timed faster, else f32; f16 on GPU]
    #[arg(long)]
    precision: Option<Precision>,
    #[command(flatten)]
    embedding: EmbeddingFlags,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    embedding: EmbeddingFlags,
    /// Padded tokens per forward pass at most [default: 4096 on CPU, 65536 on GPU]
    #[arg(long)]
    token_budget: Option<usize>,
    /// f32, int8 (documents; CPU), f16 or bf16 [default: int8 documents on a
    /// CPU with VNNI, or AVX2 where int8 timed faster, else f32; f16 on GPU]
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
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::BenchEmbed(args) => bench_embed(args),
        Command::BenchIndex(args) => bench_index(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "codesearchd: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// How many times candle's CPU workers spin before they sleep, waiting for the
/// next op (candle's default is 25,000).
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
/// How many threads run candle's element-wise CPU ops (its default: one per
/// core; the matrix products use rayon's pool, one per core, either way).
const ELEMENTWISE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

// The only `unsafe` of the binary: `activation::inherited` and candle's thread
// settings edit the environment, which is sound only before the runtime's threads exist.
#[allow(unsafe_code)]
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // SAFETY: no thread but this one exists yet (the logger spawns none, the
    // runtime starts below), and nothing else touches the environment meanwhile:
    // `inherited` may remove the `LISTEN_*` variables.
    let activation = unsafe { codesearchd::activation::inherited() }
        .context("cannot take the socket the service manager passed")?;
    // A daemon's model shares the cores with searches: a candle worker spinning
    // between queries took the core a search needed (at 32 clients on 2 cores,
    // 18 % of the daemon's CPU was spinning; docs/BENCHMARKS.md). Within a forward
    // pass the next op comes within microseconds, so a short spin still catches it.
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        // SAFETY: as above, still no other thread.
        unsafe { std::env::set_var(SPIN_LIMIT_VAR, "200") };
    }
    // Half the cores for the element-wise ops: each op waits for its slowest
    // thread, and a thread whose core a search holds stalls the whole model. On 2
    // cores, 32 clients got 1.11x the searches/s and documents 0.985x
    // (docs/BENCHMARKS.md).
    if std::env::var_os(ELEMENTWISE_THREADS_VAR).is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        // SAFETY: as above, still no other thread.
        unsafe { std::env::set_var(ELEMENTWISE_THREADS_VAR, (cores / 2).max(1).to_string()) };
    }
    let f = &args.embedding;
    let config = config::resolve(&config::Overrides {
        model: f.model.clone(),
        device: f.device.clone(),
        batch_size: f.batch_size,
        model_path: f.model_path.clone(),
    })?;
    tracing::info!(?config, "configuration");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = runtime.block_on(codesearchd::server::run(
        config,
        activation,
        shutdown_signal(),
    ));
    // A pass still blocked in a model call is abandoned here: SQLite holds every
    // batch it committed, and the next start resumes after the last one.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    served?;
    Ok(())
}

/// SIGINT or SIGTERM (what launchd and systemd send).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the daemon with daemon.shutdown");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT"),
        _ = term.recv() => tracing::info!("SIGTERM"),
    }
}

fn bench_embed(args: BenchArgs) -> anyhow::Result<()> {
    let options = args.embedding.resolve(args.token_budget, args.precision)?;
    // Settings and the model first: a typo should not wait for the chunks to load.
    let mut embedder = embed::load(&options, &ModelLocator::from_env())?;
    let chunks = embed_bench::read_chunks(&args.chunks)?;
    let reference = if args.reference.is_file() {
        Some(embed_bench::read_reference(&args.reference)?)
    } else {
        tracing::warn!(path = %args.reference.display(), "no reference vectors; skipping the cosine check");
        None
    };
    let report = embed_bench::run(&mut embedder, &chunks, args.repeat, reference.as_ref())
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
    if let (Some(min), Some(mean)) = (report.min_cos_vs_f32, report.mean_cos_vs_f32) {
        writeln!(
            out,
            "int8 documents vs f32  min cosine {min:.6}, mean {mean:.6}"
        )?;
    }
    Ok(())
}

fn bench_index(args: BenchIndexArgs) -> anyhow::Result<()> {
    let options = args.embedding.resolve(None, args.precision)?;
    let mut embedder = embed::load(&options, &ModelLocator::from_env())?;
    let bench = codesearchd::index_bench::IndexBench {
        roots: args.roots,
        index_dir: args.index_dir,
        warm: args.warm,
        queries: args.queries,
        results: args.results,
        mode: args.mode,
        recall: args.recall,
        ef_search: args.ef_search,
    };
    codesearchd::index_bench::run(&bench, &mut embedder, &mut std::io::stdout().lock())
}
