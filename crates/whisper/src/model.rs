//! The Whisper encoder and decoder on mlx-rs.
//!
//! Layout is channels-last as in mlx-examples: mel windows enter as
//! `[batch, frames, n_mels]`, hidden states are `[batch, time, state]`. Weights keep
//! OpenAI's names and PyTorch shapes (linear `[out, in]`, conv `[out, in, kernel]`)
//! in [`Weights`]; conv kernels are transposed to MLX's `[out, kernel, in]` once at
//! load. Linear layers multiply by the transposed view, which MLX hands to BLAS as a
//! transpose flag rather than a copy.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::{self, indexing::TryIndexOp};
use mlx_rs::{Array, Dtype};

use crate::config::ModelDims;
use crate::error::{Result, WhisperError};
use crate::host_logits::HostLogits;
use crate::runtime::stage;

/// Weights by canonical (OpenAI) parameter name.
pub type Weights = HashMap<String, Array>;

/// Takes named tensors out of a weight map, with errors that name what is missing.
pub(crate) struct WeightTaker<'a> {
    weights: &'a mut Weights,
    dtype: Dtype,
    source: &'a std::path::Path,
}

impl<'a> WeightTaker<'a> {
    pub(crate) fn new(weights: &'a mut Weights, dtype: Dtype, source: &'a std::path::Path) -> Self {
        Self {
            weights,
            dtype,
            source,
        }
    }

    fn raw(&mut self, name: &str) -> Result<Array> {
        self.weights
            .remove(name)
            .ok_or_else(|| WhisperError::MissingTensor {
                path: self.source.to_path_buf(),
                name: name.to_string(),
            })
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Array> {
        let array = self.raw(name)?;
        let actual: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
        if actual != shape {
            return Err(WhisperError::ShapeMismatch {
                path: self.source.to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                actual,
            });
        }
        Ok(array.as_dtype(self.dtype)?)
    }

    fn has(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    fn linear(
        &mut self,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Linear> {
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[outputs])?)
        } else {
            None
        };
        if self.has(&format!("{prefix}.scales")) {
            return self.quantized_linear(prefix, inputs, outputs, bias);
        }
        let weight = self.take(&format!("{prefix}.weight"), &[outputs, inputs])?;
        Ok(Linear {
            weight: LinearWeight::Dense(weight),
            bias,
        })
    }

    fn quantized_linear(
        &mut self,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        bias: Option<Array>,
    ) -> Result<Linear> {
        let weight = self.raw(&format!("{prefix}.weight"))?;
        let scales = self.raw(&format!("{prefix}.scales"))?;
        let biases = self.raw(&format!("{prefix}.biases"))?;
        let packed = weight.shape().last().copied().unwrap_or(0) as usize;
        let groups = scales.shape().last().copied().unwrap_or(0) as usize;
        if packed == 0 || groups == 0 || weight.shape()[0] as usize != outputs {
            return Err(self.bad(prefix, "quantized weight has an unexpected shape"));
        }
        let bits = 32 * packed / inputs;
        let group_size = inputs / groups;
        if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) || group_size * groups != inputs {
            return Err(self.bad(prefix, "cannot infer quantization bits/group size"));
        }
        Ok(Linear {
            weight: LinearWeight::Quantized {
                weight,
                scales: scales.as_dtype(self.dtype)?,
                biases: biases.as_dtype(self.dtype)?,
                group_size: group_size as i32,
                bits: bits as i32,
            },
            bias,
        })
    }

    fn bad(&self, name: &str, detail: &str) -> WhisperError {
        WhisperError::InvalidModel {
            path: self.source.to_path_buf(),
            detail: format!("{name}: {detail}"),
        }
    }

    fn layer_norm(&mut self, prefix: &str, state: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{prefix}.weight"), &[state])?,
            bias: self.take(&format!("{prefix}.bias"), &[state])?,
        })
    }

    /// An embedding table `[rows, state]`, dequantized if stored quantized.
    fn embedding(&mut self, name: &str, rows: usize, state: usize) -> Result<Array> {
        let prefix = name.trim_end_matches(".weight");
        if self.has(&format!("{prefix}.scales")) {
            let linear = self.quantized_linear(prefix, state, rows, None)?;
            if let LinearWeight::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            } = linear.weight
            {
                return Ok(
                    ops::dequantize(&weight, &scales, &biases, group_size, bits)?
                        .as_dtype(self.dtype)?,
                );
            }
        }
        self.take(name, &[rows, state])
    }

    fn conv(&mut self, prefix: &str, out: usize, inputs: usize) -> Result<(Array, Array)> {
        let weight = self.take(&format!("{prefix}.weight"), &[out, inputs, 3])?;
        // PyTorch [out, in, kernel] → MLX [out, kernel, in].
        let weight = weight.transpose_axes(&[0, 2, 1])?;
        let bias = self.take(&format!("{prefix}.bias"), &[out])?;
        Ok((weight, bias))
    }
}

enum LinearWeight {
    Dense(Array),
    Quantized {
        weight: Array,
        scales: Array,
        biases: Array,
        group_size: i32,
        bits: i32,
    },
}

