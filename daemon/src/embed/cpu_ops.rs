//! Fused CPU kernels for the BERT encoder, as candle custom ops.
//!
//! Measured on the reference chunks, candle's generic CPU ops spent a sixth of the
//! time in scalar `erf` (GELU) and much of the rest of attention in per-head GEMM
//! calls, transposes, the mask add and a separate softmax. These kernels do the same
//! math in one pass each. They are plain Rust compiled once per instruction set and
//! picked at run time (`pulp`), so the binary stays portable while AVX-512 machines
//! get AVX-512. Only used for F32 on the CPU; GPUs keep candle's own kernels.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, InplaceOp1, InplaceOp3, Layout, Result, Shape,
};
use rayon::prelude::*;

/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 16 * 1024;

/// `gelu(x) = x/2 · (1 + erf(x/√2))`, the exact GELU BERT uses.
#[derive(Debug, Clone, Copy)]
pub(super) struct GeluErf;

/// In place (`Tensor::inplace_op1`): the dense layer's output is fresh and read
/// by nothing else, and a new `[tokens, 4·hidden]` buffer cost more to allocate
/// and zero than the GELU itself.
impl InplaceOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "cpu-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &mut data[start..end],
            _ => candle_core::bail!("cpu-gelu-erf: input must be contiguous f32"),
        };
        x.par_chunks_mut(CHUNK)
            .for_each(|x| pulp::Arch::new().dispatch(GeluKernel { x }));
        Ok(())
    }
}

struct GeluKernel<'a> {
    x: &'a mut [f32],
}

impl pulp::WithSimd for GeluKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for x in self.x.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `y ← LayerNorm(y + x)` row by row, in place (`Tensor::inplace_op3(y, x,
/// params)`, `params` = `[2, hidden]`: the norm's weight, then its bias): the
/// residual add and the norm after each attention and feed-forward block.
///
/// candle did these as a parallel element-wise add (whose workers wait at a
/// spinning barrier: 8 % of a cold index's CPU time on 2 cores) into a fresh,
/// zeroed buffer, and then its layer norm, which sums each row one value at a
/// time into another fresh buffer. Here it is one pass over the rows, sums in
/// eight lanes, and no allocation: `y` is the dense layer's fresh output.
#[derive(Debug, Clone, Copy)]
pub(super) struct AddNorm {
    pub eps: f32,
}

/// Rows per parallel task of [`AddNorm`].
const NORM_ROWS: usize = 64;

impl InplaceOp3 for AddNorm {
    fn name(&self) -> &'static str {
        "cpu-add-norm"
    }

    fn cpu_fwd(
        &self,
        y: &mut CpuStorage,
        y_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> Result<()> {
        let y = match (y, y_layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &mut data[start..end],
            _ => candle_core::bail!("cpu-add-norm: output must be contiguous f32"),
        };
        let x = f32_input(x, x_layout, self.name())?;
        let params = f32_input(params, params_layout, self.name())?;
        let hidden = params.len() / 2;
        if hidden == 0 || params.len() != 2 * hidden || x.len() != y.len() || y.len() % hidden != 0
        {
            candle_core::bail!(
                "cpu-add-norm: {} values plus {} with {} norm parameters",
                y.len(),
                x.len(),
                params.len()
            );
        }
        let (weight, bias) = params.split_at(hidden);
        let eps = self.eps;
        y.par_chunks_mut(NORM_ROWS * hidden)
            .zip(x.par_chunks(NORM_ROWS * hidden))
            .for_each(|(y, x)| {
                pulp::Arch::new().dispatch(AddNormKernel {
                    y,
                    x,
                    weight,
                    bias,
                    eps,
                })
            });
        Ok(())
    }
}

struct AddNormKernel<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f32,
}

