//! int8 dense layers for document batches on the CPU (dynamic quantization).
//!
//! The dense layers are about 85 % of an encoder's arithmetic. CPUs with
//! dot-product instructions for bytes (AVX-512 VNNI: Ice Lake and later Xeons,
//! Zen 4 and later; AVX-VNNI on 256-bit registers: Alder Lake and later client
//! cores) do four times as many multiply-adds per instruction on int8 as on
//! f32, so indexing quantizes those layers:
//!
//! - weights once at load, symmetric per output column (`max |w| / 127`);
//! - activations as they arrive, with a scale per row and per group of 64
//!   inputs (`max |x| / 127` over the group), so nothing is calibrated ahead,
//!   no input can fall outside its range, and the few outlier channels of a
//!   LayerNorm or GELU output cost precision only within their own group (one
//!   scale per row gave a mean cosine to f32 of 0.9980 on the reference
//!   chunks, groups of 64 give 0.9993);
//! - sums in i32 within a group, exact, then scaled into f32 sums, and the
//!   column's scale and bias applied as the kernel stores them.
//!
//! Attention, GELU, LayerNorm and pooling stay f32, and queries never come
//! here: a query is embedded in f32, as the documents' vectors were before.
//! The kernel is picked at run time ([`Kernel::detect`]). `embedding.precision:
//! auto` takes int8 where the CPU has byte dot products (AVX-512 VNNI or
//! AVX-VNNI: cold indexing about twice as fast, both eval sets within 0.01 of
//! f32, docs/BENCHMARKS.md) and f32 elsewhere, where int8 is no faster.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output columns per packed block: one AVX-512 register of sums.
const BLOCK: usize = 16;
/// Inputs per activation scale.
const GROUP: usize = 64;
/// Rows per parallel task: enough to reuse each weight block from cache, small
/// enough that a 4,096-token batch spreads over every core, and a whole number
/// of the VNNI kernel's six-row tiles (with 64, the four rows left in every task
/// took the one-row tile and about half the kernel's time).
const ROWS_PER_TASK: usize = 96;

/// The integer kernels this CPU can run, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512 with VNNI's `vpdpbusd` (u8 × i8 → i32, 64 per instruction).
    Vnni512,
    /// AVX-VNNI: the same instruction on 256-bit registers (32 per
    /// instruction), on CPUs without AVX-512: Intel's Alder Lake and later
    /// client cores, Sierra Forest.
    AvxVnni,
    /// AVX2 only: `vpmaddwd` on inputs and weights widened to 16 bits (16
    /// multiply-adds per instruction, twice an f32 FMA's eight).
    Avx2,
    /// Any CPU: the reference the others are tested against.
    Scalar,
}

impl Kernel {
    /// The best kernel this CPU runs. `CODESEARCH_INT8_KERNEL=avxvnni|avx2|scalar`
    /// picks a lesser one, to measure what a CPU without AVX-512 or VNNI gets.
    pub(crate) fn detect() -> Self {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            let best = Self::best_available();
            match std::env::var(crate::config::ENV_INT8_KERNEL)
                .ok()
                .as_deref()
            {
                Some("scalar") => Self::Scalar,
                Some("avxvnni") if Self::AvxVnni.runs_here() => Self::AvxVnni,
                Some("avx2") if best != Self::Scalar => Self::Avx2,
                _ => best,
            }
        })
    }

    fn best_available() -> Self {
        [Self::Vnni512, Self::AvxVnni, Self::Avx2]
            .into_iter()
            .find(|k| k.runs_here())
            .unwrap_or(Self::Scalar)
    }

    /// Whether this CPU has the kernel's instructions (FMA too for the 256-bit
    /// ones, which scale the group sums with it): what detection picks by, and
    /// what the SIMD entry point checks before it runs one.
    fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Self::Vnni512 => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
                Self::AvxVnni => {
                    is_x86_feature_detected!("avxvnni")
                        && is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("fma")
                }
                Self::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                Self::Scalar => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        matches!(self, Self::Scalar)
    }

    /// Whether int8 documents are worth it here: always with byte dot products;
    /// with AVX2 alone where [`avx2_beats_f32`] measured it; never with the
    /// scalar reference, which is far slower.
    pub(crate) fn is_fast(self) -> bool {
        match self {
            Self::Vnni512 | Self::AvxVnni => true,
            Self::Avx2 => avx2_beats_f32(),
            Self::Scalar => false,
        }
    }

    /// Whether the kernel multiplies unsigned inputs (`q + 128`) by signed weights.
    fn unsigned(self) -> bool {
        matches!(self, Self::Vnni512 | Self::AvxVnni)
    }
}

