//! Resemblyzer's GE2E voice encoder on MLX: a 3-layer LSTM (hidden 256) over 40-band mel
//! frames, the last layer's final hidden state through a linear layer (256), ReLU, and
//! L2 normalisation. One forward pass embeds a whole batch of windows.
//!
//! PyTorch's LSTM, per layer and step: gates = W_ih x + b_ih + W_hh h + b_hh, split in
//! that order into input, forget, cell and output gates; c = σ(f) c + σ(i) tanh(g);
//! h = σ(o) tanh(c). The input projection of every step is one matrix product up front;
//! only the recurrent product runs step by step.

use std::path::Path;

use mlx_rs::ops;
use mlx_rs::Array;

use crate::error::{Result, SpeakerError};
use crate::lstm;
use crate::mel::{volume_gain, MelFrontEnd, HOP, N_MELS};
use crate::torch_pickle;
use crate::Embedding;

/// Mel frames in one window (1.6 s), Resemblyzer's `partials_n_frames`.
pub const WINDOW_FRAMES: usize = 160;
/// Samples in one window.
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;
/// Size of an embedding.
pub const EMBEDDING_DIM: usize = 256;
pub(crate) const HIDDEN: usize = 256;
const LAYERS: usize = 3;
/// Windows per forward pass: bounds the pass's memory (inputs and gate activations,
/// about 1.3 MB a window) whatever the file's length.
const MAX_BATCH: usize = 256;
/// Resemblyzer's `embed_utterance` defaults: 1.3 windows a second (a step of 77 frames),
/// and a last, zero-padded window kept when it covers at least 75 % of audio.
const UTTERANCE_RATE: f64 = 1.3;
const MIN_COVERAGE: f64 = 0.75;

struct LstmLayer {
    /// `[in, 4H]`: W_ihᵀ.
    w_ih_t: Array,
    /// `[H, 4H]`: W_hhᵀ.
    w_hh_t: Array,
    /// `[4H]`: b_ih + b_hh.
    bias: Array,
}

/// The loaded voice encoder. Lives on the thread that evaluates MLX (the worker).
pub struct VoiceEncoder {
    layers: Vec<LstmLayer>,
    /// `[H, E]`: the linear layer's weightᵀ.
    linear_t: Array,
    linear_bias: Array,
    /// The same weights for [`lstm`], the forward pass where steno-whisper's CPU kernels run.
    host: lstm::HostWeights,
    front: MelFrontEnd,
}