impl pulp::WithSimd for AddNormKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            y,
            x,
            weight,
            bias,
            eps,
        } = self;
        let hidden = weight.len();
        let n = hidden as f32;
        for (y, x) in y.chunks_exact_mut(hidden).zip(x.chunks_exact(hidden)) {
            for (y, &x) in y.iter_mut().zip(x) {
                *y += x;
            }
            // E[x²] − mean², as candle's layer norm computes it, so that vectors
            // stay what indexes were built with (up to the order of the sums).
            let (mut acc, mut acc2) = ([0f32; 8], [0f32; 8]);
            let (chunks, rest) = y.as_chunks::<8>();
            for c in chunks {
                for ((a, a2), &v) in acc.iter_mut().zip(&mut acc2).zip(c) {
                    *a += v;
                    *a2 += v * v;
                }
            }
            let total = acc.iter().sum::<f32>() + rest.iter().sum::<f32>();
            let squares = acc2.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>();
            let mean = total / n;
            let var = squares / n - mean * mean;
            let inv = 1.0 / (var + eps).sqrt();
            for ((y, &w), &b) in y.iter_mut().zip(weight).zip(bias) {
                *y = (*y - mean) * inv * w + b;
            }
        }
    }
}

/// Multi-head self-attention over the packed `[batch·len, 3·hidden]` QKV matrix.
///
/// Sequence `b` attends over its first `lens[b]` keys only (the rest is padding), so
/// no mask tensor is needed; rows of padding queries come out as zeros, which no
/// real token ever reads. Output: `[batch·len, hidden]`.
#[derive(Debug, Clone)]
pub(super) struct Attention {
    /// Sequences in the batch.
    pub batch: usize,
    /// Padded length of every sequence (unless `packed`).
    pub len: usize,
    /// The sequences lie back to back, `lens[b]` rows each, with no padding rows.
    pub packed: bool,
    /// Attention heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Real (unpadded) length of each sequence.
    pub lens: Vec<usize>,
    /// `1/√head_dim`.
    pub scale: f32,
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_input(storage, layout, self.name())?;
        let hidden = self.heads * self.head_dim;
        let rows = if self.packed {
            self.lens.iter().sum()
        } else {
            self.batch * self.len
        };
        if qkv.len() != rows * 3 * hidden || self.lens.len() != self.batch {
            candle_core::bail!(
                "cpu-attention: input of {} values does not match {} rows of 3×{hidden}",
                qkv.len(),
                rows
            );
        }
        let mut out = vec![0f32; rows * hidden];
        // Each sequence's output and input rows.
        let mut work = Vec::with_capacity(self.batch);
        let (mut out_rest, mut qkv_rest) = (out.as_mut_slice(), qkv);
        for &real in &self.lens {
            let n = if self.packed { real } else { self.len };
            let (o, rest) = out_rest.split_at_mut(n * hidden);
            let (q, qrest) = qkv_rest.split_at(n * 3 * hidden);
            work.push((o, q, real));
            (out_rest, qkv_rest) = (rest, qrest);
        }
        work.into_par_iter().for_each(|(out, qkv, real)| {
            let kernel = AttentionKernel {
                op: self,
                qkv,
                out,
                real: real.min(self.len),
            };
            if self.head_dim.is_multiple_of(16) {
                pulp::Arch::new().dispatch(TiledAttention(kernel))
            } else {
                pulp::Arch::new().dispatch(kernel)
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

struct AttentionKernel<'a> {
    op: &'a Attention,
    qkv: &'a [f32],
    out: &'a mut [f32],
    real: usize,
}

impl pulp::WithSimd for AttentionKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self { op, qkv, out, real } = self;
        let hd = op.head_dim;
        let hidden = op.heads * hd;
        let stride = 3 * hidden;
        // Keys transposed per head ([head_dim][real]) so scores accumulate as
        // contiguous axpys over keys instead of one short dot product per key.
        let mut keys_t = vec![0f32; hd * real];
        let mut scores = vec![0f32; real];
        for head in 0..op.heads {
            let (q_off, k_off, v_off) = (head * hd, hidden + head * hd, 2 * hidden + head * hd);
            for j in 0..real {
                let k = &qkv[j * stride + k_off..][..hd];
                for (d, &kd) in k.iter().enumerate() {
                    keys_t[d * real + j] = kd;
                }
            }
            for i in 0..real {
                let q = &qkv[i * stride + q_off..][..hd];
                scores.fill(0.0);
                for (d, &qd) in q.iter().enumerate() {
                    let qd = qd * op.scale;
                    for (s, &k) in scores.iter_mut().zip(&keys_t[d * real..][..real]) {
                        *s += qd * k;
                    }
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                for s in scores.iter_mut() {
                    *s = exp(*s - max);
                }
                let inv = 1.0 / sum(&scores);
                let o = &mut out[i * hidden + q_off..][..hd];
                weighted_rows(o, &scores, qkv, stride, v_off, inv);
            }
        }
    }
}

/// Queries per register tile.
const QUERIES: usize = 4;

/// [`AttentionKernel`]'s math as two products in register tiles ([`outer_tile`]),
/// for head widths that are a whole number of vectors: four queries at a time, so
/// every key and value vector loaded serves four queries, with 8 sums in flight
/// (the form before this kept four, half of what two FMA units need, and left
/// the values' products unfused: 12 % of the cores' peak).
struct TiledAttention<'a>(AttentionKernel<'a>);

impl pulp::WithSimd for TiledAttention<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let AttentionKernel { op, qkv, out, real } = self.0;
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        let hd = op.head_dim;
        let hidden = op.heads * hd;
        let stride = 3 * hidden;
        // Keys transposed ([head_dim][keys]) and values gathered ([keys][head_dim])
        // per head, both padded with zero keys to whole vectors; the padding's
        // probabilities are zero, so it adds nothing to the weighted sums.
        let padded = real.next_multiple_of(lanes);
        let mut keys_t = vec![0f32; hd * padded];
        let mut values = vec![0f32; padded * hd];
        let mut queries = vec![0f32; QUERIES * hd];
        let mut probs = vec![0f32; QUERIES * padded];
        let mut sums = vec![0f32; QUERIES * hd];
        let (no_keys, no_columns) = (vec![0f32; padded], vec![0f32; hd]);
        for head in 0..op.heads {
            let (q_off, k_off, v_off) = (head * hd, hidden + head * hd, 2 * hidden + head * hd);
            for j in 0..real {
                let row = &qkv[j * stride..];
                for (d, &kd) in row[k_off..][..hd].iter().enumerate() {
                    keys_t[d * padded + j] = kd;
                }
                values[j * hd..][..hd].copy_from_slice(&row[v_off..][..hd]);
            }
            for first in (0..real).step_by(QUERIES) {
                let n = QUERIES.min(real - first);
                for (r, q) in queries.chunks_exact_mut(hd).enumerate() {
                    if r < n {
                        for (q, &v) in q.iter_mut().zip(&qkv[(first + r) * stride + q_off..]) {
                            *q = v * op.scale;
                        }
                    } else {
                        q.fill(0.0);
                    }
                }
                // Scores: queries · keysᵀ.
                rows_times(simd, &queries, hd, &keys_t, &no_keys, &mut probs);
                let mut inv = [0f32; QUERIES];
                for (r, inv) in inv.iter_mut().enumerate().take(n) {
                    let s = &mut probs[r * padded..][..real];
                    let max = max(s);
                    for x in s.iter_mut() {
                        *x = exp(*x - max);
                    }
                    *inv = 1.0 / sum(s);
                    probs[r * padded + real..(r + 1) * padded].fill(0.0);
                }
                // Weighted sums of values: probabilities · values.
                rows_times(simd, &probs, padded, &values, &no_columns, &mut sums);
                for r in 0..n {
                    let o = &mut out[(first + r) * hidden + q_off..][..hd];
                    for (o, &s) in o.iter_mut().zip(&sums[r * hd..][..hd]) {
                        *o = s * inv[r];
                    }
                }
            }
        }
    }
}