/// Whether the AVX2 kernel is clearly faster than candle's f32 GEMM on this CPU,
/// timed once per process on a layer of the encoder's feed-forward shape.
///
/// `vpmaddwd` does sixteen multiply-adds an instruction to an f32 FMA's eight,
/// but where it has one execution port (Haswell, Zen 2, by their manuals) and
/// FMA two, that is no gain, and the quantizing costs on top. Which CPUs have
/// two is not something a feature flag says, so this measures: both paths on
/// 1,024 rows × 384 inputs × 1,536 outputs (604 M multiply-adds; a CPU batch is
/// about 4,096 rows, and with a few hundred f32's GEMM is less efficient and the
/// comparison misleads), the best of five runs each, int8 kept where it is at
/// least 1.25× faster (tens of milliseconds, once).
fn avx2_beats_f32() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| match avx2_against_f32() {
        Ok((int8, f32)) => {
            let fast = int8.as_secs_f64() * 1.25 <= f32.as_secs_f64();
            tracing::info!(
                int8_ms = int8.as_secs_f64() * 1e3,
                f32_ms = f32.as_secs_f64() * 1e3,
                int8_documents = fast,
                "AVX2 without byte dot products: int8 dense layer timed against f32"
            );
            fast
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not time the AVX2 int8 kernel; documents stay f32");
            false
        }
    })
}

/// The best of five times of one dense layer in int8 (AVX2) and in f32.
fn avx2_against_f32() -> Result<(std::time::Duration, std::time::Duration)> {
    use candle_core::{Device, Module};
    let (rows, inputs, outputs) = (1024, 384, 1536);
    // Any values do: the time depends on the shapes alone.
    let values = |n: usize, seed: u32| -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    let dev = Device::Cpu;
    let w = Tensor::from_vec(values(outputs * inputs, 7), (outputs, inputs), &dev)?;
    let b = Tensor::from_vec(values(outputs, 11), outputs, &dev)?;
    let x = values(rows * inputs, 13);
    let xt = Tensor::from_vec(x.clone(), (rows, inputs), &dev)?;
    let Some(layer) = QuantLinear::for_kernel(&w, Some(&b), Kernel::Avx2)? else {
        candle_core::bail!("the timing layer does not pack");
    };
    let linear = candle_nn::Linear::new(w, Some(b));
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<std::time::Duration> {
        f()?; // warm: the first run faults the pages in
        let mut best = std::time::Duration::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            f()?;
            best = best.min(t.elapsed());
        }
        Ok(best)
    };
    let int8 = best(&mut || {
        std::hint::black_box(layer.forward(&x, Kernel::Avx2));
        Ok(())
    })?;
    let f32 = best(&mut || {
        std::hint::black_box(linear.forward(&xt)?);
        Ok(())
    })?;
    Ok((int8, f32))
}

/// A dense layer `x · Wᵀ + b` with its weights quantized to int8.
#[derive(Debug)]
pub(super) struct QuantLinear {
    inputs: usize,
    outputs: usize,
    /// `[outputs / 16][inputs / 4][16 columns][4 inputs]`: one 64-byte load
    /// holds four consecutive inputs of sixteen columns, the order `vpdpbusd` sums.
    packed: Vec<i8>,
    /// For the AVX2 kernel only (else empty), the same weights widened to 16
    /// bits, `[outputs / 16][inputs / 2][16 columns][2 inputs]`: the pairs
    /// `vpmaddwd` sums, 64 bytes a step as in `packed`.
    wide: Vec<i16>,
    /// Per output column, what one unit of its quantized weights is worth.
    scales: Vec<f32>,
    /// `[groups][outputs]`: per group of inputs and output column, `−128 · Σ q`.
    /// The VNNI kernel feeds activations as `q + 128` (unsigned), which adds
    /// `128 · Σ q` to the group's i32 sum, so each group's sum starts here.
    offsets: Vec<i32>,
    bias: Vec<f32>,
}

