//! Configuration, resolved once: flags > environment > `$CODESEARCH_HOME/config.yaml`
//! > defaults. Every environment variable codesearch reads is named here.
//!
//! ```yaml
//! embedding:
//!   model: minilm        # a registry name or alias (`codesearch models`)
//!   device: auto         # auto, cpu, cuda, metal (mlx)
//!   batch_size: 32       # texts per forward pass at most (default: 32 on CPU, 512 on GPU)
//!   precision: auto      # auto (int8 documents on a CPU with VNNI, or AVX2 where int8 timed faster, else f32; f16 on GPUs), f32, int8, f16, bf16
//!   model_path: ~/models/minilm   # optional: a folder instead of the HF cache
//! remote:                # models behind an HTTP API; the key names are what --model takes
//!   local-nomic:
//!     api: openai        # openai (any OpenAI-compatible /v1/embeddings) or voyage
//!     base_url: http://localhost:11434/v1
//!     model: nomic-embed-text
//!     dimensions: 768    # optional: asked of the server, else learnt from one request
//!     api_key_env: MY_KEY   # optional: the variable that holds the key
//!     batch_size: 64     # texts per request
//!     concurrency: 4     # requests in flight
//!     requests_per_minute: 600
//!     timeout_s: 60
//!     max_retries: 5     # after 429 / 5xx answers
//!     max_tokens: 8192
//!     query_prefix: "search_query: "
//!     document_prefix: "search_document: "
//! ```
//!
//! `openai` and `voyage` are remote models without any of this (their keys in
//! `OPENAI_API_KEY` and `VOYAGE_API_KEY`); an entry of the same name changes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::embed::remote::{self, Api};
use crate::embed::{self, DeviceChoice, RemoteSpec};

/// `CODESEARCH_MODEL`: the embedding model (the original codesearch's name).
pub const ENV_MODEL: &str = "CODESEARCH_MODEL";
/// `CODESEARCH_EMBEDDING_DEVICE`: auto, cpu, cuda, metal or mlx.
pub const ENV_DEVICE: &str = "CODESEARCH_EMBEDDING_DEVICE";
/// Overrides `embedding.precision`.
pub const ENV_PRECISION: &str = "CODESEARCH_EMBEDDING_PRECISION";
/// `avx2` or `scalar`: a lesser int8 kernel than the CPU's best, to measure
/// what other CPUs get (read by `embed::int8`).
pub const ENV_INT8_KERNEL: &str = "CODESEARCH_INT8_KERNEL";
/// `serial`: HNSW inserts on one thread even for a GPU's large commits, to
/// measure the parallel build against it (read by `store`).
pub const ENV_HNSW_INSERTS: &str = "CODESEARCH_HNSW_INSERTS";
/// `CODESEARCH_HOME`: config, indexes and logs (default `~/.codesearch`).
pub const ENV_HOME: &str = codesearch_proto::paths::ENV_HOME;
/// `CODESEARCH_SOCKET`: the daemon's socket (default `$CODESEARCH_HOME/codesearchd.sock`).
pub const ENV_SOCKET: &str = codesearch_proto::paths::ENV_SOCKET;

/// The file inside the home.
pub const CONFIG_FILE: &str = "config.yaml";

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CODESEARCH_HOME`.
    pub home: PathBuf,
    /// The socket path.
    pub socket: PathBuf,
    /// Embedding settings.
    pub embedding: EmbeddingConfig,
    /// Remote models by name: the built-in `openai` and `voyage`, and those of
    /// `config.yaml`'s `remote:`.
    pub remote: Vec<RemoteSpec>,
}

/// The `embedding:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Canonical model name (validated against the registry).
    pub model: String,
    /// Device choice.
    pub device: DeviceChoice,
    /// Texts per forward pass at most; `None` takes the device's default
    /// ([`embed::BatchPolicy::for_device`]).
    pub batch_size: Option<usize>,
    /// A local model folder instead of the Hugging Face cache.
    pub model_path: Option<PathBuf>,
    /// Compute precision; `None` (`auto`) lets the engine pick for the device
    /// (f32 on the CPU, f16 on GPUs).
    pub precision: Option<embed::Precision>,
}

