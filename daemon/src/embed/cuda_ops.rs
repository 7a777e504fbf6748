//! The encoder's fused CUDA kernels (`kernels.cu`, compiled to PTX by build.rs) as
//! candle custom ops, for f32, f16 and bf16.
//!
//! candle's generic ops cost the GPU path most of its time: every bias add and the
//! attention mask went through its broadcast kernel, which indexes each element
//! through the shape and strides (measured at a fifth of the memory bandwidth on an
//! H100), and a layer's norm, residual, GELU and head shuffles were a pass each.
//! Here a layer is six cuBLAS GEMMs and six of these kernels.
//!
//! The only `unsafe` outside `activation.rs`: allocating a kernel's output and
//! launching it. Each kernel writes every element of its output, reads within the
//! bounds its arguments give, and the shapes are checked here first.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result,
    Shape, bail,
};
use half::{bf16, f16};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
const MODULE: &str = "codesearch_encoder";

/// Storage types the kernels come in.
trait Elem: CudaDType + DeviceRepr {
    const SUFFIX: &'static str;
}
impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
}
impl Elem for f16 {
    const SUFFIX: &'static str = "f16";
}
impl Elem for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Calls `$run::<T>` for the storage's dtype.
macro_rules! by_dtype {
    ($dtype:expr, $run:ident($($arg:expr),*)) => {
        match $dtype {
            DType::F32 => $run::<f32>($($arg),*),
            DType::F16 => $run::<f16>($($arg),*),
            DType::BF16 => $run::<bf16>($($arg),*),
            other => bail!("fused CUDA kernels take f32, f16 or bf16, not {other:?}"),
        }
    };
}

fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("fused CUDA kernel: input is not contiguous");
    };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

fn n32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| candle_core::Error::msg("fused CUDA kernel: tensor too large"))
}

fn n32s<const N: usize>(ns: [usize; N]) -> Result<[u32; N]> {
    let mut out = [0; N];
    for (o, n) in out.iter_mut().zip(ns) {
        *o = n32(n)?;
    }
    Ok(out)
}

fn alloc<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every kernel here writes all `n` elements of its output before anyone reads it.
    unsafe { dev.alloc::<T>(n) }
}

/// Whether the 16-byte kernels (`add_norm8`, `bias_gelu8`) may run:
/// `CODESEARCH_CUDA_NARROW=1` keeps the 2-byte ones, for measuring.
fn wide_loads() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| std::env::var("CODESEARCH_CUDA_NARROW").is_err())
}

/// Grid-stride elementwise launch.
fn flat(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row, four rows per block.
fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(4).max(1) as u32, 1, 1),
        block_dim: (32, 4, 1),
        shared_mem_bytes: 0,
    }
}

macro_rules! cpu_refuses {
    ($($s:ident, $l:ident),*) => {
        fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),*) -> Result<(CpuStorage, Shape)> {
            let _ = ($($s, $l),*);
            bail!("{} runs on CUDA only", self.name())
        }
    };
}

/// `[b·len, 3·H]` projection + bias `[3·H]` → `[3, b, heads, len, head_dim]`.
#[derive(Debug)]
pub(crate) struct QkvSplit {
    pub(crate) b: usize,
    pub(crate) len: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
}

