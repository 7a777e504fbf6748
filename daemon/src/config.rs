//! Configuration, resolved once: flags > environment > `$CODESEARCH_HOME/config.yaml`
//! > defaults. Every environment variable codesearch reads is named here.
//!
//! ```yaml
//! embedding:
//!   model: minilm        # a registry name or alias (`codesearch models`)
//!   device: auto         # auto, cpu, cuda, metal (mlx)
//!   batch_size: 32       # texts per forward pass at most (default: 32 on CPU, 512 on GPU)
//!   model_path: ~/models/minilm   # optional: a folder instead of the HF cache
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embed::{self, DeviceChoice};

/// `CODESEARCH_MODEL`: the embedding model (the original codesearch's name).
pub const ENV_MODEL: &str = "CODESEARCH_MODEL";
/// `CODESEARCH_EMBEDDING_DEVICE`: auto, cpu, cuda, metal or mlx.
pub const ENV_DEVICE: &str = "CODESEARCH_EMBEDDING_DEVICE";
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEmbedding {
    model: Option<String>,
    device: Option<String>,
    batch_size: Option<usize>,
    model_path: Option<PathBuf>,
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
    let home = env(ENV_HOME)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".codesearch")))
        .ok_or(ConfigError::NoHome)?;
    let socket = env(ENV_SOCKET)
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(codesearch_proto::paths::SOCKET_FILE));
    let path = home.join(CONFIG_FILE);
    let file = read_file(&path)?;
    let file_src = |key: &str| format!("{}: embedding.{key}", path.display());

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
    let model = embed::registry::lookup(&model_name)
        .map_err(|e| ConfigError::Invalid {
            source_name: model_src,
            reason: e.to_string(),
        })?
        .name
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
    Ok(Config {
        home,
        socket,
        embedding: EmbeddingConfig {
            model,
            device,
            batch_size,
            model_path,
        },
    })
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
