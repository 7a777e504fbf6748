//! The BERT encoder (MiniLM, BGE, …) written against candle's tensor ops.
//!
//! Ours rather than candle-transformers' `bert` for three reasons, each measured:
//! the attention mask is built from a finite fill value in the model's dtype (the
//! upstream `f32::MIN` becomes `-inf` in F16/BF16 and `0 * -inf` turns whole vectors
//! into NaN); Q, K and V are one fused matmul; and every dense layer runs on the
//! flattened `[tokens, hidden]` matrix, which is one large GEMM instead of a batched one.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::cpu_ops::{AddNorm, Attention, GeluErf, SMALL_ROWS, SmallLinear};
#[cfg(feature = "cuda")]
use super::cuda_ops;
use super::int8::QuantLinear;

/// The fields of a Hugging Face `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Longest input the position table covers.
    pub max_position_embeddings: usize,
    /// Size of the token-type table.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: u32,
    /// `bert`, or another family that shares the layout (`roberta`,
    /// `xlm-roberta`).
    #[serde(default)]
    pub model_type: Option<String>,
}

impl BertConfig {
    /// The family's first position id: RoBERTa and XLM-RoBERTa number real
    /// tokens from `pad_token_id + 1` (their position table has that many
    /// extra rows); BERT from 0.
    pub(super) fn position_offset(&self) -> usize {
        match self.model_type.as_deref() {
            Some("roberta" | "xlm-roberta") => self.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// Tokens the position table covers after the offset.
    pub(super) fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }
}

fn default_act() -> String {
    "gelu".to_owned()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

#[derive(Debug)]
pub(super) struct Layer {
    pub(super) qkv: Linear,
    pub(super) attn_out: Linear,
    pub(super) attn_norm: LayerNorm,
    pub(super) up: Linear,
    /// SwiGLU's gate (NomicBert): the feed-forward block is
    /// `down(silu(gate(x)) * up(x))` instead of `down(act(up(x)))`.
    pub(super) gate: Option<Linear>,
    pub(super) down: Linear,
    pub(super) out_norm: LayerNorm,
    /// For the fused CUDA kernels: `[3, hidden]` = attention output bias, norm
    /// weight, norm bias; and the same for the feed-forward block.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fused: Option<(Tensor, Tensor)>,
    /// The same dense layers in int8, for document batches on the CPU
    /// ([`Bert::quantize`]).
    pub(super) int8: Option<Box<Int8Layer>>,
}

/// A layer's dense weights in int8; `None` for one whose shape does not pack.
#[derive(Debug)]
pub(super) struct Int8Layer {
    qkv: Option<QuantLinear>,
    attn_out: Option<QuantLinear>,
    up: Option<QuantLinear>,
    gate: Option<QuantLinear>,
    down: Option<QuantLinear>,
}

/// Rotary position embeddings (NomicBert), GPT-NeoX layout: the two halves of
/// each head's query and key are rotated by the same frequencies.
#[derive(Debug)]
pub(super) struct Rotary {
    /// `1 / base^(2i / head_dim)` for `i` in `0..head_dim / 2`.
    pub(super) inv_freq: Vec<f32>,
}

impl Rotary {
    /// `cos` and `sin` of every position below `len` and every head
    /// dimension, `[1, len, 1, 1, head_dim]` in `dtype`: made once per pass,
    /// shared by its layers.
    fn tables(&self, len: usize, device: &Device, dtype: DType) -> Result<RotaryTables> {
        let half = self.inv_freq.len();
        let hd = half * 2;
        let (mut cos, mut sin) = (Vec::with_capacity(len * hd), Vec::with_capacity(len * hd));
        for p in 0..len {
            for i in 0..hd {
                let angle = p as f32 * self.inv_freq[i % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: Vec<f32>| Tensor::from_vec(v, (1, len, 1, 1, hd), device)?.to_dtype(dtype);
        Ok(RotaryTables {
            cos: table(cos)?,
            sin: table(sin)?,
        })
    }
}

/// A pass's rotary tables ([`Rotary::tables`]).
#[derive(Debug)]
struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryTables {
    /// Rotates the query and key parts of `qkv` (`[b * len, 3 * hidden]`) by
    /// each token's position in its row.
    fn apply(&self, qkv: &Tensor, b: usize, len: usize, heads: usize) -> Result<Tensor> {
        let hd = self.cos.dim(4)?;
        let half = hd / 2;
        let x = qkv.reshape((b, len, 3, heads, hd))?;
        let qk = x.narrow(2, 0, 2)?;
        let rotated = Tensor::cat(
            &[&qk.narrow(4, half, half)?.neg()?, &qk.narrow(4, 0, half)?],
            4,
        )?;
        let qk = (qk.broadcast_mul(&self.cos)? + rotated.broadcast_mul(&self.sin)?)?;
        Tensor::cat(&[&qk, &x.narrow(2, 2, 1)?], 2)?.reshape((b * len, 3 * heads * hd))
    }
}

/// A loaded BERT encoder on one device, in one dtype.
#[derive(Debug)]
pub(super) struct Bert {
    word: Embedding,
    /// Absolute positions (BERT, RoBERTa); `None` where `rotary` stands in.
    position: Option<Embedding>,
    rotary: Option<Rotary>,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    act: Act,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    dtype: DType,
    device: Device,
    /// F32 on the CPU: attention and GELU run as the fused kernels of `cpu_ops`.
    /// Otherwise the query weights come pre-scaled by `1/√head_dim`.
    fused_cpu: bool,
    /// On CUDA (with GELU-erf, hidden ≤ 1,024): the fused kernels of `cuda_ops`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fused_cuda: bool,
    /// For the fused CUDA kernels, the embedding kernel's one table: the word rows,
    /// the position rows, then the token-type row, norm weight and norm bias.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    emb_table: Option<Tensor>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    eps: f64,
    /// The first real token's position id ([`BertConfig::position_offset`]).
    /// Rows are padded on the right, so real tokens take the positions from
    /// here on, as the reference implementations give them; padding takes
    /// the following ones, which no real token attends to.
    position_offset: u32,
}

impl Bert {
    /// Builds the encoder from its weights (with or without a `bert.` or
    /// `roberta.` prefix, as the model's own class or a task head saves them).
    pub(super) fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let vb = match ["bert", "roberta"]
            .into_iter()
            .find(|p| vb.contains_tensor(&format!("{p}.embeddings.word_embeddings.weight")))
        {
            Some(prefix) => vb.pp(prefix),
            None => vb,
        };
        let act = match cfg.hidden_act.as_str() {
            "gelu" => Act::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => candle_core::bail!("unsupported hidden_act `{other}` in config.json"),
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let word = candle_nn::embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?;
        let position = candle_nn::embedding(
            cfg.max_position_embeddings,
            h,
            emb.pp("position_embeddings"),
        )?;
        // Every input is one segment (type 0): its row is added like a bias.
        let token_type = emb
            .pp("token_type_embeddings")
            .get((cfg.type_vocab_size, h), "weight")?
            .get(0)?;
        let emb_norm = candle_nn::layer_norm(h, eps, emb.pp("LayerNorm"))?;
        let fused_cpu = vb.device().is_cpu() && vb.dtype() == DType::F32;
        let head_dim = h / cfg.num_attention_heads;
        // Off the fused CPU kernels, 1/√head_dim is folded into the query weights
        // (in f32, before the cast): one elementwise pass fewer per layer.
        let q_scale = (!fused_cpu).then(|| 1.0 / (head_dim as f64).sqrt());
        let fused_cuda = cfg!(feature = "cuda")
            && vb.device().is_cuda()
            && act == Act::GeluErf
            && h <= 1024
            && matches!(vb.dtype(), DType::F32 | DType::F16 | DType::BF16);
        let mut layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                load_layer(
                    vb.pp(format!("encoder.layer.{i}")),
                    cfg,
                    q_scale,
                    fused_cuda,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        if fused_cpu {
            for layer in &mut layers {
                for linear in [
                    &mut layer.qkv,
                    &mut layer.attn_out,
                    &mut layer.up,
                    &mut layer.down,
                ] {
                    *linear = stored_in_out(linear)?;
                }
            }
        }
        let (word, position, emb_table) = if fused_cuda {
            let params = norm_params(&token_type, &emb_norm)?;
            let rows = [word.embeddings(), position.embeddings(), &params];
            let table = Tensor::cat(&rows, 0)?.contiguous()?;
            // The tables as views of the one copy (a large vocabulary is not held twice).
            let (words, positions) = (cfg.vocab_size, cfg.max_position_embeddings);
            let word = Embedding::new(table.narrow(0, 0, words)?, h);
            let position = Embedding::new(table.narrow(0, words, positions)?, h);
            (word, position, Some(table))
        } else {
            (word, position, None)
        };
        Ok(Self {
            word,
            position: Some(position),
            rotary: None,
            token_type,
            emb_norm,
            layers,
            act,
            heads: cfg.num_attention_heads,
            head_dim,
            hidden: h,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            fused_cpu,
            fused_cuda,
            emb_table,
            eps,
            position_offset: cfg.position_offset() as u32,
        })
    }

    /// The device the weights live on.
    pub(super) fn device(&self) -> &Device {
        &self.device
    }

    /// Whether [`Bert::quantize`] has run.
    pub(super) fn is_quantized(&self) -> bool {
        self.layers.iter().any(|l| l.int8.is_some())
    }

    /// Adds int8 copies of every dense layer, which passes begun with `int8`
    /// use. Only the fused CPU path (f32 on the CPU) has the kernels; elsewhere
    /// this does nothing and returns false.
    pub(super) fn quantize(&mut self) -> Result<bool> {
        if !self.fused_cpu {
            return Ok(false);
        }
        let q = |l: &Linear| QuantLinear::new(l.weight(), l.bias());
        let (mut dense, mut packed) = (0, 0);
        for layer in &mut self.layers {
            let int8 = Int8Layer {
                qkv: q(&layer.qkv)?,
                attn_out: q(&layer.attn_out)?,
                up: q(&layer.up)?,
                gate: layer.gate.as_ref().map(q).transpose()?.flatten(),
                down: q(&layer.down)?,
            };
            dense += 4 + usize::from(layer.gate.is_some());
            packed += [&int8.qkv, &int8.attn_out, &int8.up, &int8.gate, &int8.down]
                .iter()
                .filter(|l| l.is_some())
                .count();
            layer.int8 = Some(Box::new(int8));
        }
        // A layer whose shape does not pack stays f32: say how many did.
        tracing::info!(
            int8 = packed,
            f32 = dense - packed,
            "dense layers quantized"
        );
        Ok(true)
    }

    /// Whether [`Bert::begin`] packs a batch's rows without padding.
    pub(super) fn packs(&self) -> bool {
        self.fused_cpu && self.rotary.is_none() && self.position.is_some()
    }

    /// Starts a forward pass over a batch of token rows; [`Bert::step`] advances it
    /// one layer at a time, so the caller can do something urgent between layers.
    ///
    /// On the fused CPU kernels (f32, absolute positions) the rows are packed back
    /// to back with no padding: every dense layer, norm and GELU then runs on real
    /// tokens only (a batch of queries, whose lengths vary, had ~1.4 padded slots
    /// per token). Elsewhere rows are padded on the right to the longest with
    /// `pad_id`. `int8` runs the dense layers in int8 where [`Bert::quantize`] made
    /// them.
    pub(super) fn begin(&self, rows: &[&[u32]], pad_id: u32, int8: bool) -> Result<Pass> {
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let (b, len) = (rows.len(), lens.iter().copied().max().unwrap_or(0));
        if self.packs()
            && let Some(position) = &self.position
        {
            return self.begin_packed(rows, position, lens, int8);
        }
        let mut ids = Vec::with_capacity(b * len);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad_id, len - r.len()));
        }
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?;
        #[cfg(feature = "cuda")]
        if self.fused_cuda {
            return self.begin_fused(&ids, &lens);
        }
        let mask = padding_mask(&lens, len, &self.device)?.to_dtype(self.dtype)?;
        let positions = Tensor::arange(
            self.position_offset,
            self.position_offset + len as u32,
            &self.device,
        )?;
        let mut x = self
            .word
            .forward(&ids.flatten_all()?)?
            .reshape((b, len, self.hidden))?;
        if let Some(position) = &self.position {
            x = x.broadcast_add(&position.forward(&positions)?)?;
        }
        let x = x.broadcast_add(&self.token_type)?;
        let x = self.emb_norm.forward(&x.reshape((b * len, self.hidden))?)?;
        // 0 where attended, a large finite negative where padded: finite in every
        // dtype, so `0 * fill` never makes NaN and softmax gives padding zero weight.
        let bias =
            ((mask.ones_like()? - &mask)? * fill_value(self.dtype))?.reshape((b, 1, 1, len))?;
        let rotary = match &self.rotary {
            Some(r) => Some(r.tables(len, &self.device, self.dtype)?),
            None => None,
        };
        Ok(Pass {
            x,
            bias: Some(bias),
            lens_dev: None,
            lens,
            b,
            len,
            packed: false,
            next_layer: 0,
            attended: false,
            rotary,
            int8,
        })
    }

    /// The embeddings of rows packed back to back: `[Σ lens, hidden]`.
    fn begin_packed(
        &self,
        rows: &[&[u32]],
        position: &Embedding,
        lens: Vec<usize>,
        int8: bool,
    ) -> Result<Pass> {
        let total: usize = lens.iter().sum();
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let first = self.position_offset;
        let positions: Vec<u32> = lens.iter().flat_map(|&l| first..first + l as u32).collect();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let x = (self.word.forward(&ids)? + position.forward(&positions)?)?
            .broadcast_add(&self.token_type)?;
        Ok(Pass {
            x: self.emb_norm.forward(&x)?,
            bias: None,
            lens_dev: None,
            b: rows.len(),
            len: lens.iter().copied().max().unwrap_or(0),
            lens,
            packed: true,
            next_layer: 0,
            attended: false,
            rotary: None,
            int8,
        })
    }

    /// Runs the next half-layer of `pass` (attention, or the feed-forward block):
    /// the smallest steps that leave one tensor of state. True once all have run.
    pub(super) fn step(&self, pass: &mut Pass) -> Result<bool> {
        if let Some(layer) = self.layers.get(pass.next_layer) {
            #[cfg(feature = "cuda")]
            if let (Some(lens), Some((attn, out))) = (&pass.lens_dev, &layer.fused) {
                pass.x = if pass.attended {
                    self.feed_forward_fused(layer, &pass.x, out)?
                } else {
                    self.attention_fused(layer, &pass.x, lens, attn, pass.b, pass.len)?
                };
                if pass.attended {
                    pass.next_layer += 1;
                }
                pass.attended = !pass.attended;
                return Ok(pass.next_layer >= self.layers.len());
            }
            let int8 = if pass.int8 {
                layer.int8.as_deref()
            } else {
                None
            };
            if pass.attended {
                pass.x = self.feed_forward(layer, int8, &pass.x)?;
                pass.next_layer += 1;
            } else {
                let batch = Batch {
                    bias: pass.bias.as_ref(),
                    lens: &pass.lens,
                    b: pass.b,
                    len: pass.len,
                    packed: pass.packed,
                    scale: 1.0 / (self.head_dim as f64).sqrt(),
                    rotary: pass.rotary.as_ref(),
                };
                pass.x = self.self_attention(layer, int8, &pass.x, &batch)?;
            }
            pass.attended = !pass.attended;
        }
        Ok(pass.next_layer >= self.layers.len())
    }

    /// The output of a finished pass: `[batch, len, hidden]`, zeros past each
    /// sequence's length where the pass was packed.
    pub(super) fn finish(&self, pass: Pass) -> Result<Tensor> {
        if !pass.packed {
            return pass.x.reshape((pass.b, pass.len, self.hidden));
        }
        // Row `total` is a row of zeros that every padding slot gathers.
        let total = pass.x.dim(0)?;
        let zero = Tensor::zeros((1, self.hidden), pass.x.dtype(), &self.device)?;
        let x = Tensor::cat(&[&pass.x, &zero], 0)?;
        let mut index = Vec::with_capacity(pass.b * pass.len);
        let mut start = 0;
        for &l in &pass.lens {
            index.extend((start..start + l).map(|i| i as u32));
            index.extend(std::iter::repeat_n(total as u32, pass.len - l));
            start += l;
        }
        let index = Tensor::from_vec(index, pass.b * pass.len, &self.device)?;
        x.index_select(&index, 0)?
            .reshape((pass.b, pass.len, self.hidden))
    }

    /// Each sequence's real length.
    pub(super) fn lens<'a>(&self, pass: &'a Pass) -> &'a [usize] {
        &pass.lens
    }

    /// Mean pooling and L2 normalisation of a finished pass, as f32 `[batch,
    /// hidden]`: in one kernel where the fused CUDA kernels run, over each packed
    /// sequence's rows on the CPU; `None` elsewhere.
    pub(super) fn mean_pooled(&self, pass: &Pass) -> Result<Option<Tensor>> {
        if pass.packed {
            let x = pass
                .x
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let h = self.hidden;
            let mut out = vec![0f32; pass.b * h];
            let mut rows = x.chunks_exact(h);
            for (pooled, &l) in out.chunks_exact_mut(h).zip(&pass.lens) {
                for row in rows.by_ref().take(l) {
                    for (p, &v) in pooled.iter_mut().zip(row) {
                        *p += v;
                    }
                }
                let scale = 1.0 / (l.max(1) as f32);
                let norm = pooled.iter().map(|v| v * v * scale * scale).sum::<f32>();
                let inv = scale / norm.sqrt().max(1e-12);
                pooled.iter_mut().for_each(|v| *v *= inv);
            }
            return Ok(Some(Tensor::from_vec(out, (pass.b, h), &self.device)?));
        }
        #[cfg(feature = "cuda")]
        if let Some(lens) = &pass.lens_dev {
            let hidden = pass.x.reshape((pass.b, pass.len, self.hidden))?;
            return Ok(Some(
                hidden.apply_op2_no_bwd(lens, &cuda_ops::MeanPoolNorm)?,
            ));
        }
        let _ = pass;
        Ok(None)
    }

    fn self_attention(
        &self,
        layer: &Layer,
        int8: Option<&Int8Layer>,
        x: &Tensor,
        batch: &Batch,
    ) -> Result<Tensor> {
        let mut qkv = self.linear(&layer.qkv, int8.and_then(|q| q.qkv.as_ref()), x)?;
        if let Some(rotary) = batch.rotary {
            qkv = rotary.apply(&qkv, batch.b, batch.len, self.heads)?;
        }
        let ctx = if self.fused_cpu {
            qkv.apply_op1_no_bwd(&Attention {
                batch: batch.b,
                len: batch.len,
                packed: batch.packed,
                heads: self.heads,
                head_dim: self.head_dim,
                lens: batch.lens.to_vec(),
                scale: batch.scale as f32,
            })?
        } else {
            let Some(bias) = batch.bias else {
                candle_core::bail!("forward pass without an attention mask");
            };
            self.attention(&qkv, batch, bias)?
        };
        let out = self.linear(
            &layer.attn_out,
            int8.and_then(|q| q.attn_out.as_ref()),
            &ctx,
        )?;
        self.residual_norm(out, x, &layer.attn_norm)
    }

    /// `norm(y + x)`: in place in `y` (a dense layer's fresh output) on the fused
    /// CPU path, else candle's add and layer norm.
    fn residual_norm(&self, y: Tensor, x: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
        match norm.bias() {
            Some(bias) if self.fused_cpu && y.is_contiguous() && x.is_contiguous() => {
                let params = Tensor::stack(&[norm.weight(), bias], 0)?;
                y.inplace_op3(
                    x,
                    &params,
                    &AddNorm {
                        eps: norm.eps() as f32,
                    },
                )?;
                Ok(y)
            }
            _ => norm.forward(&(y + x)?),
        }
    }

    fn feed_forward(&self, layer: &Layer, int8: Option<&Int8Layer>, x: &Tensor) -> Result<Tensor> {
        let up = self.linear(&layer.up, int8.and_then(|q| q.up.as_ref()), x)?;
        let down = int8.and_then(|q| q.down.as_ref());
        if let Some(gate) = &layer.gate {
            let gate = self.linear(gate, int8.and_then(|q| q.gate.as_ref()), x)?;
            let gated = (candle_nn::ops::silu(&gate)? * up)?;
            let out = self.linear(&layer.down, down, &gated)?;
            return self.residual_norm(out, x, &layer.out_norm);
        }
        let up = match self.act {
            Act::GeluErf if self.fused_cpu => {
                up.inplace_op1(&GeluErf)?;
                up
            }
            Act::GeluErf => up.gelu_erf()?,
            Act::GeluTanh => up.gelu()?,
            Act::Relu => up.relu()?,
        };
        let out = self.linear(&layer.down, down, &up)?;
        self.residual_norm(out, x, &layer.out_norm)
    }

    /// A dense layer on `[tokens, in]`: int8 for a document batch where the layer
    /// is quantized, GEMM, or one pass over the weights for a query.
    fn linear(&self, linear: &Linear, int8: Option<&QuantLinear>, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = int8 {
            return x.apply_op1_no_bwd(q);
        }
        match linear.bias() {
            Some(bias) if self.fused_cpu && x.dim(0)? <= SMALL_ROWS => {
                x.apply_op3_no_bwd(linear.weight(), bias, &SmallLinear)
            }
            _ => linear.forward(x),
        }
    }

    /// Attention with candle's generic ops, for GPUs and half precision.
    fn attention(&self, qkv: &Tensor, batch: &Batch, bias: &Tensor) -> Result<Tensor> {
        let (nh, hd, b, len) = (self.heads, self.head_dim, batch.b, batch.len);
        // [tokens, 3h] -> [3, b, heads, len, head_dim]: one copy puts q, k and v each
        // in the contiguous layout the batched matmul wants.
        let qkv = qkv
            .reshape((b, len, 3, nh, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        // Pre-scaled at load (see `Bert::load`).
        let q = qkv.get(0)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * len, self.hidden))
    }
}

/// A forward pass in progress: the hidden states after `next_layer` layers
/// (and the attention of the next one, once `attended`).
#[derive(Debug)]
pub(super) struct Pass {
    x: Tensor,
    /// `[b, 1, 1, len]` attention bias (candle's generic ops).
    bias: Option<Tensor>,
    /// u32 `[b]` sequence lengths on the device (the fused CUDA kernels).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    lens_dev: Option<Tensor>,
    lens: Vec<usize>,
    b: usize,
    /// The longest sequence (every row's length, unless `packed`).
    len: usize,
    /// `x` holds the sequences back to back, `lens[i]` rows each, no padding.
    packed: bool,
    next_layer: usize,
    /// The attention half of `next_layer` has run.
    attended: bool,
    /// The rotary tables of this pass's length (NomicBert).
    rotary: Option<RotaryTables>,
    /// Dense layers in int8 (a document batch on a quantized CPU encoder).
    int8: bool,
}

/// The shape of one forward pass, shared by every layer.
struct Batch<'a> {
    /// `[b, 1, 1, len]`: 0 for real keys, a large negative for padding (candle's
    /// generic ops; `None` on the fused CPU kernels, which read `lens`).
    bias: Option<&'a Tensor>,
    /// Real length of each sequence.
    lens: &'a [usize],
    b: usize,
    len: usize,
    /// Rows are the sequences back to back (see [`Pass`]).
    packed: bool,
    /// `1/√head_dim`.
    scale: f64,
    /// Rotates queries and keys (NomicBert).
    rotary: Option<&'a RotaryTables>,
}

