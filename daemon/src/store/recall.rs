//! How well the HNSW graph finds what an exact scan finds (`bench-index --recall`).

use super::*;

/// What [`Store::hnsw_recall`] measured: recall@k of the HNSW index, per kind of probe.
#[derive(Debug, Clone, Copy)]
pub struct Recall {
    /// For the query vectors given, if any.
    pub queries: Option<f64>,
    /// For stored chunks as probes, if any.
    pub chunks: Option<f64>,
    /// Probes in all.
    pub probes: usize,
    /// Median time of one HNSW search (probes run in parallel, one per core).
    pub search_ms_median: f64,
    /// Vectors scanned exactly.
    pub vectors: usize,
}

impl Store {
    /// How well the HNSW index finds the `k` nearest neighbours, against an
    /// exact scan of the stored vectors: for `queries`, and for `chunk_probes`
    /// stored chunks spread over the index, each asking for its neighbours (itself
    /// left out of both lists). For `bench-index --recall`; it reads every vector.
    pub fn hnsw_recall(
        &self,
        queries: &[Vec<f32>],
        chunk_probes: usize,
        k: usize,
    ) -> Result<Recall, StoreError> {
        use rayon::prelude::*;
        let unit = |v: &[i8]| -> Vec<f32> {
            let n = v
                .iter()
                .map(|&x| f32::from(x).powi(2))
                .sum::<f32>()
                .sqrt()
                .max(1e-9);
            v.iter().map(|&x| f32::from(x) / n).collect()
        };
        // Sorted by id, so a vector is found by binary search.
        let mut matrix: Vec<(u64, Vec<f32>)> = live_vectors(&self.db)
            .map_err(|e| self.sql(e))?
            .into_iter()
            .map(|(id, v)| (id, unit(&v)))
            .collect();
        matrix.sort_unstable_by_key(|(id, _)| *id);
        let step = (matrix.len() / chunk_probes.max(1)).max(1);
        let probes: Vec<(Option<u64>, Vec<f32>)> = queries
            .iter()
            .map(|q| (None, unit(&hnsw::quantize(q))))
            .chain(
                matrix
                    .iter()
                    .step_by(step)
                    .take(chunk_probes)
                    .map(|(id, v)| (Some(*id), v.clone())),
            )
            .collect();
        let hnsw = hnsw_read(&self.hnsw);
        let found: Vec<(bool, usize, f64)> = probes
            .par_iter()
            .map(|(own, q)| -> Result<(bool, usize, f64), StoreError> {
                let skip = |id: &u64| Some(*id) != *own;
                let mut exact: Vec<(u64, f32)> = matrix
                    .iter()
                    .filter(|(id, _)| skip(id))
                    .map(|(id, v)| (*id, v.iter().zip(q).map(|(a, b)| a * b).sum()))
                    .collect();
                let cut = k.min(exact.len());
                if cut == 0 {
                    return Ok((own.is_none(), 0, 0.0));
                }
                exact.select_nth_unstable_by(cut - 1, |a, b| b.1.total_cmp(&a.1));
                // A hit is any vector as close as the k-th exact one: chunks of
                // equal text share a vector, and which of a tie comes first is arbitrary.
                let kth = exact[cut - 1].1 - 1e-5;
                let score = |id: &u64| {
                    matrix
                        .binary_search_by_key(id, |(i, _)| *i)
                        .map_or(f32::MIN, |i| {
                            matrix[i].1.iter().zip(q).map(|(a, b)| a * b).sum()
                        })
                };
                let t = std::time::Instant::now();
                let got = hnsw.search(q, k + 1)?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let hits = got
                    .iter()
                    .map(|(id, _)| id)
                    .filter(|id| skip(id))
                    .take(k)
                    .filter(|id| score(id) >= kth)
                    .count();
                Ok((own.is_none(), hits, ms))
            })
            .collect::<Result<_, _>>()?;
        let rate = |queries: bool| {
            let n = found.iter().filter(|(q, _, _)| *q == queries).count();
            (n > 0).then(|| {
                found
                    .iter()
                    .filter(|(q, _, _)| *q == queries)
                    .map(|(_, h, _)| *h)
                    .sum::<usize>() as f64
                    / (n * k) as f64
            })
        };
        let mut ms: Vec<f64> = found.iter().map(|(_, _, ms)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        Ok(Recall {
            queries: rate(true),
            chunks: rate(false),
            search_ms_median: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            probes: probes.len(),
            vectors: matrix.len(),
        })
    }
}