pub struct Linear {
    weight: LinearWeight,
    bias: Option<Array>,
}

impl Linear {
    fn dense_weight<'a>(&'a self, out: &mut Vec<&'a Array>) {
        if let LinearWeight::Dense(w) = &self.weight {
            out.push(w);
        }
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        // On a GPU the bias joins the product's epilogue (one pass less): the
        // turbo-shaped encoder 6-11 % faster on the H100 (deploy/gpu/RESULTS.md).
        if let (LinearWeight::Dense(w), Some(b)) = (&self.weight, &self.bias) {
            if !on_cpu() {
                return Ok(ops::addmm(b, x, w.t(), None, None)?);
            }
        }
        let y = match &self.weight {
            LinearWeight::Dense(w) => x.matmul(w.t())?,
            LinearWeight::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            } => ops::quantized_matmul(x, weight, scales, biases, true, *group_size, *bits)?,
        };
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}

pub struct LayerNorm {
    weight: Array,
    bias: Array,
}

impl LayerNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(fast::layer_norm(x, &self.weight, &self.bias, 1e-5)?)
    }
}

pub struct Attention {
    n_head: i32,
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
}

/// Whether MLX's default device is the CPU (fixed for the life of the process).
pub(crate) fn on_cpu() -> bool {
    static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CPU.get_or_init(|| {
        !matches!(
            mlx_rs::Device::default().get_type(),
            Ok(mlx_rs::DeviceType::Gpu)
        )
    })
}

/// `f` applied to slices of the arrays `x` along their axis 1 (heads, or time), each
/// slice on its own CPU lane ([`crate::runtime::set_cpu_lanes`]), joined back along
/// that axis; `f(x)` on the default stream where there are no lanes or the arrays are
/// small.
fn in_lanes(x: &[&Array], f: impl Fn(&[Array]) -> Result<Array>) -> Result<Array> {
    crate::runtime::with_cpu_lanes(|lanes| split_over(lanes, x, &f))
}

/// [`in_lanes`] over the given streams.
fn split_over(
    lanes: &[mlx_rs::Stream],
    x: &[&Array],
    f: &impl Fn(&[Array]) -> Result<Array>,
) -> Result<Array> {
    let length = x[0].shape()[1];
    let parts = lanes.len().min(length as usize);
    // Below this many elements a lane's dispatch and the join cost more than they save
    // (a decoder step's rows).
    const WORTH_SPLITTING: usize = 1 << 18;
    if parts < 2 || x[0].size() < WORTH_SPLITTING {
        return f(&x.iter().map(|a| (*a).clone()).collect::<Vec<_>>());
    }
    let mut outputs = Vec::with_capacity(parts);
    for (i, lane) in lanes[..parts].iter().enumerate() {
        let from = length * i as i32 / parts as i32;
        let to = length * (i as i32 + 1) / parts as i32;
        let slices = x
            .iter()
            .map(|a| a.try_index((.., from..to)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        outputs.push(mlx_rs::with_stream(lane, || f(&slices))?);
    }
    Ok(ops::concatenate(&outputs, 1)?)
}

/// Whether unmasked attention on the CPU uses [`power_of_two_attention`]: on x86, where
/// MLX's CPU `exp` is a scalar polynomial (~17 ns an element here, most of an encoder
/// window) and `power` with a scalar base is libm's (~8 ns). Elsewhere MLX's `exp` is
/// vectorised and sdpa stays.
const POWER_OF_TWO_SOFTMAX: bool = cfg!(target_arch = "x86_64");

/// `softmax(q·kᵀ·scale)·v` with `2^x` for `e^x`: log2(e) folds into the scale, and the
/// row sums divide the `[t, d]` output instead of the `[t, t]` weights. Measured on
/// 6 heads × 1500²: ~25 % less time than sdpa's fallback, outputs within 2e-5.
fn power_of_two_attention(q: &Array, k: &Array, v: &Array, scale: f32) -> Result<Array> {
    let scores = q
        .multiply(Array::from_f32(scale * std::f32::consts::LOG2_E))?
        .matmul(k.swap_axes(-1, -2)?)?;
    let max = scores.max_axis(-1, true)?;
    let weights = ops::power(Array::from_f32(2.0), scores.subtract(&max)?)?;
    let sums = weights.sum_axis(-1, true)?;
    Ok(weights.matmul(v)?.divide(&sums)?)
}

/// Attention for one query per row as two matrix-vector products per head
/// (`keys · qᵀ`, then `weights · values`) on the cached layout. On MLX's CPU
/// backend sdpa's `[batch·heads]` tiny matrix products cost ~25 ms per row per
/// decoder step, and a broadcast multiply-and-sum over the cache runs MLX's
/// single-threaded elementwise kernels (≈ 8× slower than these products at 16 rows).
/// The caches must be contiguous, or every step copies them.
fn single_query_attention(
    q: &Array,
    keys: &Array,
    values: &Array,
    scale: f32,
    mask: Option<&Array>,
) -> Result<Array> {
    // keys [b, h, t, d] · qᵀ [b, h, d, 1] → scores [b, h, t, 1] → [b, h, 1, t]
    let scores = keys
        .matmul(q.swap_axes(-1, -2)?.multiply(Array::from_f32(scale))?)?
        .swap_axes(-1, -2)?;
    let scores = match mask {
        // mask [b, 1, 1, t]
        Some(m) => scores.add(m)?,
        None => scores,
    };
    let weights = ops::softmax_axis(&scores, -1, true)?;
    // weights [b, h, 1, t] · values [b, h, t, d] → [b, h, 1, d]
    Ok(weights.matmul(values)?)
}

/// `[batch, time, state]` → `[batch, heads, time, head_dim]`.
fn split_heads(x: &Array, n_head: i32) -> Result<Array> {
    let shape = x.shape();
    let (b, t, d) = (shape[0], shape[1], shape[2]);
    Ok(x.reshape(&[b, t, n_head, d / n_head])?
        .transpose_axes(&[0, 2, 1, 3])?)
}

fn merge_heads(x: &Array) -> Result<Array> {
    let shape = x.shape();
    let (b, h, t, dh) = (shape[0], shape[1], shape[2], shape[3]);
    Ok(x.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, t, h * dh])?)
}