impl VoiceEncoder {
    /// Reads Resemblyzer's `pretrained.pt` (legacy `torch.save` pickle), without PyTorch.
    pub fn load(path: &Path) -> Result<VoiceEncoder> {
        let bytes = read_bounded(path)?;
        let invalid = |detail: String| SpeakerError::InvalidWeights {
            path: path.to_path_buf(),
            detail,
        };
        let mut tensors = torch_pickle::read_tensors(&bytes, &["model_state"]).map_err(invalid)?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| invalid(format!("no tensor `{name}`")))?;
            if t.shape != shape {
                return Err(invalid(format!(
                    "`{name}` has shape {:?}, expected {shape:?}",
                    t.shape
                )));
            }
            Ok(t.data)
        };
        let mut host = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let input = if l == 0 { N_MELS } else { HIDDEN };
            let w_ih = take(&format!("lstm.weight_ih_l{l}"), &[4 * HIDDEN, input])?;
            let w_hh = take(&format!("lstm.weight_hh_l{l}"), &[4 * HIDDEN, HIDDEN])?;
            let b_ih = take(&format!("lstm.bias_ih_l{l}"), &[4 * HIDDEN])?;
            let b_hh = take(&format!("lstm.bias_hh_l{l}"), &[4 * HIDDEN])?;
            let bias = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
            host.push(lstm::Layer { w_ih, w_hh, bias });
        }
        let host = lstm::HostWeights {
            layers: host,
            linear: take("linear.weight", &[EMBEDDING_DIM, HIDDEN])?,
            linear_bias: take("linear.bias", &[EMBEDDING_DIM])?,
        };
        let transposed = |data: &[f32], rows: usize| -> Result<Array> {
            let cols = data.len() / rows;
            contiguous(&Array::from_slice(data, &[rows as i32, cols as i32]).t())
        };
        let layers = host
            .layers
            .iter()
            .map(|l| {
                Ok(LstmLayer {
                    w_ih_t: transposed(&l.w_ih, 4 * HIDDEN)?,
                    w_hh_t: transposed(&l.w_hh, 4 * HIDDEN)?,
                    bias: Array::from_slice(&l.bias, &[4 * HIDDEN as i32]),
                })
            })
            .collect::<Result<_>>()?;
        let encoder = VoiceEncoder {
            layers,
            linear_t: transposed(&host.linear, EMBEDDING_DIM)?,
            linear_bias: Array::from_slice(&host.linear_bias, &[EMBEDDING_DIM as i32]),
            host,
            front: MelFrontEnd::new(),
        };
        encoder.eval_weights()?;
        Ok(encoder)
    }

    fn eval_weights(&self) -> Result<()> {
        for l in &self.layers {
            for a in [&l.w_ih_t, &l.w_hh_t, &l.bias] {
                a.eval()?;
            }
        }
        self.linear_t.eval()?;
        self.linear_bias.eval()?;
        Ok(())
    }

    /// The mel front end (for callers that cut windows from one whole-file mel).
    pub fn front_end(&self) -> &MelFrontEnd {
        &self.front
    }

    /// Embeds windows of 16 kHz audio, each at most [`WINDOW_SAMPLES`] long (shorter ones
    /// are padded with zeros, as Resemblyzer pads its last window), in batched passes.
    /// Each window's level is raised as Resemblyzer's preprocessing raises an utterance's.
    pub fn embed_windows(&self, windows: &[&[f32]]) -> Result<Vec<Embedding>> {
        let mut mels = Vec::with_capacity(windows.len() * WINDOW_FRAMES * N_MELS);
        for w in windows {
            if w.is_empty() || w.len() > WINDOW_SAMPLES {
                return Err(SpeakerError::InvalidOption(format!(
                    "a window holds {} samples; 1 to {WINDOW_SAMPLES} are embedded",
                    w.len()
                )));
            }
            let gain = volume_gain(w);
            let scaled: Vec<f32> = w.iter().map(|&x| x * gain).collect();
            let mel = self.front.mel(&scaled);
            let mut frames = mel[..mel.len().min(WINDOW_FRAMES * N_MELS)].to_vec();
            frames.resize(WINDOW_FRAMES * N_MELS, 0.0);
            mels.extend(frames);
        }
        self.embed_mels(&mels)
    }

    /// Resemblyzer's `embed_utterance` on `normalize_volume(samples, -30, increase_only)`:
    /// windows of 1.6 s at 1.3 a second cut from the utterance's mel, embedded, averaged
    /// and normalised.
    pub fn embed_utterance(&self, samples: &[f32]) -> Result<Embedding> {
        if samples.is_empty() {
            return Err(SpeakerError::InvalidOption("an empty utterance".into()));
        }
        let starts = utterance_windows(samples.len());
        let padded_len = (starts.last().copied().unwrap_or(0) + WINDOW_FRAMES) * HOP;
        let gain = volume_gain(samples);
        let mut wav: Vec<f32> = samples.iter().map(|&x| x * gain).collect();
        if padded_len >= wav.len() {
            wav.resize(padded_len, 0.0);
        }
        let mel = self.front.mel(&wav);
        let mut mels = Vec::with_capacity(starts.len() * WINDOW_FRAMES * N_MELS);
        for s in &starts {
            mels.extend_from_slice(&mel[s * N_MELS..(s + WINDOW_FRAMES) * N_MELS]);
        }
        Ok(Embedding::mean(&self.embed_mels(&mels)?))
    }

    /// Embeds frame-major mel windows of [`WINDOW_FRAMES`] × [`N_MELS`] each, laid end
    /// to end in `mels`.
    pub fn embed_mels(&self, mels: &[f32]) -> Result<Vec<Embedding>> {
        let per_window = WINDOW_FRAMES * N_MELS;
        if !mels.len().is_multiple_of(per_window) {
            return Err(SpeakerError::InvalidOption(
                "mel windows must be 160 frames of 40 bands".into(),
            ));
        }
        let mut out = Vec::with_capacity(mels.len() / per_window);
        for chunk in mels.chunks(MAX_BATCH * per_window) {
            if steno_whisper::cpu::available() {
                let flat = lstm::embed(&self.host, chunk, WINDOW_FRAMES);
                out.extend(
                    flat.chunks_exact(EMBEDDING_DIM)
                        .map(|e| Embedding(e.to_vec())),
                );
                continue;
            }
            let batch = chunk.len() / per_window;
            let input =
                Array::from_slice(chunk, &[batch as i32, WINDOW_FRAMES as i32, N_MELS as i32]);
            let embeds = self.forward(&input)?;
            embeds.eval()?;
            let flat = embeds.as_slice::<f32>();
            out.extend(
                flat.chunks_exact(EMBEDDING_DIM)
                    .map(|e| Embedding(e.to_vec())),
            );
        }
        Ok(out)
    }

    /// `[B, T, 40]` mel → `[B, 256]` unit embeddings.
    fn forward(&self, mels: &Array) -> Result<Array> {
        let shape = mels.shape();
        let (batch, steps) = (shape[0], shape[1]);
        // Time-major, so that each step's rows are one contiguous slice.
        let mut x = mels.transpose_axes(&[1, 0, 2])?;
        let mut h = ops::zeros::<f32>(&[batch, HIDDEN as i32])?;
        for layer in &self.layers {
            let input_dim = x.shape()[2];
            let pre = ops::add(
                &x.reshape(&[steps * batch, input_dim])?
                    .matmul(&layer.w_ih_t)?,
                &layer.bias,
            )?
            .reshape(&[steps, batch, 4 * HIDDEN as i32])?;
            let pre_steps = pre.split_equal(steps, 0)?;
            h = ops::zeros::<f32>(&[batch, HIDDEN as i32])?;
            let mut c = ops::zeros::<f32>(&[batch, HIDDEN as i32])?;
            let mut outputs = Vec::with_capacity(steps as usize);
            for p in pre_steps {
                let gates = ops::add(
                    &p.reshape(&[batch, 4 * HIDDEN as i32])?,
                    &h.matmul(&layer.w_hh_t)?,
                )?;
                let g = gates.split_equal(4, -1)?;
                let (i, f, cell, o) = (
                    ops::sigmoid(&g[0])?,
                    ops::sigmoid(&g[1])?,
                    ops::tanh(&g[2])?,
                    ops::sigmoid(&g[3])?,
                );
                c = ops::add(&ops::multiply(&f, &c)?, &ops::multiply(&i, &cell)?)?;
                h = ops::multiply(&o, &ops::tanh(&c)?)?;
                outputs.push(h.clone());
            }
            x = ops::stack(&outputs, 0)?;
        }
        let raw = ops::maximum(
            &ops::add(&h.matmul(&self.linear_t)?, &self.linear_bias)?,
            Array::from_f32(0.0),
        )?;
        let norm = ops::sqrt(&ops::multiply(&raw, &raw)?.sum_axis(-1, true)?)?;
        Ok(ops::divide(
            &raw,
            &ops::maximum(&norm, Array::from_f32(1e-12))?,
        )?)
    }
}

