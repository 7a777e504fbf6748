//! NomicBert (nomic-embed-text-v1.5, the original codesearch's default model):
//! its `config.json` and the names of its weights as the hub checkpoint has
//! them, loaded onto our encoder (`bert.rs`) with rotary positions and SwiGLU
//! feed-forward blocks.
//!
//! The architecture, against BERT: no position table (queries and keys are
//! rotated, GPT-NeoX style, base `rotary_emb_base`); Q, K and V one matrix
//! without bias (`attn.Wqkv`); the feed-forward block `fc2(silu(fc12(x)) *
//! fc11(x))`, without biases; layer norms after each block (`prenorm: false`),
//! as in BERT.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use super::bert::{Bert, Layer, Rotary, RotaryParts};

/// The fields of nomic's `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct NomicConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Layers.
    pub n_layer: usize,
    /// Feed-forward width.
    pub n_inner: usize,
    /// Token-type rows.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    /// Rotary base.
    #[serde(default = "base")]
    pub rotary_emb_base: f64,
    /// Share of each head that rotates; only 1.0 is supported.
    #[serde(default = "one")]
    pub rotary_emb_fraction: f64,
    /// GPT-J (interleaved) layout instead of GPT-NeoX; only `false` is supported.
    #[serde(default)]
    pub rotary_emb_interleaved: bool,
    /// Layer norm before each block; only `false` (after, as BERT) is supported.
    #[serde(default)]
    pub prenorm: bool,
    /// The feed-forward activation; only `swiglu` is supported.
    #[serde(default = "swiglu")]
    pub activation_function: String,
    /// Positions the model was trained on (longer inputs would need rotary
    /// scaling, which is not implemented: inputs are cut there).
    #[serde(default)]
    pub max_trained_positions: Option<usize>,
    /// Positions the model accepts.
    #[serde(default)]
    pub n_positions: Option<usize>,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Biases on Wqkv, fc11/fc12 and fc2: nomic-embed-text has none; a
    /// checkpoint with them is refused rather than run without them (missing
    /// flags mean true, as in nomic's own config class).
    #[serde(default = "yes")]
    pub qkv_proj_bias: bool,
    /// See `qkv_proj_bias`.
    #[serde(default = "yes")]
    pub mlp_fc1_bias: bool,
    /// See `qkv_proj_bias`.
    #[serde(default = "yes")]
    pub mlp_fc2_bias: bool,
}

fn yes() -> bool {
    true
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn base() -> f64 {
    1000.0
}
fn one() -> f64 {
    1.0
}
fn swiglu() -> String {
    "swiglu".to_owned()
}

impl NomicConfig {
    /// Tokens an input may have: what the model was trained on.
    pub(super) fn max_tokens(&self) -> usize {
        self.max_trained_positions
            .or(self.n_positions)
            .unwrap_or(2048)
    }

    /// Why this configuration cannot run, if it cannot.
    fn unsupported(&self) -> Option<String> {
        if self.rotary_emb_fraction != 1.0 {
            return Some(format!(
                "rotary_emb_fraction {} (only 1.0 is supported)",
                self.rotary_emb_fraction
            ));
        }
        if self.rotary_emb_interleaved {
            return Some("rotary_emb_interleaved (only the GPT-NeoX layout is supported)".into());
        }
        if self.qkv_proj_bias || self.mlp_fc1_bias || self.mlp_fc2_bias {
            return Some(
                "biases on the projections (qkv_proj_bias, mlp_fc1_bias, mlp_fc2_bias must be false)"
                    .into(),
            );
        }
        if self.prenorm {
            return Some("prenorm (only post-norm layers are supported)".into());
        }
        if self.activation_function != "swiglu" {
            return Some(format!(
                "activation_function `{}` (only swiglu is supported)",
                self.activation_function
            ));
        }
        if self.n_head == 0
            || !self.n_embd.is_multiple_of(self.n_head)
            || !(self.n_embd / self.n_head).is_multiple_of(2)
        {
            return Some(format!("n_embd {} and n_head {}", self.n_embd, self.n_head));
        }
        None
    }
}

/// Builds the encoder from a NomicBert checkpoint (names as on the hub, with
/// or without a `bert.` prefix).
pub(super) fn load(vb: VarBuilder, cfg: &NomicConfig) -> Result<Bert> {
    if let Some(why) = cfg.unsupported() {
        candle_core::bail!("unsupported NomicBert configuration: {why}");
    }
    let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
        vb.pp("bert")
    } else {
        vb
    };
    let (h, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
    let head_dim = h / cfg.n_head;
    let emb = vb.pp("embeddings");
    let word = candle_nn::embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?;
    let token_type = emb
        .pp("token_type_embeddings")
        .get((cfg.type_vocab_size, h), "weight")?
        .get(0)?;
    let emb_norm = candle_nn::layer_norm(h, eps, vb.pp("emb_ln"))?;
    // As in `Bert::load`: off the fused CPU kernels, 1/√head_dim is folded
    // into the query rows of Wqkv (rotation is linear, so it commutes).
    let q_scale = (!Bert::fused_cpu_for(&vb)).then(|| 1.0 / (head_dim as f64).sqrt());
    let layers = (0..cfg.n_layer)
        .map(|i| load_layer(vb.pp(format!("encoder.layers.{i}")), cfg, q_scale))
        .collect::<Result<Vec<_>>>()?;
    let half = head_dim / 2;
    let rotary = Rotary {
        inv_freq: (0..half)
            .map(|i| 1.0 / (cfg.rotary_emb_base as f32).powf(2.0 * i as f32 / head_dim as f32))
            .collect(),
    };
    Ok(Bert::with_rotary(
        RotaryParts {
            word,
            token_type,
            emb_norm,
            layers,
            rotary,
            heads: cfg.n_head,
            hidden: h,
            eps,
        },
        vb.dtype(),
        vb.device().clone(),
    ))
}

fn load_layer(vb: VarBuilder, cfg: &NomicConfig, q_scale: Option<f64>) -> Result<Layer> {
    let (h, inner, eps) = (cfg.n_embd, cfg.n_inner, cfg.layer_norm_epsilon);
    let linear = |vb: VarBuilder, out: usize, inp: usize| -> Result<Linear> {
        Ok(Linear::new(vb.get((out, inp), "weight")?, None))
    };
    let attn = vb.pp("attn");
    let qkv = match q_scale {
        None => attn.pp("Wqkv").get((3 * h, h), "weight")?,
        Some(scale) => {
            let w = attn
                .pp("Wqkv")
                .to_dtype(DType::F32)
                .get((3 * h, h), "weight")?;
            let q = (w.narrow(0, 0, h)? * scale)?;
            Tensor::cat(&[&q, &w.narrow(0, h, 2 * h)?], 0)?.to_dtype(vb.dtype())?
        }
    };
    let mlp = vb.pp("mlp");
    Ok(Layer {
        qkv: Linear::new(qkv, None),
        attn_out: linear(attn.pp("out_proj"), h, h)?,
        attn_norm: candle_nn::layer_norm(h, eps, vb.pp("norm1"))?,
        up: linear(mlp.pp("fc11"), inner, h)?,
        gate: Some(linear(mlp.pp("fc12"), inner, h)?),
        down: linear(mlp.pp("fc2"), h, inner)?,
        out_norm: candle_nn::layer_norm(h, eps, vb.pp("norm2"))?,
        fused: None,
        int8: None,
    })
}