/// Values given on the command line; `None` leaves the decision to the layers below.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--model`.
    pub model: Option<String>,
    /// `--device`.
    pub device: Option<String>,
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--model-path`.
    pub model_path: Option<PathBuf>,
}

/// A configuration error, naming where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `CODESEARCH_HOME` nor `HOME` is set.
    #[error("cannot find the codesearch home: set CODESEARCH_HOME (or HOME)")]
    NoHome,
    /// The config file exists but cannot be read.
    #[error("{path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid YAML of the expected shape.
    #[error("{path}: {reason}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        reason: String,
    },
    /// A value is out of range or unknown.
    #[error("{source_name}: {reason}")]
    Invalid {
        /// `config.yaml: embedding.device`, `CODESEARCH_MODEL`, `--batch-size`, …
        source_name: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    embedding: FileEmbedding,
    #[serde(default)]
    remote: BTreeMap<String, FileRemote>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRemote {
    api: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    dimensions: Option<usize>,
    api_key_env: Option<String>,
    batch_size: Option<usize>,
    concurrency: Option<usize>,
    requests_per_minute: Option<u32>,
    timeout_s: Option<f64>,
    max_retries: Option<u32>,
    max_tokens: Option<usize>,
    query_prefix: Option<String>,
    document_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEmbedding {
    model: Option<String>,
    device: Option<String>,
    batch_size: Option<usize>,
    model_path: Option<PathBuf>,
    precision: Option<String>,
}

/// Resolves the configuration from the process environment.
pub fn resolve(flags: &Overrides) -> Result<Config, ConfigError> {
    resolve_with(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()), flags)
}

/// Resolves the configuration with `env` standing in for the environment (tests).
pub fn resolve_with(
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    use codesearch_proto::paths;
    let home = paths::home_with(env).ok_or(ConfigError::NoHome)?;
    let socket = paths::socket_with(env).unwrap_or_else(|| home.join(paths::SOCKET_FILE));
    let path = home.join(CONFIG_FILE);
    let file = read_file(&path)?;
    let file_src = |key: &str| format!("{}: embedding.{key}", path.display());
    let remote = remote_models(file.remote, &path)?;

    // Each setting: the first layer that has it, with the layer's name for errors.
    let pick = |flag: Option<String>,
                flag_name: &str,
                env_name: Option<&str>,
                file: Option<String>,
                key: &str| {
        flag.map(|v| (v, flag_name.to_owned()))
            .or_else(|| env_name.and_then(|e| env(e).map(|v| (v, e.to_owned()))))
            .or_else(|| file.map(|v| (v, file_src(key))))
    };
    let (model_name, model_src) = pick(
        flags.model.clone(),
        "--model",
        Some(ENV_MODEL),
        file.embedding.model,
        "model",
    )
    .unwrap_or_else(|| (embed::DEFAULT_MODEL.to_owned(), "default".to_owned()));
    let model = embed::resolve(&model_name, &remote)
        .map_err(|e| ConfigError::Invalid {
            source_name: model_src,
            reason: e.to_string(),
        })?
        .name()
        .to_owned();
    let device = match pick(
        flags.device.clone(),
        "--device",
        Some(ENV_DEVICE),
        file.embedding.device,
        "device",
    ) {
        Some((v, src)) => v
            .parse::<DeviceChoice>()
            .map_err(|e| ConfigError::Invalid {
                source_name: src,
                reason: e.to_string(),
            })?,
        None => DeviceChoice::Auto,
    };
    let batch_size = match (flags.batch_size, file.embedding.batch_size) {
        (Some(0), _) => return Err(invalid_batch("--batch-size".to_owned())),
        (Some(n), _) => Some(n),
        (None, Some(0)) => return Err(invalid_batch(file_src("batch_size"))),
        (None, n) => n,
    };
    let model_path = flags
        .model_path
        .clone()
        .or(file.embedding.model_path)
        .map(|p| expand_home(&p, env));
    let precision = match pick(
        None,
        "",
        Some(ENV_PRECISION),
        file.embedding.precision,
        "precision",
    ) {
        Some((v, _)) if v.eq_ignore_ascii_case("auto") => None,
        Some((v, src)) => {
            Some(
                v.parse::<embed::Precision>()
                    .map_err(|reason| ConfigError::Invalid {
                        source_name: src,
                        reason: format!("{reason} (or auto)"),
                    })?,
            )
        }
        None => None,
    };
    Ok(Config {
        home,
        socket,
        embedding: EmbeddingConfig {
            model,
            device,
            batch_size,
            model_path,
            precision,
        },
        remote,
    })
}

/// The built-in remote models with `config.yaml`'s `remote:` entries laid over
/// them, each checked; sorted by name.
fn remote_models(
    entries: BTreeMap<String, FileRemote>,
    path: &Path,
) -> Result<Vec<RemoteSpec>, ConfigError> {
    let mut out: Vec<RemoteSpec> = remote::BUILTIN
        .iter()
        .filter(|name| !entries.contains_key(**name))
        .filter_map(|name| RemoteSpec::builtin(name))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    for (name, entry) in entries {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            source_name: format!("{}: remote.{name}{key}", path.display()),
            reason,
        };
        // `--model` matches names without regard to case.
        if seen.contains(&name.to_ascii_lowercase()) {
            return Err(invalid(
                "",
                "another entry has this name in other letter case; `--model` would not know which"
                    .to_owned(),
            ));
        }
        seen.push(name.to_ascii_lowercase());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
        {
            return Err(invalid(
                "",
                "a remote model's name takes letters, digits and . _ - : / only".to_owned(),
            ));
        }
        if embed::registry::lookup(&name).is_ok() {
            return Err(invalid(
                "",
                "the name is a local model's (`codesearch models`); pick another".to_owned(),
            ));
        }
        let api = match &entry.api {
            Some(a) => Some(a.parse::<Api>().map_err(|e| invalid(".api", e))?),
            None => None,
        };
        let mut spec = match (RemoteSpec::builtin(&name), api) {
            (Some(builtin), None) => builtin,
            (Some(builtin), Some(api)) if builtin.api == api => builtin,
            (_, Some(api)) => RemoteSpec::defaults(&name, api),
            (None, None) => {
                return Err(invalid(
                    ".api",
                    "say which API the server speaks: `openai` (any OpenAI-compatible /v1/embeddings) or `voyage`".to_owned(),
                ));
            }
        };
        if let Some(url) = entry.base_url {
            let url = url.trim().trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    ".base_url",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
            spec.base_url = url;
        }
        if let Some(model) = entry.model {
            spec.model = model.trim().to_owned();
        }
        if spec.model.is_empty() {
            return Err(invalid(
                ".model",
                "name the model the server should run (its own name for it)".to_owned(),
            ));
        }
        let in_range = |key: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(
                    key,
                    format!("{v} is out of range; use {lo} to {hi}"),
                ))
            }
        };
        if let Some(d) = entry.dimensions {
            spec.dimensions = Some(in_range(".dimensions", d, 1, 65_536)?);
        }
        if let Some(var) = entry.api_key_env {
            let var = var.trim().to_owned();
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    ".api_key_env",
                    "give the name of an environment variable (letters, digits, _), not the key itself".to_owned(),
                ));
            }
            spec.api_key_env = Some(var);
        }
        if let Some(n) = entry.batch_size {
            spec.batch_size = in_range(".batch_size", n, 1, 2048)?;
        }
        if let Some(n) = entry.concurrency {
            spec.concurrency = in_range(".concurrency", n, 1, 64)?;
        }
        if let Some(n) = entry.requests_per_minute {
            spec.requests_per_minute =
                Some(in_range(".requests_per_minute", n as usize, 1, 1_000_000)? as u32);
        }
        if let Some(t) = entry.timeout_s {
            if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
                return Err(invalid(
                    ".timeout_s",
                    format!("{t} is out of range; use more than 0 and at most 3600 seconds"),
                ));
            }
            spec.timeout = Duration::from_secs_f64(t);
        }
        if let Some(n) = entry.max_retries {
            spec.max_retries = in_range(".max_retries", n as usize, 0, 20)? as u32;
        }
        if let Some(n) = entry.max_tokens {
            spec.max_tokens = in_range(".max_tokens", n, 16, 1_000_000)?;
        }
        if let Some(p) = entry.query_prefix {
            spec.query_prefix = p;
        }
        if let Some(p) = entry.document_prefix {
            spec.document_prefix = p;
        }
        out.push(spec);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn invalid_batch(source_name: String) -> ConfigError {
    ConfigError::Invalid {
        source_name,
        reason: "batch size must be at least 1".to_owned(),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match crate::walk::read_small_file(path, crate::walk::SMALL_FILE_LIMIT)
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
    {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn expand_home(p: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (p.strip_prefix("~"), env("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_in(
        home: &Path,
        env: &[(&str, &str)],
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.insert(ENV_HOME.to_owned(), home.display().to_string());
        vars.entry("HOME".to_owned())
            .or_insert_with(|| "/home/u".to_owned());
        resolve_with(&|k| vars.get(k).cloned(), flags)
    }

    #[test]
    fn defaults_without_file_or_env() {
        let tmp = tempfile::tempdir().unwrap();
        let c = resolve_in(tmp.path(), &[], &Overrides::default()).unwrap();
        assert_eq!(c.socket, tmp.path().join("codesearchd.sock"));
        assert_eq!(c.embedding.model, "minilm");
        assert_eq!(c.embedding.device, DeviceChoice::Auto);
        assert_eq!(c.embedding.batch_size, None);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "embedding:\n  model: bge-small-mlx\n  device: mlx\n  batch_size: 8\n  model_path: ~/m\n",
        )
        .unwrap();
        let file_only = resolve_in(tmp.path(), &[], &Overrides::default()).unwrap();
        assert_eq!(
            file_only.embedding,
            EmbeddingConfig {
                model: "bge-small".into(),
                device: DeviceChoice::Metal,
                batch_size: Some(8),
                model_path: Some(PathBuf::from("/home/u/m")),
                precision: None,
            }
        );
        let env = [(ENV_MODEL, "bge-large-mlx"), (ENV_DEVICE, "cpu")];
        let with_env = resolve_in(tmp.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(
            (with_env.embedding.model.as_str(), with_env.embedding.device),
            ("bge-large", DeviceChoice::Cpu)
        );
        let flags = Overrides {
            model: Some("minilm".into()),
            device: Some("cuda".into()),
            batch_size: Some(16),
            model_path: None,
        };
        let with_flags = resolve_in(tmp.path(), &env, &flags).unwrap();
        assert_eq!(
            (
                with_flags.embedding.model.as_str(),
                with_flags.embedding.device,
                with_flags.embedding.batch_size
            ),
            ("minilm", DeviceChoice::Cuda, Some(16))
        );
    }

    #[test]
    fn remote_models_come_from_the_file_over_the_built_in_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let c = resolve_in(tmp.path(), &[(ENV_MODEL, "voyage")], &Overrides::default()).unwrap();
        assert_eq!(c.embedding.model, "voyage");
        let names: Vec<&str> = c.remote.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["openai", "voyage"]);

        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "embedding:\n  model: local-infinity\nremote:\n  local-infinity:\n    api: openai\n    base_url: http://127.0.0.1:7997/v1/\n    model: all-MiniLM-L6-v2\n    batch_size: 16\n    timeout_s: 2.5\n  openai:\n    model: text-embedding-3-large\n    dimensions: 3072\n",
        )
        .unwrap();
        let c = resolve_in(tmp.path(), &[], &Overrides::default()).unwrap();
        assert_eq!(c.embedding.model, "local-infinity");
        let local = c
            .remote
            .iter()
            .find(|r| r.name == "local-infinity")
            .unwrap();
        assert_eq!(local.base_url, "http://127.0.0.1:7997/v1");
        assert_eq!(
            (
                local.batch_size,
                local.dimensions,
                local.api_key_env.as_deref()
            ),
            (16, None, None)
        );
        assert_eq!(local.timeout, Duration::from_millis(2500));
        let openai = c.remote.iter().find(|r| r.name == "openai").unwrap();
        assert_eq!(openai.model, "text-embedding-3-large");
        assert_eq!(openai.dimensions, Some(3072));
        assert_eq!(
            openai.api_key_env.as_deref(),
            Some("OPENAI_API_KEY"),
            "the rest is the built-in's"
        );
    }

    #[test]
    fn bad_remote_entries_are_named_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        for (entry, want) in [
            ("  x:\n    model: m\n", "remote.x.api: say which API"),
            (
                "  x:\n    api: cohere\n    model: m\n",
                "unknown api `cohere`",
            ),
            ("  x:\n    api: openai\n", "remote.x.model: name the model"),
            (
                "  x:\n    api: openai\n    model: m\n    base_url: ftp://h\n",
                "not an http:// or https:// URL",
            ),
            (
                "  x:\n    api: openai\n    model: m\n    batch_size: 0\n",
                "remote.x.batch_size: 0 is out of range",
            ),
            (
                "  x:\n    api: openai\n    model: m\n    api_key_env: sk-abc123\n",
                "not the key itself",
            ),
            (
                "  minilm:\n    api: openai\n    model: m\n",
                "a local model's",
            ),
            (
                "  Big:\n    api: openai\n    model: m\n  big:\n    api: openai\n    model: n\n",
                "other letter case",
            ),
            (
                "  x:\n    api: openai\n    model: m\n    key: 1\n",
                "unknown field `key`",
            ),
        ] {
            std::fs::write(tmp.path().join(CONFIG_FILE), format!("remote:\n{entry}")).unwrap();
            let err = resolve_in(tmp.path(), &[], &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{entry}: {err}");
            assert!(!err.contains("sk-abc123"), "{err}");
        }
    }

    #[test]
    fn precision_comes_from_the_file_or_the_environment_and_auto_leaves_it_open() {
        let tmp = tempfile::tempdir().unwrap();
        let none = resolve_in(tmp.path(), &[], &Overrides::default()).unwrap();
        assert_eq!(none.embedding.precision, None);
        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "embedding:\n  precision: int8\n",
        )
        .unwrap();
        let file = resolve_in(tmp.path(), &[], &Overrides::default()).unwrap();
        assert_eq!(file.embedding.precision, Some(embed::Precision::Int8));
        let env = resolve_in(
            tmp.path(),
            &[(ENV_PRECISION, "auto")],
            &Overrides::default(),
        );
        assert_eq!(env.unwrap().embedding.precision, None);
        let err = resolve_in(tmp.path(), &[(ENV_PRECISION, "f64")], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CODESEARCH_EMBEDDING_PRECISION: unknown precision `f64`")
                && err.contains("(or auto)"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_their_source_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_in(tmp.path(), &[(ENV_DEVICE, "tpu")], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CODESEARCH_EMBEDDING_DEVICE: unknown device `tpu`"),
            "{err}"
        );

        std::fs::write(tmp.path().join(CONFIG_FILE), "embedding:\n  model: nope\n").unwrap();
        let err = resolve_in(tmp.path(), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.yaml: embedding.model: unknown model `nope`"),
            "{err}"
        );
        assert!(err.contains("minilm"), "{err}");

        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "embedding:\n  modle: minilm\n",
        )
        .unwrap();
        let err = resolve_in(tmp.path(), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.yaml") && err.contains("unknown field `modle`"),
            "{err}"
        );

        std::fs::write(tmp.path().join(CONFIG_FILE), "embedding: [unclosed\n").unwrap();
        let err = resolve_in(tmp.path(), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yaml") && err.contains("line"), "{err}");

        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "embedding:\n  batch_size: 0\n",
        )
        .unwrap();
        let err = resolve_in(tmp.path(), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("embedding.batch_size: batch size must be at least 1"),
            "{err}"
        );
    }
}