impl CustomOp2 for QkvSplit {
    fn name(&self) -> &'static str {
        "qkv-split"
    }
    cpu_refuses!(s1, l1, s2, l2);
    fn cuda_fwd(
        &self,
        qkv: &CudaStorage,
        lq: &Layout,
        bias: &CudaStorage,
        lb: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let h = self.heads * self.head_dim;
        if lq.shape().dims() != [self.b * self.len, 3 * h] || lb.shape().elem_count() != 3 * h {
            bail!("qkv-split: shapes {:?} and {:?}", lq.shape(), lb.shape());
        }
        fn run<T: Elem>(
            op: &QkvSplit,
            qkv: &CudaStorage,
            lq: &Layout,
            bias: &CudaStorage,
            lb: &Layout,
        ) -> Result<CudaStorage> {
            let dev = qkv.device();
            let n = lq.shape().elem_count();
            let out = alloc::<T>(dev, n)?;
            let func =
                dev.get_or_load_custom_func(&format!("qkv_split_{}", T::SUFFIX), MODULE, PTX)?;
            let (qkv, bias) = (view::<T>(qkv, lq)?, view::<T>(bias, lb)?);
            let [b, len, heads, hd] = n32s([op.b, op.len, op.heads, op.head_dim])?;
            let mut args = func.builder();
            args.arg(&qkv).arg(&bias).arg(&out);
            args.arg(&b).arg(&len).arg(&heads).arg(&hd);
            n32(n)?;
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(flat(n)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(qkv.dtype(), run(self, qkv, lq, bias, lb))?;
        Ok((
            out,
            Shape::from((3, self.b, self.heads, self.len, self.head_dim)),
        ))
    }
}

/// Softmax over the last axis of `[b, heads, len, len]` scores, keys past each
/// sequence's length (`lens`: u32 `[b]`) weighted 0.
#[derive(Debug)]
pub(crate) struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }
    cpu_refuses!(s1, l1, s2, l2);
    fn cuda_fwd(
        &self,
        scores: &CudaStorage,
        ls: &Layout,
        lens: &CudaStorage,
        ll: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let &[b, heads, len, len2] = ls.shape().dims() else {
            bail!("masked-softmax: scores {:?}", ls.shape());
        };
        if len != len2 || ll.shape().dims() != [b] {
            bail!(
                "masked-softmax: scores {:?}, lens {:?}",
                ls.shape(),
                ll.shape()
            );
        }
        fn run<T: Elem>(
            scores: &CudaStorage,
            ls: &Layout,
            lens: &CudaStorage,
            ll: &Layout,
            heads: usize,
            len: usize,
        ) -> Result<CudaStorage> {
            let dev = scores.device();
            let n = ls.shape().elem_count();
            let rows = n / len.max(1);
            let out = alloc::<T>(dev, n)?;
            let func =
                dev.get_or_load_custom_func(&format!("masked_softmax_{}", T::SUFFIX), MODULE, PTX)?;
            let (x, lens) = (view::<T>(scores, ls)?, view::<u32>(lens, ll)?);
            let (rows32, len32, heads32) = (n32(rows)?, n32(len)?, n32(heads)?);
            n32(n)?;
            let mut args = func.builder();
            args.arg(&x).arg(&lens).arg(&out);
            args.arg(&rows32).arg(&len32).arg(&heads32);
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(warp_rows(rows)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(scores.dtype(), run(scores, ls, lens, ll, heads, len))?;
        Ok((out, ls.shape().clone()))
    }
}

/// `[b, heads, len, head_dim]` → `[b·len, heads·head_dim]`.
#[derive(Debug)]
pub(crate) struct MergeHeads;

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "merge-heads"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _ = (s, l);
        bail!("{} runs on CUDA only", self.name())
    }
    fn cuda_fwd(&self, ctx: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let &[b, heads, len, hd] = l.shape().dims() else {
            bail!("merge-heads: {:?}", l.shape());
        };
        fn run<T: Elem>(ctx: &CudaStorage, l: &Layout, dims: [usize; 4]) -> Result<CudaStorage> {
            let dev = ctx.device();
            let n = l.shape().elem_count();
            let out = alloc::<T>(dev, n)?;
            let func =
                dev.get_or_load_custom_func(&format!("merge_heads_{}", T::SUFFIX), MODULE, PTX)?;
            let x = view::<T>(ctx, l)?;
            let [b, heads, len, hd] = n32s(dims)?;
            n32(n)?;
            let mut args = func.builder();
            args.arg(&x).arg(&out);
            args.arg(&b).arg(&len).arg(&heads).arg(&hd);
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(flat(n)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(ctx.dtype(), run(ctx, l, [b, heads, len, hd]))?;
        Ok((out, Shape::from((b * len, heads * hd))))
    }
}

/// `LayerNorm(x + residual + bias)` over rows of at most 1,024; `params` is
/// `[3, cols]`: bias, gamma, beta.
#[derive(Debug)]
pub(crate) struct AddNorm {
    pub(crate) eps: f32,
}

/// The widest row [`AddNorm`] takes.
pub(crate) const MAX_NORM_COLS: usize = 1024;

impl CustomOp3 for AddNorm {
    fn name(&self) -> &'static str {
        "add-norm"
    }
    cpu_refuses!(s1, l1, s2, l2, s3, l3);
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        res: &CudaStorage,
        lr: &Layout,
        params: &CudaStorage,
        lp: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let &[rows, cols] = lx.shape().dims() else {
            bail!("add-norm: x {:?}", lx.shape());
        };
        if lr.shape() != lx.shape() || lp.shape().dims() != [3, cols] || cols > MAX_NORM_COLS {
            bail!(
                "add-norm: x {:?}, residual {:?}, params {:?}",
                lx.shape(),
                lr.shape(),
                lp.shape()
            );
        }
        fn run<T: Elem>(
            eps: f32,
            (x, lx): (&CudaStorage, &Layout),
            (res, lr): (&CudaStorage, &Layout),
            (params, lp): (&CudaStorage, &Layout),
            rows: usize,
            cols: usize,
        ) -> Result<CudaStorage> {
            let dev = x.device();
            let out = alloc::<T>(dev, rows * cols)?;
            // Eight 2-byte elements a lane (16-byte loads) where rows and offsets allow.
            let by8 = wide_loads()
                && T::SUFFIX != "f32"
                && cols.is_multiple_of(8)
                && [lx, lr, lp]
                    .iter()
                    .all(|l| l.start_offset().is_multiple_of(8));
            let name = if by8 { "add_norm8" } else { "add_norm" };
            let func =
                dev.get_or_load_custom_func(&format!("{name}_{}", T::SUFFIX), MODULE, PTX)?;
            let (x, res, params) = (
                view::<T>(x, lx)?,
                view::<T>(res, lr)?,
                view::<T>(params, lp)?,
            );
            let (rows32, cols32) = (n32(rows)?, n32(cols)?);
            n32(rows * cols)?;
            let mut args = func.builder();
            args.arg(&x).arg(&res).arg(&params).arg(&out);
            args.arg(&rows32).arg(&cols32).arg(&eps);
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(warp_rows(rows)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(
            x.dtype(),
            run(self.eps, (x, lx), (res, lr), (params, lp), rows, cols)
        )?;
        Ok((out, lx.shape().clone()))
    }
}

/// The embeddings and their norm in one kernel: ids u32 `[rows]` (the batch
/// flattened, `len` tokens a sequence) and the table `[vocab + positions + 3, cols]`
/// (word rows, position rows, then the token-type row, gamma and beta) →
/// `LayerNorm(word[id] + position[first + i % len] + token_type)`, `[rows, cols]`.
/// One pass where candle's two gathers wrote the rows out and an add-and-norm read
/// them back.
#[derive(Debug)]
pub(crate) struct EmbedNorm {
    pub(crate) vocab: usize,
    pub(crate) positions: usize,
    /// The position of a sequence's first token.
    pub(crate) first: usize,
    pub(crate) len: usize,
    pub(crate) eps: f32,
}

impl CustomOp2 for EmbedNorm {
    fn name(&self) -> &'static str {
        "embed-norm"
    }
    cpu_refuses!(s1, l1, s2, l2);
    fn cuda_fwd(
        &self,
        ids: &CudaStorage,
        li: &Layout,
        table: &CudaStorage,
        lt: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let &[rows] = li.shape().dims() else {
            bail!("embed-norm: ids {:?}", li.shape());
        };
        let &[table_rows, cols] = lt.shape().dims() else {
            bail!("embed-norm: table {:?}", lt.shape());
        };
        let params = self.vocab + self.positions;
        if table_rows != params + 3
            || cols > MAX_NORM_COLS
            || self.len == 0
            || !rows.is_multiple_of(self.len)
            || self.first + self.len > self.positions
        {
            bail!(
                "embed-norm: ids {:?}, table {:?}, {} words, {} positions from {} for {} tokens",
                li.shape(),
                lt.shape(),
                self.vocab,
                self.positions,
                self.first,
                self.len
            );
        }
        fn run<T: Elem>(
            op: &EmbedNorm,
            (ids, li): (&CudaStorage, &Layout),
            (table, lt): (&CudaStorage, &Layout),
            [rows, cols, params]: [usize; 3],
        ) -> Result<CudaStorage> {
            let dev = table.device();
            let out = alloc::<T>(dev, rows * cols)?;
            let by8 = wide_loads()
                && T::SUFFIX != "f32"
                && cols.is_multiple_of(8)
                && lt.start_offset().is_multiple_of(8);
            let name = if by8 { "embed_norm8" } else { "embed_norm" };
            let func =
                dev.get_or_load_custom_func(&format!("{name}_{}", T::SUFFIX), MODULE, PTX)?;
            let (ids, table) = (view::<u32>(ids, li)?, view::<T>(table, lt)?);
            let [rows32, len, cols32, vocab, first, params] =
                n32s([rows, op.len, cols, op.vocab, op.first, params])?;
            n32(rows * cols)?;
            let mut args = func.builder();
            args.arg(&ids).arg(&table).arg(&out);
            args.arg(&rows32).arg(&len).arg(&cols32);
            args.arg(&vocab).arg(&first).arg(&params).arg(&op.eps);
            // SAFETY: arguments match the kernel's signature; sizes checked above (the
            // kernel maps an id past the vocabulary to row 0).
            unsafe { args.launch(warp_rows(rows)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(
            table.dtype(),
            run(self, (ids, li), (table, lt), [rows, cols, params])
        )?;
        Ok((out, Shape::from((rows, cols))))
    }
}

/// `gelu(x + bias)` (erf form) on `[rows, cols]` with bias `[cols]`.
#[derive(Debug)]
pub(crate) struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }
    cpu_refuses!(s1, l1, s2, l2);
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        bias: &CudaStorage,
        lb: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let &[_, cols] = lx.shape().dims() else {
            bail!("bias-gelu: x {:?}", lx.shape());
        };
        if lb.shape().dims() != [cols] {
            bail!("bias-gelu: x {:?}, bias {:?}", lx.shape(), lb.shape());
        }
        fn run<T: Elem>(
            x: &CudaStorage,
            lx: &Layout,
            bias: &CudaStorage,
            lb: &Layout,
            cols: usize,
        ) -> Result<CudaStorage> {
            let dev = x.device();
            let n = lx.shape().elem_count();
            let out = alloc::<T>(dev, n)?;
            // Eight 2-byte elements a thread (16-byte loads) where rows and offsets allow.
            let by8 = wide_loads()
                && T::SUFFIX != "f32"
                && cols.is_multiple_of(8)
                && lx.start_offset().is_multiple_of(8)
                && lb.start_offset().is_multiple_of(8);
            let name = if by8 { "bias_gelu8" } else { "bias_gelu" };
            let func =
                dev.get_or_load_custom_func(&format!("{name}_{}", T::SUFFIX), MODULE, PTX)?;
            let (x, bias) = (view::<T>(x, lx)?, view::<T>(bias, lb)?);
            let (n32_, cols32) = (n32(n)?, n32(cols)?);
            let mut args = func.builder();
            args.arg(&x).arg(&bias).arg(&out).arg(&n32_).arg(&cols32);
            let cfg = flat(if by8 { n / 8 } else { n });
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(cfg) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(x.dtype(), run(x, lx, bias, lb, cols))?;
        Ok((out, lx.shape().clone()))
    }
}

/// Mean of each sequence's first `lens[b]` rows of `[b, len, cols]`, L2-normalised,
/// as f32 `[b, cols]`; `cols` at most 1,024.
#[derive(Debug)]
pub(crate) struct MeanPoolNorm;

impl CustomOp2 for MeanPoolNorm {
    fn name(&self) -> &'static str {
        "mean-pool-norm"
    }
    cpu_refuses!(s1, l1, s2, l2);
    fn cuda_fwd(
        &self,
        hidden: &CudaStorage,
        lh: &Layout,
        lens: &CudaStorage,
        ll: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let &[b, len, cols] = lh.shape().dims() else {
            bail!("mean-pool-norm: hidden {:?}", lh.shape());
        };
        if ll.shape().dims() != [b] || cols > 1024 {
            bail!(
                "mean-pool-norm: hidden {:?}, lens {:?}",
                lh.shape(),
                ll.shape()
            );
        }
        fn run<T: Elem>(
            hidden: &CudaStorage,
            lh: &Layout,
            lens: &CudaStorage,
            ll: &Layout,
            [b, len, cols]: [usize; 3],
        ) -> Result<CudaStorage> {
            let dev = hidden.device();
            let out = alloc::<f32>(dev, b * cols)?;
            // 16-byte loads and several tokens in flight a block, where rows allow.
            let by8 = wide_loads()
                && T::SUFFIX != "f32"
                && cols.is_multiple_of(8)
                && lh.start_offset().is_multiple_of(8);
            let name = if by8 {
                "mean_pool_norm8"
            } else {
                "mean_pool_norm"
            };
            let func =
                dev.get_or_load_custom_func(&format!("{name}_{}", T::SUFFIX), MODULE, PTX)?;
            let (h, lens) = (view::<T>(hidden, lh)?, view::<u32>(lens, ll)?);
            let (len32, cols32) = (n32(len)?, n32(cols)?);
            n32(b * len * cols)?;
            let mut args = func.builder();
            args.arg(&h).arg(&lens).arg(&out).arg(&len32).arg(&cols32);
            let cfg = LaunchConfig {
                grid_dim: (n32(b.max(1))?, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { args.launch(cfg) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = by_dtype!(hidden.dtype(), run(hidden, lh, lens, ll, [b, len, cols]))?;
        Ok((out, Shape::from((b, cols))))
    }
}

/// Self-attention of every head in one kernel (`attention_*` in kernels.cu): the
/// QKV projection `[b·len, 3·H]` (no bias; Q scaled), its bias `[3·H]` and the
/// lengths (u32 `[b]`) → the heads merged, `[b·len, H]`. Only f16 and bf16, heads of
/// 32 (the only width run on a GPU so far; kernels.cu builds no other), and where its
/// shared memory fits the device; see [`Attention::plan`].
#[derive(Debug)]
pub(crate) struct Attention {
    b: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
    /// Warps per block, 16 queries each.
    warps: usize,
    kernel: AttentionKernel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttentionKernel {
    /// `attention_mma_*`: scores in registers; sequences of at most `keys`.
    Registers { keys: usize },
    /// `attention_*`: scores in shared memory (WMMA); `kv_cap` key slots.
    Shared { kv_cap: usize },
}

/// The longest sequence `attention_mma_*` takes (its scores live in registers).
#[cfg(fused_attention)]
const MAX_REGISTER_KEYS: usize = 256;
/// Key slots a warp's softmax holds in registers (kernels.cu's `MAX_KEY_SLOTS` × 32).
#[cfg(fused_attention)]
const MAX_KEYS: usize = 16 * 32;

impl Attention {
    /// The kernel's launch for this batch, or `None` where it does not apply (then
    /// the head split, two batched GEMMs, softmax and head merge run instead).
    /// `CODESEARCH_CUDA_ATTENTION=unfused` (or `shared`) picks the old path (or the
    /// shared-memory kernel), and `CODESEARCH_CUDA_ATTENTION_WARPS` the warps a block
    /// (1 to 16; at most 8 for the register kernel), for measuring.
    #[cfg(fused_attention)]
    pub(crate) fn plan(
        dev: &CudaDevice,
        dtype: DType,
        [b, len, heads, head_dim]: [usize; 4],
    ) -> Result<Option<Self>> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
        static CHOICE: std::sync::OnceLock<(String, Option<usize>)> = std::sync::OnceLock::new();
        let (choice, warps) = CHOICE.get_or_init(|| {
            let warps = std::env::var("CODESEARCH_CUDA_ATTENTION_WARPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|w| [1, 2, 4, 8, 16].contains(w));
            (
                std::env::var("CODESEARCH_CUDA_ATTENTION").unwrap_or_default(),
                warps,
            )
        });
        if choice == "unfused" || !matches!(dtype, DType::F16 | DType::BF16) || head_dim != 32 {
            return Ok(None);
        }
        let limit = dev
            .cuda_stream()
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .w()?;
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut kernels = Vec::with_capacity(2);
        let keys = [64, 128, 256]
            .into_iter()
            .find(|&k| k >= len && k <= MAX_REGISTER_KEYS);
        if let (Some(keys), false) = (keys, choice == "shared") {
            kernels.push(AttentionKernel::Registers { keys });
        }
        let kv_cap = len.next_multiple_of(16).max(head_dim);
        if kv_cap <= MAX_KEYS {
            kernels.push(AttentionKernel::Shared { kv_cap });
        }
        for kernel in kernels {
            // Measured on an H100 (docs/BENCHMARKS.md): 8 warps a block for scores in
            // registers, 4 in shared memory; `CODESEARCH_CUDA_ATTENTION_WARPS` sets it.
            // The register kernel uses up to 179 registers a thread: 16 warps of it
            // would not fit a multiprocessor's 65,536.
            let most = match kernel {
                AttentionKernel::Registers { .. } => warps.unwrap_or(8).min(8),
                AttentionKernel::Shared { .. } => warps.unwrap_or(4),
            };
            // Fewer queries a block where a long sequence's K, V and scores do not fit.
            for warps in [16, 8, 4, 2, 1].into_iter().filter(|&w| w <= most) {
                let op = Self {
                    b,
                    len,
                    heads,
                    head_dim,
                    warps,
                    kernel,
                };
                if op.shared_bytes() <= limit {
                    return Ok(Some(op));
                }
            }
        }
        Ok(None)
    }

    #[cfg(not(fused_attention))]
    pub(crate) fn plan(
        _dev: &CudaDevice,
        _dtype: DType,
        _dims: [usize; 4],
    ) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Shared memory as kernels.cu lays it out (2-byte elements, padded rows).
    fn shared_bytes(&self) -> usize {
        let row = self.head_dim + 8;
        match self.kernel {
            // K [keys][hd + 8], V transposed [hd][keys + 8].
            AttentionKernel::Registers { keys } => keys * row * 2 + self.head_dim * (keys + 8) * 2,
            // K and V [kv_cap][hd + 8], each warp's Q [16][hd + 8] and f32 scores
            // [16][kv_cap + 4].
            AttentionKernel::Shared { kv_cap } => {
                2 * kv_cap * row * 2
                    + self.warps * 16 * row * 2
                    + self.warps * 16 * (kv_cap + 4) * 4
            }
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }
    cpu_refuses!(s1, l1, s2, l2, s3, l3);
    fn cuda_fwd(
        &self,
        qkv: &CudaStorage,
        lq: &Layout,
        bias: &CudaStorage,
        lb: &Layout,
        lens: &CudaStorage,
        ll: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
        let h = self.heads * self.head_dim;
        // The kernels read and write 16 bytes at a time.
        if lq.shape().dims() != [self.b * self.len, 3 * h]
            || lb.shape().elem_count() != 3 * h
            || ll.shape().dims() != [self.b]
            || !lq.start_offset().is_multiple_of(8)
            || !lb.start_offset().is_multiple_of(8)
        {
            bail!(
                "attention: qkv {:?}, bias {:?}, lens {:?}",
                lq.shape(),
                lb.shape(),
                ll.shape()
            );
        }
        fn run<T: Elem>(
            op: &Attention,
            (qkv, lq): (&CudaStorage, &Layout),
            (bias, lb): (&CudaStorage, &Layout),
            (lens, ll): (&CudaStorage, &Layout),
        ) -> Result<CudaStorage> {
            let dev = qkv.device();
            let n = op.b * op.len * op.heads * op.head_dim;
            let out = alloc::<T>(dev, n)?;
            let name = match op.kernel {
                AttentionKernel::Registers { keys } => {
                    format!("attention_mma_{}_{}_{keys}", T::SUFFIX, op.head_dim)
                }
                AttentionKernel::Shared { .. } => {
                    format!("attention_{}_{}", T::SUFFIX, op.head_dim)
                }
            };
            let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            let smem = n32(op.shared_bytes())?;
            func.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .w()?;
            let (qkv, bias, lens) = (
                view::<T>(qkv, lq)?,
                view::<T>(bias, lb)?,
                view::<u32>(lens, ll)?,
            );
            let [len, heads] = n32s([op.len, op.heads])?;
            n32(op.b * op.len * 3 * op.heads * op.head_dim)?;
            let mut args = func.builder();
            args.arg(&qkv).arg(&bias).arg(&lens).arg(&out);
            args.arg(&len).arg(&heads);
            let kv_cap;
            if let AttentionKernel::Shared { kv_cap: cap } = op.kernel {
                kv_cap = n32(cap)?;
                args.arg(&kv_cap);
            }
            let cfg = LaunchConfig {
                grid_dim: (
                    n32(op.len.div_ceil(16 * op.warps).max(1))?,
                    heads,
                    n32(op.b.max(1))?,
                ),
                block_dim: (n32(32 * op.warps)?, 1, 1),
                shared_mem_bytes: smem,
            };
            // SAFETY: arguments match the kernel's signature; shapes checked above,
            // and `plan` sized the shared memory within the device's limit.
            unsafe { args.launch(cfg) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
        let out = match qkv.dtype() {
            DType::F16 => run::<f16>(self, (qkv, lq), (bias, lb), (lens, ll))?,
            DType::BF16 => run::<bf16>(self, (qkv, lq), (bias, lb), (lens, ll))?,
            other => bail!("attention kernel takes f16 or bf16, not {other:?}"),
        };
        Ok((out, Shape::from((self.b * self.len, h))))
    }
}