impl Attention {
    fn load(w: &mut WeightTaker, prefix: &str, state: usize, n_head: usize) -> Result<Self> {
        Ok(Self {
            n_head: n_head as i32,
            query: w.linear(&format!("{prefix}.query"), state, state, true)?,
            key: w.linear(&format!("{prefix}.key"), state, state, false)?,
            value: w.linear(&format!("{prefix}.value"), state, state, true)?,
            out: w.linear(&format!("{prefix}.out"), state, state, true)?,
        })
    }

    fn dense_weights<'a>(&'a self, out: &mut Vec<&'a Array>) {
        for l in [&self.query, &self.key, &self.value, &self.out] {
            l.dense_weight(out);
        }
    }

    fn scale(&self, state: i32) -> f32 {
        1.0 / ((state / self.n_head) as f32).sqrt()
    }

    /// Keys and values of `x` split into heads.
    fn key_value(&self, x: &Array) -> Result<(Array, Array)> {
        Ok((
            split_heads(&self.key.forward(x)?, self.n_head)?,
            split_heads(&self.value.forward(x)?, self.n_head)?,
        ))
    }

    fn attend(
        &self,
        x: &Array,
        keys: &Array,
        values: &Array,
        mask: Option<&Array>,
    ) -> Result<Array> {
        let state = x.shape()[2];
        let q = split_heads(&self.query.forward(x)?, self.n_head)?;
        let o = if q.shape()[2] == 1 && on_cpu() {
            single_query_attention(&q, keys, values, self.scale(state), mask)?
        } else if mask.is_none() {
            // The encoder's (and a prompt's unmasked) attention: heads spread over lanes.
            let scale = self.scale(state);
            in_lanes(&[&q, keys, values], |qkv| {
                if POWER_OF_TWO_SOFTMAX && on_cpu() {
                    power_of_two_attention(&qkv[0], &qkv[1], &qkv[2], scale)
                } else {
                    Ok(fast::scaled_dot_product_attention(
                        &qkv[0], &qkv[1], &qkv[2], scale, None, None,
                    )?)
                }
            })?
        } else {
            let mask = mask.map(ScaledDotProductAttentionMask::Array);
            fast::scaled_dot_product_attention(q, keys, values, self.scale(state), mask, None)?
        };
        self.out.forward(&merge_heads(&o)?)
    }

    /// The encoder's self-attention of `x` `[batch, time, state]`: on the CPU with
    /// [`crate::cpu`]'s fused kernel over the evaluated projections, else through
    /// [`Attention::attend`].
    fn encoder_self(&self, x: &Array) -> Result<Array> {
        if !crate::cpu::runs(x) {
            let (k, v) = self.key_value(x)?;
            return stage("attention + projections", self.attend(x, &k, &v, None)?);
        }
        let q = stage("projections", self.query.forward(x)?)?;
        let k = stage("projections", self.key.forward(x)?)?;
        let v = stage("projections", self.value.forward(x)?)?;
        mlx_rs::transforms::eval([&q, &k, &v])?;
        let s = x.shape();
        let shape = crate::cpu::attention::Shape {
            batch: s[0] as usize,
            time: s[1] as usize,
            heads: self.n_head as usize,
            head_dim: (s[2] / self.n_head) as usize,
        };
        let o = crate::cpu::attention::attention(
            q.as_slice(),
            k.as_slice(),
            v.as_slice(),
            shape,
            self.scale(s[2]),
        );
        let o = stage("attention", Array::from_slice(&o, s))?;
        stage("projections", self.out.forward(&o)?)
    }

    /// [`Attention::attend`] for a dynamic decoder step, `x` `[batch, 1, state]`: on
    /// [`crate::cpu`]'s kernel where it runs (not inside a compiled step: it evaluates).
    fn attend_step(
        &self,
        x: &Array,
        keys: &Array,
        values: &Array,
        mask: Option<&Array>,
    ) -> Result<Array> {
        if x.shape()[1] != 1 || !crate::cpu::runs(x) {
            return self.attend(x, keys, values, mask);
        }
        let q = self.query.forward(x)?;
        let s = keys.shape();
        let shape = crate::cpu::attention::StepShape {
            batch: s[0] as usize,
            heads: s[1] as usize,
            keys: s[2] as usize,
            head_dim: s[3] as usize,
        };
        // Slices need row-major buffers: a cache whose unused prefix was sliced off is a
        // view (copied here, as MLX's own product would).
        let [q, keys, values] = [&q, keys, values].map(|a| a.contiguous());
        let (q, keys, values) = (q?, keys?, values?);
        let mask = mask
            .map(|m| m.as_dtype(Dtype::Float32)?.contiguous())
            .transpose()?;
        let o = crate::cpu::attention::single_query(
            q.as_slice(),
            keys.as_slice(),
            values.as_slice(),
            mask.as_ref().map(|m| m.as_slice()),
            shape,
            self.scale(shape.heads as i32 * shape.head_dim as i32),
        );
        self.out
            .forward(&Array::from_slice(&o, &[s[0], 1, s[1] * s[3]]))
    }

    /// Softmax attention weights `[batch, heads, q, k]` (for word alignment).
    fn weights(&self, x: &Array, keys: &Array) -> Result<Array> {
        let state = x.shape()[2];
        let q = split_heads(&self.query.forward(x)?, self.n_head)?;
        let scores = q.matmul(keys.transpose_axes(&[0, 1, 3, 2])?)?;
        let scores = scores.multiply(Array::from_f32(self.scale(state)))?;
        Ok(ops::softmax_axis(&scores, -1, true)?)
    }
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
    ln: LayerNorm,
}