impl QuantLinear {
    /// Quantizes a layer for this CPU's kernel; `None` where its shape does not
    /// fit the packing (outputs a multiple of 16, inputs of 4), which then stays f32.
    pub(super) fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        Self::for_kernel(weight, bias, Kernel::detect())
    }

    /// [`QuantLinear::new`], packed for `kernel`.
    fn for_kernel(weight: &Tensor, bias: Option<&Tensor>, kernel: Kernel) -> Result<Option<Self>> {
        let (outputs, inputs) = weight.dims2()?;
        if outputs % BLOCK != 0 || inputs % 4 != 0 || inputs == 0 || outputs == 0 {
            return Ok(None);
        }
        let w: Vec<f32> = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bias: Vec<f32> = match bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1()?,
            None => vec![0.0; outputs],
        };
        if bias.len() != outputs {
            candle_core::bail!("int8 linear: {} biases for {outputs} outputs", bias.len());
        }
        let groups = inputs.div_ceil(GROUP);
        let mut packed = vec![0i8; outputs * inputs];
        let mut scales = Vec::with_capacity(outputs);
        let mut offsets = vec![0i32; groups * outputs];
        for (c, row) in w.chunks_exact(inputs).enumerate() {
            let max = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            for (k, &v) in row.iter().enumerate() {
                let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                offsets[(k / GROUP) * outputs + c] -= 128 * i32::from(q);
                packed
                    [((c / BLOCK) * (inputs / 4) + k / 4) * BLOCK * 4 + (c % BLOCK) * 4 + k % 4] =
                    q;
            }
            scales.push(scale);
        }
        let wide = if kernel == Kernel::Avx2 {
            widen(&packed, inputs)
        } else {
            Vec::new()
        };
        Ok(Some(Self {
            inputs,
            outputs,
            packed,
            wide,
            scales,
            offsets,
            bias,
        }))
    }

    fn groups(&self) -> usize {
        self.inputs.div_ceil(GROUP)
    }

    /// `[rows, inputs]` f32 in, `[rows, outputs]` f32 out, with `kernel`.
    fn forward(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        let (inputs, outputs, groups) = (self.inputs, self.outputs, self.groups());
        let rows = x.len() / inputs;
        // Not zeroed: every kernel stores every output (zeroing a fresh
        // `[tokens, outputs]` buffer took 8 % of an int8 index pass, page faults included).
        let mut out = Vec::with_capacity(rows * outputs);
        out.spare_capacity_mut()[..rows * outputs]
            .par_chunks_mut(ROWS_PER_TASK * outputs)
            .zip(x.par_chunks(ROWS_PER_TASK * inputs))
            .for_each(|(out, x)| {
                let n = x.len() / inputs;
                // VNNI multiplies unsigned by signed bytes: activations go in as q + 128.
                let unsigned = kernel.unsigned();
                let mut q = vec![0u8; n * inputs];
                let mut row_scales = vec![0f32; n * groups];
                pulp::Arch::new().dispatch(Quantize {
                    x,
                    q: &mut q,
                    scales: &mut row_scales,
                    inputs,
                    flip: if unsigned { 0x80 } else { 0 },
                });
                // AVX2 multiplies 16-bit values: the rows widened once here, not
                // at each of the layer's column blocks.
                let wide: Vec<i16> = if kernel == Kernel::Avx2 {
                    q.iter().map(|&b| i16::from(b as i8)).collect()
                } else {
                    Vec::new()
                };
                self.products(&q, &wide, &row_scales, n, out, kernel);
            });
        written(out, rows * outputs)
    }

    /// `out[r][c] = w_scale[c] · Σ_g scale[r][g] · Σ_{k in g} q[r][k] · w[c][k] + bias[c]`
    /// for the `n` quantized rows in `q`.
    /// `wide`: the rows of `q` widened to 16 bits, for the AVX2 kernel.
    fn products(
        &self,
        q: &[u8],
        wide: &[i16],
        scales: &[f32],
        n: usize,
        out: &mut [MaybeUninit<f32>],
        kernel: Kernel,
    ) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni512 | Kernel::AvxVnni | Kernel::Avx2 => {
                x86::products(self, q, wide, scales, n, out, kernel)
            }
            _ => self.products_scalar(q, scales, n, out),
        }
    }

    fn products_scalar(&self, q: &[u8], scales: &[f32], n: usize, acc: &mut [MaybeUninit<f32>]) {
        let (inputs, outputs, groups) = (self.inputs, self.outputs, self.groups());
        for r in 0..n {
            let x = &q[r * inputs..][..inputs];
            for c in 0..outputs {
                let block = &self.packed[(c / BLOCK) * inputs * BLOCK..][..inputs * BLOCK];
                let mut total = 0f32;
                for (g, x) in x.chunks(GROUP).enumerate() {
                    let mut sum = 0i32;
                    for (i, &xk) in x.iter().enumerate() {
                        let k = g * GROUP + i;
                        let w = block[(k / 4) * BLOCK * 4 + (c % BLOCK) * 4 + k % 4];
                        sum += i32::from(xk as i8) * i32::from(w);
                    }
                    total += sum as f32 * scales[r * groups + g];
                }
                acc[r * outputs + c].write(total * self.scales[c] + self.bias[c]);
            }
        }
    }
}

/// `packed` (`[blocks][inputs / 4][16][4]` bytes) as `[blocks][inputs / 2][16][2]`
/// values of 16 bits.
fn widen(packed: &[i8], inputs: usize) -> Vec<i16> {
    let mut wide = vec![0i16; packed.len()];
    for (wide, block) in wide
        .chunks_exact_mut(inputs * BLOCK)
        .zip(packed.chunks_exact(inputs * BLOCK))
    {
        for k in 0..inputs {
            for c in 0..BLOCK {
                wide[(k / 2) * BLOCK * 2 + c * 2 + k % 2] =
                    i16::from(block[(k / 4) * BLOCK * 4 + c * 4 + k % 4]);
            }
        }
    }
    wide
}

