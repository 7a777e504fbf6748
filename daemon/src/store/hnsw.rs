//! The usearch HNSW index: a cache of the vectors in SQLite, keyed by chunk id.
//!
//! Saved by write-to-temp + fsync + rename, so a crash leaves the old file or the
//! new one, never half of either. Whether a saved file is current is decided by
//! the store (generations), not here.

use std::path::{Path, PathBuf};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::StoreError;

/// Search expansion: design.md measured recall@10 0.99 at 256 on 100k vectors.
const EXPANSION_SEARCH: usize = 256;
const EXPANSION_ADD: usize = 128;

/// How vectors are stored in the HNSW index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Half precision: recall indistinguishable from f32 at half the size.
    #[default]
    F16,
    /// 8-bit integers: a quarter of f32, recall near 0.93.
    I8,
}

/// An in-memory HNSW index over unit vectors (cosine).
pub struct Hnsw {
    index: Index,
    dims: usize,
    quantization: Quantization,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dims", &self.dims)
            .field("size", &self.index.size())
            .finish()
    }
}

impl Hnsw {
    /// An empty index.
    pub fn new(dims: usize, quantization: Quantization) -> Result<Self, StoreError> {
        let options = IndexOptions {
            dimensions: dims,
            metric: MetricKind::Cos,
            quantization: match quantization {
                Quantization::F16 => ScalarKind::F16,
                Quantization::I8 => ScalarKind::I8,
            },
            connectivity: 0,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| StoreError::hnsw("create", e))?;
        Ok(Self {
            index,
            dims,
            quantization,
        })
    }

    /// Loads a saved index; any failure (missing, truncated, other dims) is an error
    /// the caller answers by rebuilding.
    pub fn load(path: &Path, dims: usize, quantization: Quantization) -> Result<Self, StoreError> {
        let hnsw = Self::new(dims, quantization)?;
        hnsw.index
            .load(&path_str(path)?)
            .map_err(|e| StoreError::hnsw("load", e))?;
        if hnsw.index.dimensions() != dims {
            return Err(StoreError::Hnsw {
                op: "load",
                reason: format!("{} dims, expected {dims}", hnsw.index.dimensions()),
            });
        }
        hnsw.index.change_expansion_search(EXPANSION_SEARCH);
        Ok(hnsw)
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or replaces) vectors; usearch wants capacity reserved first.
    pub fn add(&mut self, items: &[(u64, Vec<f32>)]) -> Result<(), StoreError> {
        let needed = self.index.size() + items.len();
        if needed > self.index.capacity() {
            self.index
                .reserve(needed.max(self.index.capacity() * 2).max(1024))
                .map_err(|e| StoreError::hnsw("reserve", e))?;
        }
        for (id, v) in items {
            if self.index.contains(*id) {
                self.index
                    .remove(*id)
                    .map_err(|e| StoreError::hnsw("remove", e))?;
            }
            self.index
                .add(*id, v)
                .map_err(|e| StoreError::hnsw("add", e))?;
        }
        Ok(())
    }

    /// Removes vectors; ids that are not there are ignored.
    pub fn remove(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        for &id in ids {
            self.index
                .remove(id)
                .map_err(|e| StoreError::hnsw("remove", e))?;
        }
        Ok(())
    }

    /// The `k` nearest ids with their cosine similarity, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>, StoreError> {
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let m = self
            .index
            .search(query, k)
            .map_err(|e| StoreError::hnsw("search", e))?;
        Ok(m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(id, d)| (id, 1.0 - d))
            .collect())
    }

    /// Writes the index to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let tmp = tmp_path(path);
        self.index
            .save(&path_str(&tmp)?)
            .map_err(|e| StoreError::hnsw("save", e))?;
        let file = std::fs::File::open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
        if let Some(dir) = path.parent() {
            // The rename is durable once the directory is.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// The storage the vectors use.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

fn path_str(path: &Path) -> Result<String, StoreError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Hnsw {
            op: "path",
            reason: format!("{} is not valid UTF-8", path.display()),
        })
}