/// `[lens.len(), len]` f32: 1 for each sequence's first `lens[i]` tokens, 0 for
/// its padding.
pub(super) fn padding_mask(lens: &[usize], len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&l| (0..len).map(move |i| if i < l { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (lens.len(), len), device)
}

fn fill_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.0e38,
        _ => f32::MIN as f64,
    }
}

/// `[3, hidden]`: a bias added before a layer norm, the norm's weight and its bias.
fn norm_params(bias: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
    let Some(beta) = norm.bias() else {
        candle_core::bail!("layer norm without a bias");
    };
    Tensor::stack(&[bias, norm.weight(), beta], 0)?.contiguous()
}

/// The pieces of an encoder whose weights another module read (NomicBert's
/// names and config, `nomic.rs`): no absolute positions, rotary ones instead.
pub(super) struct RotaryParts {
    pub(super) word: Embedding,
    /// The token-type row 0, added to every token.
    pub(super) token_type: Tensor,
    pub(super) emb_norm: LayerNorm,
    pub(super) layers: Vec<Layer>,
    pub(super) rotary: Rotary,
    pub(super) heads: usize,
    pub(super) hidden: usize,
    pub(super) eps: f64,
}

impl Bert {
    /// Whether the fused CPU kernels run for weights in `vb` (f32 on the CPU);
    /// elsewhere the query weights must come scaled by `1/√head_dim`.
    pub(super) fn fused_cpu_for(vb: &VarBuilder) -> bool {
        vb.device().is_cpu() && vb.dtype() == DType::F32
    }