/// `out = x · wt` for [`QUERIES`] rows of `inputs` values, `wt` stored
/// `[inputs][width]` with `width = zeros.len()` a whole number of vectors: two
/// vectors of columns at a time, then one ([`outer_tile`] adds `zeros` as its bias).
#[inline(always)]
fn rows_times<S: pulp::Simd>(
    simd: S,
    x: &[f32],
    inputs: usize,
    wt: &[f32],
    zeros: &[f32],
    out: &mut [f32],
) {
    let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
    let width = zeros.len();
    let mut col = 0;
    while col + 2 * lanes <= width {
        outer_tile::<S, QUERIES, 2, 1>(simd, x, 0, inputs, wt, width, 0, zeros, col, out);
        col += 2 * lanes;
    }
    if col < width {
        outer_tile::<S, QUERIES, 1, 2>(simd, x, 0, inputs, wt, width, 0, zeros, col, out);
    }
}

/// Inputs with at most this many rows take [`SmallLinear`] instead of GEMM: where
/// they crossed on a 2-core AVX-512 box, batches of 10–12 queries of ~20 tokens
/// (`bench-embed --chunks` of eval queries; 8 queries: 249 against GEMM's 214 a
/// second, 16: 248 against 271).
pub(super) const SMALL_ROWS: usize = 192;

