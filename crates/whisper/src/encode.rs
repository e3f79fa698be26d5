//! Whisper's audio side: the log-mel of a job's audio, batched encoder calls over
//! windows, and language detection from a window's encoder output.

use mlx_rs::Array;

use crate::decoding::AudioFeatures;
use crate::error::Result;
use crate::mel::{self, Mel, WindowedMel, N_FRAMES, N_SAMPLES};
use crate::Whisper;

impl Whisper {
    /// Log-mel of 16 kHz samples, padded with 30 s of silence as OpenAI's `transcribe()`.
    pub fn mel(&self, samples: &[f32]) -> Mel {
        mel::log_mel_spectrogram(samples, &self.mel_filters, N_SAMPLES)
    }

    /// The same log-mel, computed a window at a time from `samples` (kept by the job).
    pub fn windowed_mel(&self, samples: Vec<f32>) -> WindowedMel {
        WindowedMel::new(samples, &self.mel_filters, N_SAMPLES)
    }

    /// Encodes frame-major mel windows `[N_FRAMES × n_mels]` in one batched call.
    pub fn encode(&self, mels: &[Vec<f32>]) -> Result<Vec<AudioFeatures>> {
        let n_mels = self.model.dims.n_mels as i32;
        let mut out = Vec::with_capacity(mels.len());
        for chunk in mels.chunks(self.encoder_batch()) {
            let flat: Vec<f32> = chunk.iter().flat_map(|m| m.iter().copied()).collect();
            let input = Array::from_slice(&flat, &[chunk.len() as i32, N_FRAMES as i32, n_mels])
                .as_dtype(self.model.dtype)?;
            let features = self.model.encoder.forward(&input)?;
            features.eval()?;
            for i in 0..chunk.len() as i32 {
                let index = Array::from_slice(&[i], &[1]);
                out.push(AudioFeatures(features.take_axis(index, 0)?));
            }
        }
        Ok(out)
    }

    /// Windows per encoder call. MLX's CPU backend gains nothing from batching the
    /// encoder (its batched matmuls are slower than 2-D ones) and a batch's attention
    /// scores are `batch × heads × 1500²` floats, so the CPU encodes one at a time;
    /// GPUs take several.
    fn encoder_batch(&self) -> usize {
        match mlx_rs::Device::default().get_type() {
            Ok(mlx_rs::DeviceType::Gpu) => 8,
            _ => 1,
        }
    }

    /// Language probabilities for each window, most likely first.
    pub fn detect_language(&self, features: &[&AudioFeatures]) -> Result<Vec<Vec<(String, f32)>>> {
        let stacked: Vec<&Array> = features.iter().map(|f| &f.0).collect();
        let stacked = mlx_rs::ops::concatenate(&stacked, 0)?;
        let n = features.len() as i32;
        let mut caches = self.model.decoder.new_caches(&stacked)?;
        let tokens = Array::from_slice(&vec![self.tokenizer.sot() as i32; n as usize], &[n, 1]);
        let positions = Array::from_slice(&vec![0i32; n as usize], &[n, 1]);
        let mask = mlx_rs::ops::zeros_dtype(&[n, 1, 1, 1], self.model.dtype)?;
        let hidden = self
            .model
            .decoder
            .forward(&tokens, &positions, &mask, &mut caches)?;
        let state = hidden.shape()[2];
        let logits = self
            .model
            .decoder
            .host_logits(&hidden.reshape(&[n, state])?)?;
        let logits = logits.rows();
        let codes = self.tokenizer.all_language_codes();
        let tokens = self.tokenizer.all_language_tokens();
        Ok((0..n as usize)
            .map(|i| {
                let row = logits.row(i);
                let max = tokens
                    .iter()
                    .map(|&t| row[t as usize])
                    .fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = tokens.iter().map(|&t| (row[t as usize] - max).exp()).sum();
                let mut probs: Vec<(String, f32)> = codes
                    .iter()
                    .zip(tokens)
                    .map(|(c, &t)| (c.to_string(), (row[t as usize] - max).exp() / total))
                    .collect();
                probs.sort_by(|a, b| b.1.total_cmp(&a.1));
                probs
            })
            .collect())
    }
}