    /// An encoder with rotary positions and SwiGLU layers, on the generic and
    /// fused CPU paths (the fused CUDA kernels assume absolute positions and
    /// biases, so candle's generic ops run it on a GPU).
    pub(super) fn with_rotary(parts: RotaryParts, dtype: DType, device: Device) -> Self {
        let fused_cpu = device.is_cpu() && dtype == DType::F32;
        Self {
            word: parts.word,
            position: None,
            rotary: Some(parts.rotary),
            token_type: parts.token_type,
            emb_norm: parts.emb_norm,
            layers: parts.layers,
            act: Act::GeluErf,
            heads: parts.heads,
            head_dim: parts.hidden / parts.heads,
            hidden: parts.hidden,
            dtype,
            device,
            fused_cpu,
            fused_cuda: false,
            emb_table: None,
            eps: parts.eps,
            position_offset: 0,
        }
    }
}

/// The same layer with its weight stored `[in, out]` (the `[out, in]` weight a
/// transposed view of it), for the fused CPU path: the query kernel
/// (`SmallLinear`) then sums in vector lanes, and GEMM reads either layout.
fn stored_in_out(linear: &Linear) -> Result<Linear> {
    let w = linear.weight().t()?.contiguous()?.t()?;
    Ok(Linear::new(w, linear.bias().cloned()))
}