impl Mlp {
    fn load(w: &mut WeightTaker, prefix: &str, state: usize) -> Result<Self> {
        Ok(Self {
            fc1: w.linear(&format!("{prefix}.mlp.0"), state, 4 * state, true)?,
            fc2: w.linear(&format!("{prefix}.mlp.2"), 4 * state, state, true)?,
            ln: w.layer_norm(&format!("{prefix}.mlp_ln"), state)?,
        })
    }

    fn residual(&self, x: &Array) -> Result<Array> {
        let h = stage("layer norm", self.ln.forward(x)?)?;
        let h = stage("mlp matmul", self.fc1.forward(&h)?)?;
        let h = stage("gelu", gelu(&h)?)?;
        let h = stage("mlp matmul", self.fc2.forward(&h)?)?;
        stage("elementwise", x.add(h)?)
    }
}

/// GELU with its rows (time) spread over the cores: [`crate::cpu`]'s kernel where it
/// runs, else MLX's on the CPU lanes.
fn gelu(x: &Array) -> Result<Array> {
    if crate::cpu::runs(x) {
        x.eval()?;
        let shape = x.shape();
        let out = crate::cpu::gelu(x.as_slice(), shape[shape.len() - 1] as usize);
        return Ok(Array::from_slice(&out, shape));
    }
    in_lanes(&[x], |x| mlx_gelu(&x[0]))
}

/// MLX's erf GELU in `x`'s dtype, computed in f32 inside one compiled kernel. mlx-rs's
/// `nn::gelu` multiplies by f32 arrays, which promotes f16 activations to f32: on a GPU
/// everything after the first GELU then ran in f32 (TF32 GEMMs, f16 weights cast at every
/// product, sdpa's fused kernels refused since they take f16 or bf16 only).
fn mlx_gelu(x: &Array) -> Result<Array> {
    use mlx_rs::transforms::compile::compile;
    Ok(match x.dtype() {
        Dtype::Float16 => compile(gelu_f16, true)(x)?,
        Dtype::Bfloat16 => compile(gelu_bf16, true)(x)?,
        _ => mlx_rs::nn::gelu(x)?,
    })
}

// One function per dtype: `compile` caches its graph per function, so the output dtype
// cannot be a captured variable.
fn gelu_f16(x: &Array) -> std::result::Result<Array, mlx_rs::error::Exception> {
    erf_gelu_f32(&x.as_dtype(Dtype::Float32)?)?.as_dtype(Dtype::Float16)
}

fn gelu_bf16(x: &Array) -> std::result::Result<Array, mlx_rs::error::Exception> {
    erf_gelu_f32(&x.as_dtype(Dtype::Float32)?)?.as_dtype(Dtype::Bfloat16)
}

/// `x · (1 + erf(x / √2)) / 2` on an f32 array.
fn erf_gelu_f32(x: &Array) -> std::result::Result<Array, mlx_rs::error::Exception> {
    let erf = ops::erf(&x.multiply(Array::from_f32(std::f32::consts::FRAC_1_SQRT_2))?)?;
    x.multiply(erf.add(Array::from_f32(1.0))?)?
        .multiply(Array::from_f32(0.5))
}

struct EncoderBlock {
    attn: Attention,
    attn_ln: LayerNorm,
    mlp: Mlp,
}

pub struct AudioEncoder {
    conv1: (Array, Array),
    conv2: (Array, Array),
    positional: Array,
    blocks: Vec<EncoderBlock>,
    ln_post: LayerNorm,
}