/// `x · Wᵀ + b` for a few rows (search queries): one pass over the weights.
///
/// GEMM packs the whole weight matrix on every call, which for a 7-token query
/// costs more than the arithmetic; here each block of 32 output columns is read
/// once, for every input row while it is in cache ([`OuterKernel`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct SmallLinear;

/// Output columns per parallel task.
const COLUMNS_PER_TASK: usize = 32;

impl CustomOp3 for SmallLinear {
    fn name(&self) -> &'static str {
        "cpu-small-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (
            f32_input(x, x_layout, self.name())?,
            f32_input(b, b_layout, self.name())?,
        );
        let (rows, inputs) = x_layout.shape().dims2()?;
        let (outputs, w_inputs) = w_layout.shape().dims2()?;
        if w_inputs != inputs || b.len() != outputs {
            candle_core::bail!(
                "cpu-small-linear: [{rows}, {inputs}] · [{outputs}, {w_inputs}]ᵀ + [{}]",
                b.len()
            );
        }
        // `Bert::load` stores the weights of the fused CPU path as `[in, out]`
        // (the `[out, in]` weight is its transpose, a view), which the kernel
        // reads without horizontal sums. A plain `[out, in]` weight (other
        // callers, tests) is transposed into a copy first.
        let w_transposed = w_layout.transpose(0, 1)?;
        let copied: Vec<f32>;
        let wt: &[f32] = if w_transposed.is_contiguous() {
            f32_input(w, &w_transposed, self.name())?
        } else if w_layout.is_contiguous() {
            let w = f32_input(w, w_layout, self.name())?;
            copied = (0..inputs * outputs)
                .map(|i| w[(i % outputs) * inputs + i / outputs])
                .collect();
            &copied
        } else {
            candle_core::bail!("cpu-small-linear: the weight must be contiguous or its transpose");
        };
        let blocks: Vec<Vec<f32>> = b
            .par_chunks(COLUMNS_PER_TASK)
            .enumerate()
            .map(|(block, b)| {
                pulp::Arch::new().dispatch(OuterKernel {
                    x,
                    wt,
                    b,
                    inputs,
                    outputs,
                    first: block * COLUMNS_PER_TASK,
                })
            })
            .collect();
        let mut out = vec![0f32; rows * outputs];
        for (block, cols) in blocks.iter().enumerate() {
            let width = cols.len() / rows.max(1);
            for (r, row) in cols.chunks_exact(width.max(1)).enumerate() {
                out[r * outputs + block * COLUMNS_PER_TASK..][..width].copy_from_slice(row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }
}

/// One block of output columns, `first..first + b.len()`, from weights stored
/// `[in, out]`: each step broadcasts one input of a row and multiplies it into
/// whole vectors of outputs, so sums stay in vector lanes (the dot-product
/// kernel's horizontal sum per output was a quarter of its work at 384 inputs).
struct OuterKernel<'a> {
    x: &'a [f32],
    wt: &'a [f32],
    b: &'a [f32],
    inputs: usize,
    outputs: usize,
    first: usize,
}

impl pulp::WithSimd for OuterKernel<'_> {
    /// `[rows][columns of this block]`.
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        let Self {
            x,
            wt,
            b,
            inputs,
            outputs,
            first,
        } = self;
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        let rows = x.len() / inputs;
        let width = b.len();
        let mut out = vec![0f32; rows * width];
        let full_rows = rows - rows % 4;
        // Columns in groups of two vectors, then one, then one at a time. Fewer
        // than four rows split the inputs among more accumulators instead
        // (`U`): two chains of dependent multiply-adds leave the core waiting.
        let mut col = 0;
        while col + 2 * lanes <= width {
            for r in (0..full_rows).step_by(4) {
                outer_tile::<S, 4, 2, 1>(simd, x, r, inputs, wt, outputs, first, b, col, &mut out);
            }
            let r = full_rows;
            match rows - full_rows {
                3 => outer_tile::<S, 3, 2, 2>(
                    simd, x, r, inputs, wt, outputs, first, b, col, &mut out,
                ),
                2 => outer_tile::<S, 2, 2, 2>(
                    simd, x, r, inputs, wt, outputs, first, b, col, &mut out,
                ),
                1 => outer_tile::<S, 1, 2, 4>(
                    simd, x, r, inputs, wt, outputs, first, b, col, &mut out,
                ),
                _ => {}
            }
            col += 2 * lanes;
        }
        while col + lanes <= width {
            for r in 0..rows {
                outer_tile::<S, 1, 1, 4>(simd, x, r, inputs, wt, outputs, first, b, col, &mut out);
            }
            col += lanes;
        }
        for c in col..width {
            for r in 0..rows {
                let xr = &x[r * inputs..][..inputs];
                let mut sum = b[c];
                for (k, &xv) in xr.iter().enumerate() {
                    sum += xv * wt[k * outputs + first + c];
                }
                out[r * width + c] = sum;
            }
        }
        out
    }
}

