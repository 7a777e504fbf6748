//! Indexing and searching a real corpus with the real model: the `ignore` crate's
//! sources from crates.io, copied into a temp dir so the tests can edit them.

use std::path::{Path, PathBuf};

use codesearchd::chunk::Chunker;
use codesearchd::embed::{EmbedError, Embedder, InputKind};
use codesearchd::index::{self, IndexOptions, IndexStats};
use codesearchd::search::{self, Hit};
use codesearchd::store::{Manifest, SCHEMA_VERSION, Store};

use crate::util::{minilm, registry_file};

/// The real model, counting the texts it is asked to embed, and failing once
/// `fail_after` texts have been embedded (to simulate a crash mid-run).
struct Counting<'a> {
    inner: &'a mut dyn Embedder,
    texts: usize,
    fail_after: usize,
}

impl Embedder for Counting<'_> {
    fn model_name(&self) -> &str {
        self.inner.model_name()
    }
    fn dims(&self) -> usize {
        self.inner.dims()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn device_name(&self) -> String {
        self.inner.device_name()
    }
    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        if kind == InputKind::Document {
            if self.texts + texts.len() > self.fail_after {
                return Err(EmbedError::Tokenize {
                    model: "minilm",
                    reason: "injected failure".into(),
                });
            }
            self.texts += texts.len();
        }
        self.inner.embed(texts, kind)
    }
}

const FILES: &[&str] = &["pathutil.rs", "gitignore.rs", "overrides.rs", "types.rs"];

fn corpus() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    for f in FILES {
        let from = registry_file("ignore", &format!("src/{f}"));
        std::fs::copy(from, tmp.path().join("src").join(f)).unwrap();
    }
    tmp
}

struct Repo {
    root: PathBuf,
    index_dir: tempfile::TempDir,
    chunker: Chunker,
}

impl Repo {
    fn new(root: &Path) -> Self {
        Self {
            root: root.canonicalize().unwrap(),
            index_dir: tempfile::tempdir().unwrap(),
            chunker: Chunker::new().unwrap(),
        }
    }

    fn store(&self) -> Store {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            model: "minilm".into(),
            dims: 384,
            source: None,
            root: self.root.clone(),
        };
        Store::open(self.index_dir.path(), &manifest).unwrap()
    }

    /// Indexes and returns the stats and how many texts the model embedded.
    fn index(&self) -> (IndexStats, usize) {
        self.try_index(usize::MAX).unwrap()
    }

    /// Indexes with a model that fails after `fail_after` texts.
    fn try_index(&self, fail_after: usize) -> Result<(IndexStats, usize), index::IndexError> {
        let options = IndexOptions {
            chunks_per_commit: 64,
            ..IndexOptions::default()
        };
        let mut model = minilm();
        let mut counting = Counting {
            inner: &mut *model,
            texts: 0,
            fail_after,
        };
        let mut store = self.store();
        let stats = index::index(
            &self.root,
            &mut store,
            &mut counting,
            &self.chunker,
            &options,
            |_| {},
        )?;
        assert_eq!(stats.chunks_embedded as usize, counting.texts);
        Ok((stats, counting.texts))
    }

    fn search(&self, query: &str) -> Vec<Hit> {
        let mut model = minilm();
        search::search(
            &self.root,
            &self.store(),
            &mut *model,
            query,
            5,
            // The vector ranking: this checks the index; hybrid ranking (whose BM25
            // side ranks unit tests that repeat a function's words high) is
            // measured on the public eval instead.
            search::Mode::Semantic,
        )
        .unwrap()
    }
}

fn top(hits: &[Hit]) -> String {
    hits.first()
        .map(|h| format!("{} {}", h.path, h.symbol.as_deref().unwrap_or("-")))
        .unwrap_or_default()
}