/// One encoder layer; `q_scale` multiplies the query projection (weights and bias).
fn load_layer(
    vb: VarBuilder,
    cfg: &BertConfig,
    q_scale: Option<f64>,
    fused_cuda: bool,
) -> Result<Layer> {
    let h = cfg.hidden_size;
    let eps = cfg.layer_norm_eps;
    let attn = vb.pp("attention");
    let sa = attn.pp("self");
    let weight = |name: &str| sa.pp(name).get((h, h), "weight");
    let bias = |name: &str| sa.pp(name).get(h, "bias");
    let (q_w, q_b) = match q_scale {
        None => (weight("query")?, bias("query")?),
        Some(scale) => {
            let f32s = sa.pp("query").to_dtype(DType::F32);
            let scaled = |t: Tensor| (t * scale)?.to_dtype(vb.dtype());
            (
                scaled(f32s.get((h, h), "weight")?)?,
                scaled(f32s.get(h, "bias")?)?,
            )
        }
    };
    let qkv_w = Tensor::cat(&[q_w, weight("key")?, weight("value")?], 0)?;
    let qkv_b = Tensor::cat(&[q_b, bias("key")?, bias("value")?], 0)?;
    let attn_out = candle_nn::linear(h, h, attn.pp("output.dense"))?;
    let attn_norm = candle_nn::layer_norm(h, eps, attn.pp("output.LayerNorm"))?;
    let down = candle_nn::linear(cfg.intermediate_size, h, vb.pp("output.dense"))?;
    let out_norm = candle_nn::layer_norm(h, eps, vb.pp("output.LayerNorm"))?;
    let fused = match (fused_cuda, attn_out.bias(), down.bias()) {
        (true, Some(attn_b), Some(down_b)) => Some((
            norm_params(attn_b, &attn_norm)?,
            norm_params(down_b, &out_norm)?,
        )),
        _ => None,
    };
    Ok(Layer {
        qkv: Linear::new(qkv_w, Some(qkv_b)),
        attn_out,
        attn_norm,
        up: candle_nn::linear(h, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
        gate: None,
        down,
        out_norm,
        fused,
        int8: None,
    })
}

#[cfg(feature = "cuda")]
impl Bert {
    /// Embeddings for the fused path: word and position rows gathered, added and
    /// normalised in one kernel.
    fn begin_fused(&self, ids: &Tensor, lens: &[usize]) -> Result<Pass> {
        let (b, len) = ids.dims2()?;
        let (Some(table), Some(position)) = (&self.emb_table, &self.position) else {
            candle_core::bail!("fused CUDA path without its embedding table");
        };
        let embed = cuda_ops::EmbedNorm {
            vocab: self.word.embeddings().dim(0)?,
            positions: position.embeddings().dim(0)?,
            first: self.position_offset as usize,
            len,
            eps: self.eps as f32,
        };
        let x = ids.flatten_all()?.apply_op2_no_bwd(table, &embed)?;
        let lens_dev: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        Ok(Pass {
            x,
            bias: None,
            lens_dev: Some(Tensor::from_vec(lens_dev, b, &self.device)?),
            lens: lens.to_vec(),
            b,
            len,
            packed: false,
            next_layer: 0,
            attended: false,
            // The fused kernels run only with absolute positions.
            rotary: None,
            int8: false,
        })
    }

    fn add_norm(&self) -> cuda_ops::AddNorm {
        cuda_ops::AddNorm {
            eps: self.eps as f32,
        }
    }

    /// `x · wᵀ` without the bias, which the next fused kernel adds.
    fn gemm(x: &Tensor, linear: &Linear) -> Result<Tensor> {
        x.matmul(&linear.weight().t()?)
    }

    fn bias(linear: &Linear) -> Result<&Tensor> {
        linear
            .bias()
            .ok_or_else(|| candle_core::Error::msg("dense layer without a bias"))
    }

    fn attention_fused(
        &self,
        layer: &Layer,
        x: &Tensor,
        lens: &Tensor,
        params: &Tensor,
        b: usize,
        len: usize,
    ) -> Result<Tensor> {
        let projected = Self::gemm(x, &layer.qkv)?;
        let dims = [b, len, self.heads, self.head_dim];
        let fused = cuda_ops::Attention::plan(self.device.as_cuda_device()?, x.dtype(), dims)?;
        let ctx = if let Some(attention) = fused {
            projected.apply_op3_no_bwd(Self::bias(&layer.qkv)?, lens, &attention)?
        } else {
            let split = cuda_ops::QkvSplit {
                b,
                len,
                heads: self.heads,
                head_dim: self.head_dim,
            };
            let qkv = projected.apply_op2_no_bwd(Self::bias(&layer.qkv)?, &split)?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let probs = q
                .matmul(&k.t()?)?
                .apply_op2_no_bwd(lens, &cuda_ops::MaskedSoftmax)?;
            probs.matmul(&v)?.apply_op1_no_bwd(&cuda_ops::MergeHeads)?
        };
        Self::gemm(&ctx, &layer.attn_out)?.apply_op3_no_bwd(x, params, &self.add_norm())
    }

    fn feed_forward_fused(&self, layer: &Layer, x: &Tensor, params: &Tensor) -> Result<Tensor> {
        let up = Self::gemm(x, &layer.up)?
            .apply_op2_no_bwd(Self::bias(&layer.up)?, &cuda_ops::BiasGelu)?;
        Self::gemm(&up, &layer.down)?.apply_op3_no_bwd(x, params, &self.add_norm())
    }
}