/// `out` with its first `len` values, which the caller wrote through its spare
/// capacity.
#[allow(unsafe_code)]
fn written(mut out: Vec<f32>, len: usize) -> Vec<f32> {
    assert!(out.capacity() >= len);
    // SAFETY: the capacity holds `len` values, and `QuantLinear::forward` stored
    // every one of them: its tasks cover all rows, and each kernel every column
    // of its rows (`every_kernel_gives_the_same_sums` compares them all).
    unsafe { out.set_len(len) };
    out
}

/// Quantizes rows to `round(x / s)` in -127..=127 (stored as bytes, xor
/// `flip`), with `s = max |x| / 127` per row and group of [`GROUP`] inputs;
/// compiled for the CPU's vector width.
struct Quantize<'a> {
    x: &'a [f32],
    q: &'a mut [u8],
    /// `[rows][groups]`.
    scales: &'a mut [f32],
    inputs: usize,
    flip: u8,
}

impl pulp::WithSimd for Quantize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            x,
            q,
            scales,
            inputs,
            flip,
        } = self;
        let groups = inputs.div_ceil(GROUP);
        for ((q, x), s) in q
            .chunks_exact_mut(inputs)
            .zip(x.chunks_exact(inputs))
            .zip(scales.chunks_exact_mut(groups))
        {
            for ((q, x), s) in q.chunks_mut(GROUP).zip(x.chunks(GROUP)).zip(s) {
                let (max, finite) = abs_max(x);
                if !finite {
                    // A NaN or infinity makes the row NaN, as f32 would.
                    q.fill(flip);
                    *s = f32::NAN;
                    continue;
                }
                if max < f32::MIN_POSITIVE {
                    // Zeros (or values too small for `127 / max` to stay finite) add nothing.
                    q.fill(flip);
                    *s = 0.0;
                    continue;
                }
                let inv = 127.0 / max;
                for (q, &v) in q.iter_mut().zip(x) {
                    // |v · inv| ≤ 127, so adding 1.5 · 2²³ rounds it to the nearest
                    // integer (ties to even, as `round_ties_even`) and leaves that
                    // integer's two's complement in the low byte of the mantissa: a
                    // form that vectorises, where `as i32` goes one value at a time.
                    *q = ((v * inv + ROUNDING).to_bits() as u8) ^ flip;
                }
                *s = max / 127.0;
            }
        }
    }
}

/// 1.5 · 2²³: see [`Quantize`].
const ROUNDING: f32 = 12_582_912.0;

/// The largest `|x|`, and whether every value is finite; in sixteen lanes so it
/// vectorises (a fold that keeps NaN semantics goes one value at a time).
#[inline(always)]
fn abs_max(x: &[f32]) -> (f32, bool) {
    let mut max = [0f32; 16];
    // `v · 0` is ±0 for a finite value and NaN for a NaN or an infinity.
    let mut poison = [0f32; 16];
    let (chunks, rest) = x.as_chunks::<16>();
    for c in chunks {
        for ((m, p), &v) in max.iter_mut().zip(&mut poison).zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
            *p += v * 0.0;
        }
    }
    let mut finite = poison.iter().all(|p| !p.is_nan());
    let mut largest = max.iter().fold(0f32, |m, &a| m.max(a));
    for &v in rest {
        finite &= v.is_finite();
        largest = largest.max(v.abs());
    }
    (largest, finite)
}

impl CustomOp1 for QuantLinear {
    fn name(&self) -> &'static str {
        "cpu-int8-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("cpu-int8-linear: input must be contiguous f32"),
        };
        let (rows, inputs) = layout.shape().dims2()?;
        if inputs != self.inputs {
            candle_core::bail!(
                "cpu-int8-linear: [{rows}, {inputs}] in, weights take {}",
                self.inputs
            );
        }
        let out = self.forward(x, Kernel::detect());
        Ok((CpuStorage::F32(out), Shape::from((rows, self.outputs))))
    }
}