#[test]
fn indexes_searches_and_stays_incremental() {
    let tmp = corpus();
    let repo = Repo::new(tmp.path());
    let (first, embedded) = repo.index();
    assert_eq!(first.files_indexed, FILES.len() as u64);
    assert!(embedded > 100, "{first:?}");

    // Hand-checked queries: the function that does it is among the first three
    // (its own unit tests may outrank it until test code is ranked down).
    for (query, want) in [
        (
            "expand a leading tilde to the home directory",
            "src/gitignore.rs expand_tilde",
        ),
        (
            "remove trailing whitespace that is not escaped",
            "src/gitignore.rs trim_trailing_unescaped_spaces",
        ),
        (
            "read the excludes file setting from the git config",
            "src/gitignore.rs gitconfig_excludes_path",
        ),
        ("is this path a hidden file", "src/pathutil.rs is_hidden"),
    ] {
        let hits = repo.search(query);
        let found = hits
            .iter()
            .take(3)
            .find(|h| top(std::slice::from_ref(h)).starts_with(want));
        let hit = found.unwrap_or_else(|| panic!("{query}: {want} not in the top 3: {hits:#?}"));
        let file = std::fs::read_to_string(repo.root.join(&hit.path)).unwrap();
        let lines: Vec<&str> = file.lines().collect();
        assert!(!hit.stale, "{hit:#?}");
        assert!(
            hit.snippet.starts_with(lines[hit.start_line as usize - 1])
                && lines[hit.end_line as usize - 1..].len() < lines.len(),
            "{hit:#?}"
        );
    }

    // Nothing changed: nothing read twice, nothing embedded.
    let (again, embedded) = repo.index();
    assert_eq!((again.files_unchanged, embedded), (FILES.len() as u64, 0));

    // Edit one function: exactly its chunk is embedded again.
    let path = repo.root.join("src/gitignore.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        "fn expand_tilde(path: &str) -> String {",
        "fn expand_tilde(path: &str) -> String {\n    // Expands ~ to $HOME.",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&path, &edited).unwrap();
    let hits = repo.search("expand a leading tilde to the home directory");
    assert!(hits[0].stale, "the file changed after indexing: {hits:#?}");
    let (stats, embedded) = repo.index();
    assert_eq!((stats.files_indexed, embedded), (1, 1), "{stats:?}");

    // Rename a file: the vectors are reused, nothing is embedded.
    std::fs::rename(&path, repo.root.join("src/ignorefile.rs")).unwrap();
    let (stats, embedded) = repo.index();
    assert_eq!(
        (stats.files_removed, stats.files_indexed, embedded),
        (1, 1, 0),
        "{stats:?}"
    );
    let hits = repo.search("expand a leading tilde to the home directory");
    assert!(
        hits.iter().all(|h| h.path != "src/gitignore.rs"),
        "{hits:#?}"
    );
    assert!(
        hits.iter()
            .any(|h| h.path == "src/ignorefile.rs" && h.symbol.as_deref() == Some("expand_tilde")),
        "{hits:#?}"
    );

    // Delete a file: its hits are gone.
    std::fs::remove_file(repo.root.join("src/ignorefile.rs")).unwrap();
    let (stats, _) = repo.index();
    assert_eq!(stats.files_removed, 1);
    let hits = repo.search("expand a leading tilde to the home directory");
    assert!(
        hits.iter().all(|h| h.path != "src/ignorefile.rs"),
        "{hits:#?}"
    );

    // Bring it back (a branch switch back): still nothing to embed.
    std::fs::write(repo.root.join("src/gitignore.rs"), &edited).unwrap();
    let (_, embedded) = repo.index();
    assert_eq!(embedded, 0);

    // Lose or corrupt the HNSW file: rebuilt, same answers.
    let before = repo.search("check whether a file name is hidden");
    std::fs::remove_file(repo.index_dir.path().join("vectors.usearch")).unwrap();
    assert_eq!(repo.search("check whether a file name is hidden"), before);
    std::fs::write(repo.index_dir.path().join("vectors.usearch"), b"garbage").unwrap();
    assert_eq!(repo.search("check whether a file name is hidden"), before);
}

#[test]
fn an_interrupted_run_keeps_what_it_committed_and_resumes() {
    // Enough files that the run commits more than one batch.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    for f in ["walk.rs", "dir.rs", "gitignore.rs"] {
        let from = registry_file("ignore", &format!("src/{f}"));
        std::fs::copy(from, tmp.path().join("src").join(f)).unwrap();
    }
    let repo = Repo::new(tmp.path());
    let err = repo.try_index(150).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let kept = repo.store().chunk_count().unwrap();
    assert!(kept > 0, "the first batch was committed before the failure");

    let (stats, embedded) = repo.index();
    let total = repo.store().chunk_count().unwrap();
    assert!(stats.files_unchanged > 0, "{stats:?}");
    assert!(
        embedded < total as usize,
        "resumed, not restarted: {embedded} of {total}"
    );
    let (again, embedded) = repo.index();
    assert_eq!((again.files_unchanged, embedded), (3, 0));
}

/// Vectors from a hash of the text (the model is not what this checks), a batch
/// size of its choice, and the size of every document call it got.
struct Batching {
    batch_size: usize,
    calls: Vec<usize>,
}

impl Embedder for Batching {
    fn model_name(&self) -> &str {
        "minilm"
    }
    fn dims(&self) -> usize {
        384
    }
    fn max_tokens(&self) -> usize {
        256
    }
    fn device_name(&self) -> String {
        "test".into()
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        if kind == InputKind::Document {
            self.calls.push(texts.len());
        }
        Ok(texts
            .iter()
            .map(|t| {
                let h = blake3::hash(t.as_bytes());
                let mut v: Vec<f32> = (0..384)
                    .map(|i| f32::from(h.as_bytes()[i % 32]) - 127.5)
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect())
    }
}

#[test]
fn a_device_with_large_batches_gets_large_embedding_calls() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    for f in [
        "walk.rs",
        "dir.rs",
        "gitignore.rs",
        "types.rs",
        "overrides.rs",
        "default_types.rs",
        "lib.rs",
        "pathutil.rs",
    ] {
        let from = registry_file("ignore", &format!("src/{f}"));
        std::fs::copy(from, tmp.path().join("src").join(f)).unwrap();
    }
    let calls = |batch_size| {
        let repo = Repo::new(tmp.path());
        let mut model = Batching {
            batch_size,
            calls: Vec::new(),
        };
        let stats = index::index(
            &repo.root,
            &mut repo.store(),
            &mut model,
            &repo.chunker,
            &IndexOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            model.calls.iter().sum::<usize>(),
            stats.chunks_embedded as usize
        );
        model.calls
    };
    // A CPU's batches of 32: calls of 128 texts, so progress moves often.
    let cpu = calls(32);
    let total: usize = cpu.iter().sum();
    assert!(
        total > 512,
        "the corpus needs more than one commit: {total}"
    );
    assert!(cpu.iter().all(|&n| n <= 128), "{cpu:?}");
    // A GPU's batches of 512: commits of 8,192 chunks, each embedded in one
    // call (the engine overlaps its tokenizing with the device within a call);
    // one commit for all of these.
    let gpu = calls(512);
    assert_eq!(gpu.iter().sum::<usize>(), total);
    assert!(gpu.iter().all(|&n| n <= 8192), "{gpu:?}");
    assert!(gpu.len() < cpu.len() && gpu[0] > 128, "{gpu:?} vs {cpu:?}");
}
