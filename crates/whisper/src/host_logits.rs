//! A decoder step's logits on the host, `[rows, vocab]`, read one row at a time.
//!
//! On GPUs the logits stay in the model's half precision for the copy to the host (half
//! the bytes of f32, and no conversion kernel); each row becomes f32 where a row's rules
//! and choice read it, on the core that reads it. Where the CPU kernels compute the
//! logits they are f32 already.

use half::{bf16, f16, slice::HalfFloatSliceExt};
use mlx_rs::{Array, Dtype};

use crate::error::Result;

/// The logits of a step: f32 values `vocab` to a row, or an evaluated MLX array of them.
pub enum HostLogits {
    F32 { values: Vec<f32>, vocab: usize },
    Array(Array),
}

/// A view of [`HostLogits`] that threads can share.
#[derive(Clone, Copy)]
pub struct LogitRows<'a> {
    values: Values<'a>,
    vocab: usize,
}

#[derive(Clone, Copy)]
enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl HostLogits {
    /// Evaluates `logits` (`[rows, vocab]`); half precision stays as it is.
    pub fn evaluate(logits: &Array) -> Result<Self> {
        let logits = match logits.dtype() {
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 => logits.clone(),
            _ => logits.as_dtype(Dtype::Float32)?,
        };
        logits.eval()?;
        Ok(Self::Array(logits))
    }

    /// The values, row after row.
    pub fn rows(&self) -> LogitRows<'_> {
        match self {
            Self::F32 { values, vocab } => LogitRows {
                values: Values::F32(values),
                vocab: *vocab,
            },
            Self::Array(a) => LogitRows {
                values: match a.dtype() {
                    Dtype::Float16 => Values::F16(a.as_slice()),
                    Dtype::Bfloat16 => Values::Bf16(a.as_slice()),
                    _ => Values::F32(a.as_slice()),
                },
                vocab: a.shape().last().map_or(0, |&v| v as usize),
            },
        }
    }
}

impl LogitRows<'_> {
    /// Row `i`, as f32.
    pub fn row(&self, i: usize) -> Vec<f32> {
        let span = i * self.vocab..(i + 1) * self.vocab;
        match self.values {
            Values::F32(v) => v[span].to_vec(),
            Values::F16(v) => v[span].to_f32_vec(),
            Values::Bf16(v) => v[span].to_f32_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_rows_read_as_their_f32_values() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 2.0).collect();
        let array = Array::from_slice(&values, &[3, 4]);
        for dtype in [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16] {
            let logits = HostLogits::evaluate(&array.as_dtype(dtype).unwrap()).unwrap();
            let rows = logits.rows();
            let expected = array
                .as_dtype(dtype)
                .unwrap()
                .as_dtype(Dtype::Float32)
                .unwrap();
            let expected = expected.as_slice::<f32>();
            for i in 0..3 {
                assert_eq!(rows.row(i), &expected[i * 4..(i + 1) * 4], "{dtype:?}");
            }
        }
    }
}