/// The SIMD kernels: the only `unsafe` here (intrinsics and raw pointers),
/// behind safe functions that check the CPU and the slice lengths first.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{BLOCK, GROUP, Kernel, QuantLinear};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `q` holds `n` rows of `layer.inputs` bytes (as `q + 128` for the VNNI
    /// kernels), `wide` the same rows in 16 bits for the AVX2 kernel, `scales`
    /// their `[n][groups]` scales; `acc` receives `n` rows of `layer.outputs`
    /// outputs. Panics on a CPU without the kernel's features, and for
    /// [`Kernel::Scalar`], which has no tiles here.
    pub(super) fn products(
        layer: &QuantLinear,
        q: &[u8],
        wide: &[i16],
        scales: &[f32],
        n: usize,
        acc: &mut [MaybeUninit<f32>],
        kernel: Kernel,
    ) {
        assert!(
            kernel.runs_here(),
            "{kernel:?} needs instructions this CPU lacks"
        );
        let (width, tile) = match kernel {
            Kernel::Vnni512 => (2, Tile::Vnni),
            Kernel::AvxVnni => (1, Tile::AvxVnni),
            Kernel::Avx2 => {
                assert!(
                    wide.len() >= n * layer.inputs
                        && layer.wide.len() == layer.inputs * layer.outputs
                );
                (1, Tile::Avx2)
            }
            Kernel::Scalar => panic!("the scalar int8 kernel has no SIMD tiles"),
        };
        check(layer, q, scales, n, acc);
        // SAFETY: the features are present and the lengths fit (checked above).
        unsafe { tiles(layer, q, wide, scales, n, acc, width, tile) }
    }

    fn check(layer: &QuantLinear, q: &[u8], scales: &[f32], n: usize, acc: &[MaybeUninit<f32>]) {
        assert!(
            q.len() >= n * layer.inputs
                && scales.len() >= n * layer.groups()
                && acc.len() >= n * layer.outputs
                && layer.packed.len() == layer.inputs * layer.outputs
                && layer.offsets.len() == layer.groups() * layer.outputs
                && layer.scales.len() == layer.outputs
                && layer.bias.len() == layer.outputs
                && layer.inputs.is_multiple_of(4)
                && layer.outputs.is_multiple_of(BLOCK)
        );
    }

    #[derive(Clone, Copy)]
    enum Tile {
        Vnni,
        AvxVnni,
        Avx2,
    }

    /// Row tile height of each kernel, at most.
    const VNNI_ROWS: usize = 6;
    /// Sixteen registers: 4 rows × 2 halves of sums, their f32 totals spilled
    /// by the compiler and touched once a group (the AVX2 tile the same).
    const AVX_VNNI_ROWS: usize = 4;
    const AVX2_ROWS: usize = 4;

    /// Walks the output in tiles: up to `width` blocks of 16 columns (2, then 1,
    /// for VNNI; four blocks spilled the f32 sums and ran 30 % slower) by up to
    /// the kernel's rows.
    ///
    /// # Safety
    /// The CPU has the kernel's features; the lengths passed `check`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles(
        layer: &QuantLinear,
        q: &[u8],
        wide: &[i16],
        scales: &[f32],
        n: usize,
        acc: &mut [MaybeUninit<f32>],
        width: usize,
        tile: Tile,
    ) {
        let (inputs, outputs, groups) = (layer.inputs, layer.outputs, layer.groups());
        let blocks = outputs / BLOCK;
        let mut b = 0;
        while b < blocks {
            let v = if width >= 2 && blocks - b >= 2 { 2 } else { 1 };
            let mut r = 0;
            while r < n {
                let max = match tile {
                    Tile::Vnni => VNNI_ROWS,
                    Tile::AvxVnni => AVX_VNNI_ROWS,
                    Tile::Avx2 => AVX2_ROWS,
                };
                let rows = (n - r).min(max);
                // SAFETY: every offset stays inside the slices `check` measured:
                // rows r..r+rows < n, blocks b..b+v ≤ outputs / 16.
                unsafe {
                    // The AVX2 tile reads the 16-bit rows and weights: the same
                    // element offsets, twice the bytes.
                    let (x, w, row_bytes) = match tile {
                        Tile::Avx2 => (
                            wide.as_ptr().add(r * inputs).cast::<u8>(),
                            layer.wide.as_ptr().add(b * inputs * BLOCK).cast::<i8>(),
                            2 * inputs,
                        ),
                        _ => (
                            q.as_ptr().add(r * inputs),
                            layer.packed.as_ptr().add(b * inputs * BLOCK),
                            inputs,
                        ),
                    };
                    let t = Args {
                        x,
                        s: scales.as_ptr().add(r * groups),
                        w,
                        offsets: layer.offsets.as_ptr().add(b * BLOCK),
                        col_scales: layer.scales.as_ptr().add(b * BLOCK),
                        bias: layer.bias.as_ptr().add(b * BLOCK),
                        out: acc.as_mut_ptr().cast::<f32>().add(r * outputs + b * BLOCK),
                        inputs,
                        row_bytes,
                        groups,
                        outputs,
                    };
                    match (tile, v) {
                        (Tile::Vnni, 2) => vnni_rows::<2>(rows, t),
                        (Tile::Vnni, _) => vnni_rows::<1>(rows, t),
                        (Tile::AvxVnni, _) if rows == AVX_VNNI_ROWS => {
                            avx_vnni_tile::<AVX_VNNI_ROWS>(t)
                        }
                        (Tile::AvxVnni, _) => (0..rows).for_each(|i| avx_vnni_tile::<1>(t.row(i))),
                        (Tile::Avx2, _) if rows == AVX2_ROWS => avx2_tile::<AVX2_ROWS>(t),
                        (Tile::Avx2, _) => (0..rows).for_each(|i| avx2_tile::<1>(t.row(i))),
                    }
                }
                r += rows;
            }
            b += v;
        }
    }

    /// `rows` (1 to 6) rows × `V` blocks. The last rows of a batch take a shorter
    /// tile, not one row at a time: a one-row tile has too few chains of
    /// dependent sums to keep the multiply units busy.
    ///
    /// # Safety
    /// As [`vnni_tile`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_rows<const V: usize>(rows: usize, t: Args) {
        unsafe {
            match rows {
                6 => vnni_tile::<6, V>(t),
                5 => vnni_tile::<5, V>(t),
                4 => vnni_tile::<4, V>(t),
                3 => vnni_tile::<3, V>(t),
                2 => vnni_tile::<2, V>(t),
                _ => vnni_tile::<1, V>(t),
            }
        }
    }

    /// Where one tile reads and writes.
    #[derive(Clone, Copy)]
    struct Args {
        /// Its first row of quantized inputs (bytes, or 16-bit values for AVX2).
        x: *const u8,
        /// That row's group scales.
        s: *const f32,
        /// Its first block of packed weights.
        w: *const i8,
        /// That block's `−128 · Σ q` for its first group (`outputs` apart per group).
        offsets: *const i32,
        /// That block's column scales and biases.
        col_scales: *const f32,
        bias: *const f32,
        /// Its first sum.
        out: *mut f32,
        inputs: usize,
        /// From one row of `x` to the next.
        row_bytes: usize,
        groups: usize,
        outputs: usize,
    }

    impl Args {
        /// The same tile `i` rows further down.
        unsafe fn row(self, i: usize) -> Self {
            unsafe {
                Self {
                    x: self.x.add(i * self.row_bytes),
                    s: self.s.add(i * self.groups),
                    out: self.out.add(i * self.outputs),
                    ..self
                }
            }
        }
    }

    /// `R` rows × `V` blocks of 16 columns: i32 sums per group in registers, less
    /// what the unsigned inputs added, scaled into f32 sums (also in registers) at
    /// each group's end; stored scaled by column and with the bias.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_tile<const R: usize, const V: usize>(t: Args) {
        let block_bytes = t.inputs * BLOCK;
        let steps = t.inputs / 4;
        let mut total = [[_mm512_setzero_ps(); V]; R];
        for g in 0..t.groups {
            let mut start = [_mm512_setzero_si512(); V];
            for (v, start) in start.iter_mut().enumerate() {
                *start =
                    unsafe { _mm512_loadu_si512(t.offsets.add(g * t.outputs + v * BLOCK).cast()) };
            }
            let mut acc = [start; R];
            for k in g * GROUP / 4..((g + 1) * GROUP / 4).min(steps) {
                let mut wv = [_mm512_setzero_si512(); V];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = unsafe { _mm512_loadu_si512(t.w.add(v * block_bytes + k * 64).cast()) };
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_epi32(unsafe {
                        t.x.add(r * t.row_bytes + k * 4)
                            .cast::<i32>()
                            .read_unaligned()
                    });
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm512_dpbusd_epi32(*acc, xb, wv);
                    }
                }
            }
            for (r, (total, acc)) in total.iter_mut().zip(&acc).enumerate() {
                let s = _mm512_set1_ps(unsafe { *t.s.add(r * t.groups + g) });
                for (total, &acc) in total.iter_mut().zip(acc) {
                    *total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, *total);
                }
            }
        }
        for v in 0..V {
            let (scale, bias) = unsafe {
                (
                    _mm512_loadu_ps(t.col_scales.add(v * BLOCK)),
                    _mm512_loadu_ps(t.bias.add(v * BLOCK)),
                )
            };
            for (r, total) in total.iter().enumerate() {
                let out = _mm512_fmadd_ps(total[v], scale, bias);
                unsafe { _mm512_storeu_ps(t.out.add(r * t.outputs + v * BLOCK), out) };
            }
        }
    }

    /// [`vnni_tile`] on 256-bit registers: `R` rows × one block of 16 columns
    /// (two registers of eight sums).
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn avx_vnni_tile<const R: usize>(t: Args) {
        let steps = t.inputs / 4;
        let mut total = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..t.groups {
            let start = unsafe {
                [
                    _mm256_loadu_si256(t.offsets.add(g * t.outputs).cast()),
                    _mm256_loadu_si256(t.offsets.add(g * t.outputs + 8).cast()),
                ]
            };
            let mut acc = [start; R];
            for k in g * GROUP / 4..((g + 1) * GROUP / 4).min(steps) {
                let w0 = unsafe { _mm256_loadu_si256(t.w.add(k * 64).cast()) };
                let w1 = unsafe { _mm256_loadu_si256(t.w.add(k * 64 + 32).cast()) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32(unsafe {
                        t.x.add(r * t.row_bytes + k * 4)
                            .cast::<i32>()
                            .read_unaligned()
                    });
                    acc[0] = _mm256_dpbusd_avx_epi32(acc[0], xb, w0);
                    acc[1] = _mm256_dpbusd_avx_epi32(acc[1], xb, w1);
                }
            }
            unsafe { add_group_256(&mut total, &acc, t, g) };
        }
        unsafe { store_256(&total, t) };
    }

    /// Adds a group's i32 sums, times each row's scale for the group, to the f32
    /// totals (the 256-bit tiles).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn add_group_256<const R: usize>(
        total: &mut [[__m256; 2]; R],
        acc: &[[__m256i; 2]; R],
        t: Args,
        g: usize,
    ) {
        for (r, (total, acc)) in total.iter_mut().zip(acc).enumerate() {
            let s = _mm256_set1_ps(unsafe { *t.s.add(r * t.groups + g) });
            for (total, &acc) in total.iter_mut().zip(acc) {
                *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, *total);
            }
        }
    }

    /// Stores `total · column scale + bias` (the 256-bit tiles).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_256<const R: usize>(total: &[[__m256; 2]; R], t: Args) {
        for v in 0..2 {
            let (scale, bias) = unsafe {
                (
                    _mm256_loadu_ps(t.col_scales.add(v * 8)),
                    _mm256_loadu_ps(t.bias.add(v * 8)),
                )
            };
            for (r, total) in total.iter().enumerate() {
                let out = _mm256_fmadd_ps(total[v], scale, bias);
                unsafe { _mm256_storeu_ps(t.out.add(r * t.outputs + v * 8), out) };
            }
        }
    }

    /// `R` rows × one block of 16 columns (two registers of eight sums), on
    /// inputs and weights widened to 16 bits: `vpmaddwd` multiplies pairs and
    /// adds each pair into an i32 lane (exact: 2 · 127² per step, 32 steps a
    /// group). `vpmaddubsw` on the bytes does twice the products an instruction
    /// but needs a second one to widen its sums, and it saturates at 16 bits
    /// unless one side loses a bit (weights of 7 bits cost the reference chunks'
    /// cosine to f32 0.998 → 0.995); this is as fast and as exact as the VNNI kernels.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tile<const R: usize>(t: Args) {
        let steps = t.inputs / 2;
        let mut total = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..t.groups {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for k in g * GROUP / 2..((g + 1) * GROUP / 2).min(steps) {
                let w0 = unsafe { _mm256_loadu_si256(t.w.add(k * 64).cast()) };
                let w1 = unsafe { _mm256_loadu_si256(t.w.add(k * 64 + 32).cast()) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32(unsafe {
                        t.x.add(r * t.row_bytes + k * 4)
                            .cast::<i32>()
                            .read_unaligned()
                    });
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(xb, w0));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(xb, w1));
                }
            }
            unsafe { add_group_256(&mut total, &acc, t, g) };
        }
        unsafe { store_256(&total, t) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layer(outputs: usize, inputs: usize) -> (Tensor, Tensor, QuantLinear) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (outputs, inputs), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, outputs, &dev).unwrap();
        let q = QuantLinear::new(&w, Some(&b)).unwrap().expect("shape fits");
        (w, b, q)
    }

    fn quantized(w: &Tensor, b: &Tensor, kernel: Kernel) -> QuantLinear {
        QuantLinear::for_kernel(w, Some(b), kernel)
            .unwrap()
            .expect("shape fits")
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Scalar];
        match Kernel::best_available() {
            Kernel::Vnni512 => {
                k.push(Kernel::Avx2);
                if Kernel::AvxVnni.runs_here() {
                    k.push(Kernel::AvxVnni);
                }
                k.push(Kernel::Vnni512);
            }
            Kernel::AvxVnni => k.extend([Kernel::Avx2, Kernel::AvxVnni]),
            Kernel::Avx2 => k.push(Kernel::Avx2),
            Kernel::Scalar => {}
        }
        k
    }

    #[test]
    fn every_kernel_gives_the_same_sums() {
        // Rows and blocks that leave remainders in both directions of the tiles.
        let (outputs, inputs, rows) = (48, 68, 13);
        let (w, b, _) = layer(outputs, inputs);
        let x = Tensor::randn(0f32, 1.0, (rows, inputs), &Device::Cpu).unwrap();
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for kernel in kernels() {
            // Each kernel's packing of the same weights, the scalar sums of them as
            // the reference: the same integer sums, only the f32 rounding of their
            // scaling differs.
            let q = quantized(&w, &b, kernel);
            let reference = q.forward(&x, Kernel::Scalar);
            for (i, (a, b)) in q.forward(&x, kernel).iter().zip(&reference).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{kernel:?} at {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn the_avx2_timing_runs_both_paths() {
        if !kernels().contains(&Kernel::Avx2) {
            return;
        }
        let (int8, f32) = avx2_against_f32().unwrap();
        assert!(int8 > std::time::Duration::ZERO && f32 > std::time::Duration::ZERO);
    }

    #[test]
    fn the_largest_inputs_and_weights_do_not_saturate() {
        // Every input at ±max (quantized to ±127, fed as 1 or 255 to VNNI) against
        // weights at ±max (±127): the largest products every kernel makes, with
        // signs alternating in blocks so that sums of both signs reach the edge.
        let (outputs, inputs, rows) = (32, 256, 6);
        let sign = |i: usize| {
            if (i / 3).is_multiple_of(2) {
                1f32
            } else {
                -1f32
            }
        };
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|i| sign(i / inputs + i) * 0.25)
            .collect();
        let w = Tensor::from_vec(w, (outputs, inputs), &Device::Cpu).unwrap();
        let b = Tensor::zeros(outputs, DType::F32, &Device::Cpu).unwrap();
        let x: Vec<f32> = (0..rows * inputs).map(|i| sign(i * 7 / 5) * 4.0).collect();
        for kernel in kernels() {
            let q = quantized(&w, &b, kernel);
            let reference = q.forward(&x, Kernel::Scalar);
            let exact: Vec<f32> = x
                .chunks(inputs)
                .flat_map(|x| {
                    let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                    (0..outputs)
                        .map(|c| {
                            x.iter()
                                .zip(&w[c * inputs..][..inputs])
                                .map(|(a, b)| a * b)
                                .sum::<f32>()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            for (i, ((a, b), e)) in q
                .forward(&x, kernel)
                .iter()
                .zip(&reference)
                .zip(&exact)
                .enumerate()
            {
                // Values at ±max quantize exactly, so every kernel gets the exact sums.
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{kernel:?} at {i}: {a} vs {b}"
                );
                assert!(
                    (a - e).abs() <= 1e-3 * e.abs().max(1.0),
                    "{kernel:?} at {i}: {a} vs exact {e}"
                );
            }
        }
    }

    #[test]
    fn int8_linear_is_close_to_f32() {
        let (outputs, inputs, rows) = (384, 1536, 70);
        let (w, b, q) = layer(outputs, inputs);
        let x = Tensor::randn(0f32, 1.0, (rows, inputs), &Device::Cpu).unwrap();
        let want: Vec<f32> = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = x.apply_op1_no_bwd(&q).unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        // The AVX2 kernel too, wherever the CPU runs it.
        let mut runs = vec![(Kernel::detect(), got)];
        if kernels().contains(&Kernel::Avx2) {
            runs.push((
                Kernel::Avx2,
                quantized(&w, &b, Kernel::Avx2).forward(&xs, Kernel::Avx2),
            ));
        }
        for (kernel, got) in runs {
            for (r, (g, w)) in got.chunks(outputs).zip(want.chunks(outputs)).enumerate() {
                let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
                let cos = dot / (norm(g) * norm(w));
                assert!(cos > 0.999, "{kernel:?}, row {r}: cosine {cos}");
            }
        }
    }

    #[test]
    fn shapes_that_do_not_pack_stay_f32_and_zero_rows_stay_finite() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((10, 8), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(10, DType::F32, &dev).unwrap();
        assert!(QuantLinear::new(&w, Some(&b)).unwrap().is_none());
        let (w, b, q) = layer(16, 8);
        let out = q.forward(&[0f32; 16], Kernel::detect());
        assert!(out.iter().all(|v| v.is_finite()));
        // A NaN anywhere in a row makes that row's outputs NaN, as in f32; the
        // other row stays finite.
        let mut x = [0.5f32; 16];
        x[3] = f32::NAN;
        for kernel in kernels() {
            let out = quantized(&w, &b, kernel).forward(&x, kernel);
            assert!(out[..16].iter().all(|v| v.is_nan()), "{kernel:?}: {out:?}");
            assert!(
                out[16..].iter().all(|v| v.is_finite()),
                "{kernel:?}: {out:?}"
            );
        }
    }
}