/// Resemblyzer's `compute_partial_slices(n_samples, rate=1.3, min_coverage=0.75)`: the
/// first mel frame of each window of an utterance.
pub fn utterance_windows(n_samples: usize) -> Vec<usize> {
    let n_frames = (n_samples + 1).div_ceil(HOP);
    let step = ((16_000.0 / UTTERANCE_RATE) / HOP as f64).round() as usize;
    let steps = (n_frames + step + 1).saturating_sub(WINDOW_FRAMES).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(step).collect();
    let last = *starts.last().expect("at least one window");
    let coverage = (n_samples as f64 - (last * HOP) as f64) / WINDOW_SAMPLES as f64;
    if coverage < MIN_COVERAGE && starts.len() > 1 {
        starts.pop();
    }
    starts
}

/// A transposed view made row-major once at load, so that each step's product reads
/// its weights in order.
fn contiguous(a: &Array) -> Result<Array> {
    let copy = ops::add(a, Array::from_f32(0.0))?;
    copy.eval()?;
    Ok(copy)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let io = |source| SpeakerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > torch_pickle::MAX_FILE_BYTES as u64 {
        return Err(SpeakerError::InvalidWeights {
            path: path.to_path_buf(),
            detail: format!("{len} bytes; a voice encoder is under 64 MiB"),
        });
    }
    std::fs::read(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utterance_windows_follow_resemblyzer() {
        // compute_partial_slices(n, 1.3, 0.75) in Python, by hand:
        // 1 s: one window; 3 s: frames 301, step 77 -> range(0, 219, 77) = 0, 77, 154;
        // the last covers (48000 - 24640) / 25600 = 0.91 >= 0.75, kept.
        assert_eq!(utterance_windows(16_000), vec![0]);
        assert_eq!(utterance_windows(48_000), vec![0, 77, 154]);
        // 2 s: frames 201 -> range(0, 119, 77) = 0, 77; the last covers 0.77, kept.
        assert_eq!(utterance_windows(32_000), vec![0, 77]);
    }
}