/// Rows `r..r + R` × `C` vectors of this block's columns from `col`: `U × R × C`
/// accumulators held in registers across all inputs (input `k` goes to the
/// `k % U`-th), summed and added to the bias at the end.
///
/// Plain loops, no closures: a closure does not inherit the SIMD target features,
/// and the intrinsics called inside one stop being inlined (a first version of
/// the query kernel with closures ran 6× slower).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer_tile<S: pulp::Simd, const R: usize, const C: usize, const U: usize>(
    simd: S,
    x: &[f32],
    r: usize,
    inputs: usize,
    wt: &[f32],
    outputs: usize,
    first: usize,
    b: &[f32],
    col: usize,
    out: &mut [f32],
) {
    let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
    let width = b.len();
    let mut acc = [[[simd.splat_f32s(0.0); C]; R]; U];
    let mut xs = [&[][..]; R];
    for (i, xr) in xs.iter_mut().enumerate() {
        *xr = &x[(r + i) * inputs..][..inputs];
    }
    let wt = &wt[..inputs * outputs];
    let whole = inputs - inputs % U;
    for k0 in (0..whole).step_by(U) {
        for (u, acc) in acc.iter_mut().enumerate() {
            let k = k0 + u;
            let w = S::as_simd_f32s(&wt[k * outputs + first + col..][..C * lanes]).0;
            for i in 0..R {
                let a = simd.splat_f32s(xs[i][k]);
                for j in 0..C {
                    acc[i][j] = simd.mul_add_e_f32s(a, w[j], acc[i][j]);
                }
            }
        }
    }
    for k in whole..inputs {
        let w = S::as_simd_f32s(&wt[k * outputs + first + col..][..C * lanes]).0;
        for i in 0..R {
            let a = simd.splat_f32s(xs[i][k]);
            for j in 0..C {
                acc[0][i][j] = simd.mul_add_e_f32s(a, w[j], acc[0][i][j]);
            }
        }
    }
    let bias = S::as_simd_f32s(&b[col..][..C * lanes]).0;
    for i in 0..R {
        let dst = S::as_mut_simd_f32s(&mut out[(r + i) * width + col..][..C * lanes]).0;
        for j in 0..C {
            let mut v = bias[j];
            for part in &acc {
                v = simd.add_f32s(v, part[i][j]);
            }
            dst[j] = v;
        }
    }
}

/// `out = scale · Σ_j weights[j] · rows[j]`, where row `j` is `out.len()` values
/// at `data[j·stride + offset..]`.
///
/// Sixteen lanes at a time with four accumulators held in registers: accumulating
/// into `out` in memory instead chains every step through a store and a reload.
#[inline(always)]
fn weighted_rows(
    out: &mut [f32],
    weights: &[f32],
    data: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
) {
    let width = out.len();
    let (out_chunks, out_rest) = out.as_chunks_mut::<16>();
    let (w_chunks, w_rest) = weights.as_chunks::<4>();
    for (c, o) in out_chunks.iter_mut().enumerate() {
        let base = offset + c * 16;
        let mut acc = [[0f32; 16]; 4];
        for (jc, w4) in w_chunks.iter().enumerate() {
            for u in 0..4 {
                let row = &data[(jc * 4 + u) * stride + base..][..16];
                for t in 0..16 {
                    acc[u][t] += w4[u] * row[t];
                }
            }
        }
        for (u, &w) in w_rest.iter().enumerate() {
            let row = &data[(w_chunks.len() * 4 + u) * stride + base..][..16];
            for t in 0..16 {
                acc[0][t] += w * row[t];
            }
        }
        for t in 0..16 {
            o[t] = (acc[0][t] + acc[1][t] + acc[2][t] + acc[3][t]) * scale;
        }
    }
    let done = width - out_rest.len();
    for (t, o) in out_rest.iter_mut().enumerate() {
        let col = offset + done + t;
        let dot: f32 = weights
            .iter()
            .enumerate()
            .map(|(j, &w)| w * data[j * stride + col])
            .sum();
        *o = dot * scale;
    }
}

fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        (CpuStorage::F32(_), None) => candle_core::bail!("{op}: input must be contiguous"),
        _ => candle_core::bail!("{op}: input must be f32"),
    }
}

/// Largest value, with sixteen lanes of comparisons, so it vectorises
/// (`f32::max` in a fold keeps NaN semantics that force one value at a time).
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let (chunks, rest) = xs.as_chunks::<16>();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// Sum with eight independent accumulators, so it vectorises.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (chunks, rest) = xs.as_chunks::<8>();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `erf` as a rational function on [-4, 4] (beyond that it is ±1 in f32): the
/// coefficients XLA and Eigen use; absolute error below 5e-7, and no branches or
/// table lookups, so a loop over it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

/// `exp` for x ≤ 0 (softmax after subtracting the max), Cephes' polynomial:
/// relative error about 2e-7, and branch-free so it vectorises.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    // 2ⁿ from its exponent bits: n + 127 is a whole number in 1..=127 here, and
    // adding 1.5 · 2²³ leaves it in the low byte of the mantissa, a form that
    // vectorises (`n as i32` went one value at a time).
    let biased = (n + 127.0 + 12_582_912.0).to_bits() & 0xff;
    y * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_reference(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.28 is too coarse to check against; integrate instead.
        let steps = 20_000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..steps {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate() {
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let err = (erf(x) as f64 - erf_reference(x as f64)).abs();
            assert!(err < 1e-6, "erf({x}) off by {err}");
        }
    }

    #[test]
    fn exp_is_accurate() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            assert!(rel < 1e-6, "exp({x}) off by {rel}");
        }
    }

    #[test]
    fn small_linear_matches_candle_matmul() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        // Whole tiles of 4 × 4, leftover rows and columns, inputs with a tail past
        // the sixteen lanes, a column block (128) with a partial tile.
        for (rows, inputs, outputs) in [
            (7, 40, 303),
            (4, 384, 384),
            (1, 16, 5),
            (32, 33, 130),
            (9, 384, 1536),
        ] {
            let x = Tensor::randn(0f32, 1.0, (rows, inputs), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (outputs, inputs), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, outputs, &dev).unwrap();
            let want = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            // `[out, in]` as stored, and `[in, out]` seen through its transpose (as
            // `Bert::load` keeps the weights of the fused CPU path).
            let stored_transposed = w.t().unwrap().contiguous().unwrap().t().unwrap();
            assert!(!stored_transposed.is_contiguous());
            for (layout, w) in [("[out, in]", &w), ("[in, out]", &stored_transposed)] {
                let got = x.apply_op3_no_bwd(w, &b, &SmallLinear).unwrap();
                let diff: f32 = (&want - got)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(
                    diff < 1e-3,
                    "{rows}×{inputs}·{outputs}, weights {layout}: max difference {diff}"
                );
            }
        }
    }

    #[test]
    fn tiled_attention_matches_the_one_query_kernel() {
        for (heads, head_dim, lens) in [(3, 32, vec![1, 5, 17, 40]), (2, 64, vec![33, 2, 16])] {
            let hidden = heads * head_dim;
            let (batch, len) = (lens.len(), *lens.iter().max().unwrap());
            let qkv: Vec<f32> = (0..batch * len * 3 * hidden)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
                .collect();
            let op = Attention {
                batch,
                len,
                packed: false,
                heads,
                head_dim,
                lens: lens.clone(),
                scale: 1.0 / (head_dim as f32).sqrt(),
            };
            for (b, &real) in lens.iter().enumerate() {
                let qkv = &qkv[b * len * 3 * hidden..][..len * 3 * hidden];
                let mut want = vec![0f32; len * hidden];
                let mut got = vec![0f32; len * hidden];
                let kernel = |out| AttentionKernel {
                    op: &op,
                    qkv,
                    out,
                    real,
                };
                pulp::Arch::new().dispatch(kernel(&mut want));
                pulp::Arch::new().dispatch(TiledAttention(kernel(&mut got)));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-4, "len {real}, value {i}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn packed_sequences_attend_as_padded_ones() {
        use candle_core::{Device, Tensor};
        let (heads, head_dim, lens) = (3, 32, vec![4, 17, 1, 9]);
        let hidden = heads * head_dim;
        let (batch, len) = (lens.len(), *lens.iter().max().unwrap());
        // Padding rows hold values too: they must not reach any real row.
        let padded: Vec<f32> = (0..batch * len * 3 * hidden)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let mut packed = Vec::new();
        for (b, &real) in lens.iter().enumerate() {
            packed.extend_from_slice(&padded[b * len * 3 * hidden..][..real * 3 * hidden]);
        }
        let op = |packed| Attention {
            batch,
            len,
            packed,
            heads,
            head_dim,
            lens: lens.clone(),
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        let run = |values: Vec<f32>, packed: bool| {
            let rows = values.len() / (3 * hidden);
            Tensor::from_vec(values, (rows, 3 * hidden), &Device::Cpu)
                .and_then(|t| t.apply_op1_no_bwd(&op(packed)))
                .and_then(|t| t.to_vec2::<f32>())
                .expect("attention runs")
        };
        let (want, got) = (run(padded, false), run(packed, true));
        assert_eq!(got.len(), lens.iter().sum::<usize>());
        let mut next = 0;
        for (b, &real) in lens.iter().enumerate() {
            for i in 0..real {
                assert_eq!(got[next], want[b * len + i], "sequence {b}, row {i}");
                next += 1;
            }
        }
    }

    #[test]
    fn weighted_rows_matches_the_naive_sum() {
        for width in [16, 32, 40, 7] {
            for n in [1, 3, 4, 9] {
                let stride = width + 5;
                let data: Vec<f32> = (0..n * stride + 3).map(|i| (i % 13) as f32 - 6.0).collect();
                let weights: Vec<f32> = (0..n).map(|j| 0.25 * j as f32 + 0.5).collect();
                let mut out = vec![0f32; width];
                weighted_rows(&mut out, &weights, &data, stride, 3, 0.5);
                for (d, &o) in out.iter().enumerate() {
                    let want: f32 = (0..n)
                        .map(|j| weights[j] * data[j * stride + 3 + d])
                        .sum::<f32>()
                        * 0.5;
                    assert!(
                        (o - want).abs() < 1e-4,
                        "width {width} n {n} col {d}: {o} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn add_norm_matches_candles_add_and_layer_norm() {
        use candle_core::{Device, Module, Tensor};
        let dev = Device::Cpu;
        // 150 rows: two full tasks of 64 and a short one; 388 columns: a tail
        // beyond the eight lanes.
        let (rows, hidden) = (150, 388);
        let y = Tensor::randn(0f32, 3.0, (rows, hidden), &dev).unwrap();
        let x = (Tensor::randn(0f32, 1.0, (rows, hidden), &dev).unwrap() + 5.0).unwrap();
        let weight = Tensor::randn(1f32, 0.1, hidden, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.1, hidden, &dev).unwrap();
        let norm = candle_nn::LayerNorm::new(weight.clone(), bias.clone(), 1e-12);
        let want: Vec<f32> = norm
            .forward(&(&y + &x).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let params = Tensor::stack(&[&weight, &bias], 0).unwrap();
        let got = y.copy().unwrap();
        got.inplace_op3(&x, &params, &AddNorm { eps: 1e-12 })
            .unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-4, "{i}: {g} vs {w}");
        }
        // Shapes that do not fit are errors, not panics.
        let short = Tensor::zeros((rows, hidden - 1), candle_core::DType::F32, &dev).unwrap();
        assert!(
            short
                .inplace_op3(&x, &params, &AddNorm { eps: 1e-12 })
                .is_err()
        );
    }

    #[test]
    fn sum_matches_iterator_sum() {
        let xs: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5).collect();
        assert_eq!(sum(&xs), xs.iter().sum::<f32>());
    }
}