impl AudioEncoder {
    fn load(w: &mut WeightTaker, dims: &ModelDims) -> Result<Self> {
        let state = dims.n_audio_state;
        let blocks = (0..dims.n_audio_layer)
            .map(|i| {
                let p = format!("encoder.blocks.{i}");
                Ok(EncoderBlock {
                    attn: Attention::load(w, &format!("{p}.attn"), state, dims.n_audio_head)?,
                    attn_ln: w.layer_norm(&format!("{p}.attn_ln"), state)?,
                    mlp: Mlp::load(w, &p, state)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv1: w.conv("encoder.conv1", state, dims.n_mels)?,
            conv2: w.conv("encoder.conv2", state, state)?,
            positional: w.take("encoder.positional_embedding", &[dims.n_audio_ctx, state])?,
            blocks,
            ln_post: w.layer_norm("encoder.ln_post", state)?,
        })
    }

    /// `[batch, 2·ctx, n_mels]` mel windows → `[batch, ctx, state]` audio features.
    /// Its stages are marked for [`crate::runtime::profile`].
    pub fn forward(&self, mel: &Array) -> Result<Array> {
        let x = stage(
            "conv",
            ops::conv1d(mel, &self.conv1.0, 1, 1, 1, 1)?.add(&self.conv1.1)?,
        )?;
        let x = stage("gelu", gelu(&x)?)?;
        let x = stage(
            "conv",
            ops::conv1d(&x, &self.conv2.0, 2, 1, 1, 1)?.add(&self.conv2.1)?,
        )?;
        let x = stage("gelu", gelu(&x)?)?;
        let mut x = stage("elementwise", x.add(&self.positional)?)?;
        for block in &self.blocks {
            let h = stage("layer norm", block.attn_ln.forward(&x)?)?;
            x = stage("elementwise", x.add(block.attn.encoder_self(&h)?)?)?;
            x = block.mlp.residual(&x)?;
        }
        stage("layer norm", self.ln_post.forward(&x)?)
    }
}

struct DecoderBlock {
    attn: Attention,
    attn_ln: LayerNorm,
    cross_attn: Attention,
    cross_attn_ln: LayerNorm,
    mlp: Mlp,
}

/// Per-layer keys and values of one batch of decoder rows.
#[derive(Clone)]
pub struct LayerCache {
    pub self_keys: Array,
    pub self_values: Array,
    pub cross_keys: Array,
    pub cross_values: Array,
}

pub struct TextDecoder {
    token_embedding: Array,
    /// The token embedding as f16 for the CPU kernels' logits, made on first use where
    /// that is exact (`None` where it is not).
    half_embedding: Arc<OnceLock<Option<Vec<half::f16>>>>,
    positional: Array,
    blocks: Vec<DecoderBlock>,
    ln: LayerNorm,
}

impl TextDecoder {
    fn load(w: &mut WeightTaker, dims: &ModelDims) -> Result<Self> {
        let state = dims.n_text_state;
        let blocks = (0..dims.n_text_layer)
            .map(|i| {
                let p = format!("decoder.blocks.{i}");
                Ok(DecoderBlock {
                    attn: Attention::load(w, &format!("{p}.attn"), state, dims.n_text_head)?,
                    attn_ln: w.layer_norm(&format!("{p}.attn_ln"), state)?,
                    cross_attn: Attention::load(
                        w,
                        &format!("{p}.cross_attn"),
                        state,
                        dims.n_text_head,
                    )?,
                    cross_attn_ln: w.layer_norm(&format!("{p}.cross_attn_ln"), state)?,
                    mlp: Mlp::load(w, &p, state)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            token_embedding: w.embedding("decoder.token_embedding.weight", dims.n_vocab, state)?,
            half_embedding: Arc::default(),
            positional: w.take("decoder.positional_embedding", &[dims.n_text_ctx, state])?,
            blocks,
            ln: w.layer_norm("decoder.ln", state)?,
        })
    }

    /// Cross-attention keys/values of audio features `[batch, ctx, state]`, computed
    /// once per window.
    /// Contiguous, so the per-step attention reads them in place.
    pub fn cross_cache(&self, features: &Array) -> Result<Vec<(Array, Array)>> {
        self.blocks
            .iter()
            .map(|b| {
                let (k, v) = b.cross_attn.key_value(features)?;
                Ok((k.contiguous()?, v.contiguous()?))
            })
            .collect()
    }

    /// Fresh per-layer caches for audio features `[batch, ctx, state]`: the
    /// cross-attention keys/values, and empty self-attention keys/values.
    pub fn new_caches(&self, features: &Array) -> Result<Vec<LayerCache>> {
        self.cross_cache(features)?
            .into_iter()
            .map(|(cross_keys, cross_values)| {
                let s = cross_keys.shape();
                let empty = ops::zeros_dtype(&[s[0], s[1], 0, s[3]], cross_keys.dtype())?;
                Ok(LayerCache {
                    self_keys: empty.clone(),
                    self_values: empty,
                    cross_keys,
                    cross_values,
                })
            })
            .collect()
    }

    /// Runs `tokens` `[batch, q]` at `positions` `[batch, q]` against the per-layer
    /// caches, which are extended with the new keys/values. `mask` is additive,
    /// `[batch, 1, q, cached + q]`. Returns the final hidden states `[batch, q, state]`.
    pub fn forward(
        &self,
        tokens: &Array,
        positions: &Array,
        mask: &Array,
        caches: &mut [LayerCache],
    ) -> Result<Array> {
        let x = self
            .token_embedding
            .take_axis(tokens, 0)?
            .add(self.positional.take_axis(positions, 0)?)?;
        let mut x = stage("decoder embedding", x)?;
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.key_value(&h)?;
            cache.self_keys = ops::concatenate(&[&cache.self_keys, &k], 2)?;
            cache.self_values = ops::concatenate(&[&cache.self_values, &v], 2)?;
            let attended =
                block
                    .attn
                    .attend_step(&h, &cache.self_keys, &cache.self_values, Some(mask))?;
            x = stage("decoder self-attention", x.add(attended)?)?;
            let h = block.cross_attn_ln.forward(&x)?;
            let attended =
                block
                    .cross_attn
                    .attend_step(&h, &cache.cross_keys, &cache.cross_values, None)?;
            x = stage("decoder cross-attention", x.add(attended)?)?;
            x = stage("decoder MLP", decoder_mlp(&block.mlp, &x)?)?;
        }
        stage("decoder layer norm", self.ln.forward(&x)?)
    }

    /// Vocabulary logits of hidden states `[.., state]`.
    /// `[rows, state]` → `[rows, vocab]`. Computed as `E·hᵀ` and transposed back:
    /// MLX's CPU GEMM with the 50k-row embedding on the transposed side ran ~20 ms
    /// per decoder step even for one row.
    pub fn logits(&self, hidden: &Array) -> Result<Array> {
        Ok(self.token_embedding.matmul(hidden.t())?.t().contiguous()?)
    }

    /// [`TextDecoder::logits`] of `[rows, state]` on the host: [`crate::cpu::logits`]
    /// where the CPU kernels run, else MLX's product in its own precision.
    pub fn host_logits(&self, hidden: &Array) -> Result<HostLogits> {
        if crate::cpu::runs(hidden) && crate::cpu::runs(&self.token_embedding) {
            hidden.eval()?;
            let state = self.token_embedding.shape()[1] as usize;
            let embedding = self.token_embedding.as_slice::<f32>();
            let half = self
                .half_embedding
                .get_or_init(|| crate::cpu::logits::exact_f16(embedding));
            let rows = hidden.size() / state;
            let values = match half {
                Some(half) if rows <= crate::cpu::logits::MAX_F16_ROWS => {
                    crate::cpu::logits::logits_f16(half, hidden.as_slice(), state)
                }
                _ => crate::cpu::logits::logits(embedding, hidden.as_slice(), state),
            };
            let vocab = embedding.len() / state;
            return Ok(HostLogits::F32 { values, vocab });
        }
        HostLogits::evaluate(&self.logits(hidden)?)
    }

    /// Cross-attention weights of every layer for a full token sequence (no cache),
    /// `[layers][batch, heads, q, audio_ctx]`; used for word-level alignment.
    pub fn cross_attention_weights(
        &self,
        tokens: &Array,
        features: &Array,
        dtype: Dtype,
    ) -> Result<Vec<Array>> {
        let q = tokens.shape()[1];
        let positions = Array::from_iter(0..q, &[1, q]);
        let mut x = self
            .token_embedding
            .take_axis(tokens, 0)?
            .add(self.positional.take_axis(&positions, 0)?)?;
        let causal = causal_mask(q as usize, dtype)?;
        let mut weights = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.key_value(&h)?;
            x = x.add(block.attn.attend(&h, &k, &v, Some(&causal))?)?;
            let h = block.cross_attn_ln.forward(&x)?;
            let (ck, cv) = block.cross_attn.key_value(features)?;
            weights.push(block.cross_attn.weights(&h, &ck)?);
            x = x.add(block.cross_attn.attend(&h, &ck, &cv, None)?)?;
            x = block.mlp.residual(&x)?;
        }
        Ok(weights)
    }
}

/// A batch's self-attention caches preallocated: `[row bucket, heads, time bucket,
/// head_dim]` per layer (at most the text context), row `i`'s keys at time
/// `0..positions[i]`, so that step after step has the same shapes and MLX's compile can
/// replay it.
impl TextDecoder {
    /// One decoder step over static caches, a pure function of arrays (what
    /// [`CompiledStep`] compiles). `inputs`: tokens `[bucket, 1]`, positions `[bucket, 1]`
    /// (int32; each row's token is written to, and attends up to, its position), then per
    /// layer self keys, self values, cross keys, cross values. Returns logits
    /// `[bucket, vocab]`, then per layer the updated self keys and values.
    pub fn static_step(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        let (tokens, positions) = (&inputs[0], &inputs[1]);
        let layers = &inputs[2..];
        let [rows, heads, capacity, head_dim] = layers[0].shape() else {
            return Err(WhisperError::Mlx("static cache must be 4-d".into()));
        };
        let (rows, heads, capacity, head_dim) = (*rows, *heads, *capacity, *head_dim);
        let at = positions.reshape(&[rows, 1, 1, 1])?;
        let dtype = layers[0].dtype();
        let mask = static_mask(&at, capacity, dtype)?;
        let at = ops::broadcast_to(&at, &[rows, heads, 1, head_dim])?;
        let mut x = self
            .token_embedding
            .take_axis(tokens, 0)?
            .add(self.positional.take_axis(positions, 0)?)?;
        let mut outputs = vec![Array::from_f32(0.0)];
        for (block, cache) in self.blocks.iter().zip(layers.chunks_exact(4)) {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.key_value(&h)?;
            let keys = cache[0].put_along_axis(&at, &k, 2)?;
            let values = cache[1].put_along_axis(&at, &v, 2)?;
            x = x.add(block.attn.attend(&h, &keys, &values, Some(&mask))?)?;
            let h = block.cross_attn_ln.forward(&x)?;
            x = x.add(block.cross_attn.attend(&h, &cache[2], &cache[3], None)?)?;
            x = decoder_mlp(&block.mlp, &x)?;
            outputs.extend([keys, values]);
        }
        let state = x.shape()[2];
        outputs[0] = self.logits(&self.ln.forward(&x)?.reshape(&[rows, state])?)?;
        Ok(outputs)
    }

    /// Per-layer static caches of `rows` new rows whose keys/values `caches` hold
    /// right-aligned in a prefill of `longest` steps (row `i` has `lengths[i]` tokens):
    /// each row's moved to time `0..` of a `capacity`-long axis. Past a row's length the
    /// axis holds copies of its last key (finite; masked by [`static_mask`]).
    pub fn left_align(
        caches: Vec<LayerCache>,
        lengths: &[usize],
        longest: usize,
        capacity: usize,
    ) -> Result<Vec<LayerCache>> {
        let mut index = Vec::with_capacity(lengths.len() * capacity);
        for &length in lengths {
            let pad = longest - length;
            index.extend((0..capacity).map(|t| (pad + t).min(longest - 1) as i32));
        }
        let index = Array::from_slice(&index, &[lengths.len() as i32, 1, capacity as i32, 1]);
        caches
            .into_iter()
            .map(|c| {
                Ok(LayerCache {
                    self_keys: c.self_keys.take_along_axis(&index, 2)?,
                    self_values: c.self_values.take_along_axis(&index, 2)?,
                    ..c
                })
            })
            .collect()
    }
}

/// The decoder's MLP residual, all MLX ops ([`mlx_gelu`]): a decoder step's few rows
/// gain nothing from the encoder's host kernels, and [`CompiledStep`] can only trace
/// MLX ops (no evaluation inside).
fn decoder_mlp(mlp: &Mlp, x: &Array) -> Result<Array> {
    let h = mlx_gelu(&mlp.fc1.forward(&mlp.ln.forward(x)?)?)?;
    Ok(x.add(mlp.fc2.forward(&h)?)?)
}

/// Additive mask `[rows, 1, 1, capacity]` of a static step: a row at position `p`
/// (`at`: `[rows, 1, 1, 1]`) sees keys `0..=p`.
fn static_mask(at: &Array, capacity: i32, dtype: Dtype) -> Result<Array> {
    let time = Array::from_iter(0..capacity, &[1, 1, 1, capacity]);
    let visible = time.le(at)?;
    let blocked = Array::from_f32(f32::NEG_INFINITY).as_dtype(dtype)?;
    Ok(ops::select(
        &visible,
        &Array::from_f32(0.0).as_dtype(dtype)?,
        &blocked,
    )?)
}

/// [`TextDecoder::static_step`] compiled by MLX: traced once per input shapes (one
/// row-count bucket each), then replayed with its elementwise work fused.
pub struct CompiledStep {
    step: Box<StepFn>,
}

/// A step over arrays, as mlx-rs's `compile` returns it.
type StepFn = dyn FnMut(&[Array]) -> std::result::Result<Vec<Array>, mlx_rs::error::Exception>;

impl CompiledStep {
    pub fn new(decoder: std::rc::Rc<TextDecoder>) -> Self {
        let f = move |inputs: &[Array]| {
            decoder.static_step(inputs).map_err(|e| {
                eprintln!("DEBUG {e}");
                mlx_rs::error::Exception::custom(e.to_string())
            })
        };
        Self {
            step: Box::new(mlx_rs::transforms::compile::compile(f, false)),
        }
    }

    /// Runs the compiled step: same inputs and outputs as [`TextDecoder::static_step`].
    pub fn call(&mut self, inputs: &[Array]) -> Result<Vec<Array>> {
        Ok((self.step)(inputs)?)
    }
}

fn causal_mask(n: usize, dtype: Dtype) -> Result<Array> {
    let mut data = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            data[i * n + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Array::from_slice(&data, &[1, 1, n as i32, n as i32]).as_dtype(dtype)?)
}

pub struct WhisperModel {
    pub dims: ModelDims,
    pub dtype: Dtype,
    pub encoder: AudioEncoder,
    /// Shared with the compiled decoder step ([`CompiledStep`]), which must own it.
    pub decoder: std::rc::Rc<TextDecoder>,
}

impl WhisperModel {
    /// Builds the model from canonical weights; every tensor must be present with
    /// the shape `dims` implies. Unused extra tensors are ignored.
    pub fn from_weights(
        dims: ModelDims,
        mut weights: Weights,
        dtype: Dtype,
        source: &std::path::Path,
    ) -> Result<Self> {
        let mut taker = WeightTaker::new(&mut weights, dtype, source);
        let encoder = AudioEncoder::load(&mut taker, &dims)?;
        let decoder = TextDecoder::load(&mut taker, &dims)?;
        let model = Self {
            dims,
            dtype,
            encoder,
            decoder: std::rc::Rc::new(decoder),
        };
        model.materialize()?;
        Ok(model)
    }

    /// Evaluates every parameter so load errors surface now, not in the first request.
    fn materialize(&self) -> Result<()> {
        let mut arrays: Vec<&Array> = vec![
            &self.encoder.conv1.0,
            &self.encoder.conv2.0,
            &self.encoder.positional,
            &self.decoder.token_embedding,
            &self.decoder.positional,
        ];
        for b in &self.encoder.blocks {
            b.attn.dense_weights(&mut arrays);
            b.mlp.fc1.dense_weight(&mut arrays);
            b.mlp.fc2.dense_weight(&mut arrays);
        }
        for b in &self.decoder.blocks {
            b.attn.dense_weights(&mut arrays);
            b.cross_attn.dense_weights(&mut arrays);
            b.mlp.fc1.dense_weight(&mut arrays);
            b.mlp.fc2.dense_weight(&mut arrays);
        }
        mlx_rs::transforms::eval(arrays)?;
        Ok(())
    }

    pub fn n_audio_ctx(&self) -> usize {
        self.dims.n_audio_ctx
    }
}

/// Slices `[batch, heads, time, dim]` caches to keep only time steps `from..`.
pub fn drop_cache_prefix(cache: &Array, from: i32) -> Result<Array> {
    Ok(cache.try_index((.., .., from.., ..))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: &[i32]) -> Array {
        let a = mlx_rs::random::normal::<f32>(shape, None, None, None).unwrap();
        a.eval().unwrap();
        a
    }

    #[test]
    fn half_precision_gelu_keeps_its_dtype() {
        let x = random(&[4, 96]);
        let reference = mlx_rs::nn::gelu(&x).unwrap();
        for dtype in [Dtype::Float16, Dtype::Bfloat16] {
            let y = mlx_gelu(&x.as_dtype(dtype).unwrap()).unwrap();
            assert_eq!(y.dtype(), dtype);
            let y = y.as_dtype(Dtype::Float32).unwrap();
            assert!(max_difference(&y, &reference) < 0.02, "{dtype:?}");
        }
    }

    fn max_difference(a: &Array, b: &Array) -> f32 {
        assert_eq!(a.shape(), b.shape());
        ops::abs(a.subtract(b).unwrap())
            .unwrap()
            .max(None)
            .unwrap()
            .item_cast::<f32>()
    }

    #[test]
    fn lanes_and_power_of_two_attention_match_the_default_stream_and_sdpa() {
        let lanes: Vec<mlx_rs::Stream> = (0..3)
            .map(|_| mlx_rs::Stream::new_with_device(&mlx_rs::Device::cpu()))
            .collect();
        // Encoder attention: 6 heads over 3 lanes (2 each).
        let (q, k, v) = (
            random(&[2, 6, 1500, 64]),
            random(&[2, 6, 1500, 64]),
            random(&[2, 6, 1500, 64]),
        );
        let attention = |x: &[Array]| {
            Ok(fast::scaled_dot_product_attention(
                &x[0], &x[1], &x[2], 0.125, None, None,
            )?)
        };
        let split = split_over(&lanes, &[&q, &k, &v], &attention).unwrap();
        let whole = attention(&[q.clone(), k.clone(), v.clone()]).unwrap();
        assert!(max_difference(&split, &whole) < 1e-5);
        // The CPU's power-of-two attention, against sdpa.
        let pow2 = power_of_two_attention(&q, &k, &v, 0.125).unwrap();
        assert!(max_difference(&pow2, &whole) < 1e-4);
        // GELU over 1500 frames, 500 a lane.
        let h = random(&[1, 1500, 384]);
        let gelu = |x: &[Array]| Ok(mlx_rs::nn::gelu(&x[0])?);
        let split = split_over(&lanes, &[&h], &gelu).unwrap();
        assert_eq!(
            max_difference(&split, &gelu(std::slice::from_ref(&h)).unwrap()),
            0.0
        );
        // Small arrays (a decoder step) stay whole.
        let small = random(&[4, 1, 384]);
        let split = split_over(&lanes, &[&small], &gelu).unwrap();
        assert_eq!(
            max_difference(&split, &gelu(std::slice::from_ref(&small)).unwrap()),
            0.0
        );
    }
}
