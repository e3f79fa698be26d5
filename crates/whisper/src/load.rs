//! Loading a Whisper model directory in any of the three layouts:
//! * CTranslate2 / faster-whisper: `model.bin` (+ `config.json` with alignment heads);
//! * mlx-community: `weights.safetensors` or `weights.npz` + `config.json` (OpenAI
//!   names; optional `quantization`);
//! * Hugging Face transformers: `model.safetensors` + `config.json`.
//!
//! Each yields weights under OpenAI's parameter names with PyTorch shapes; then the
//! model is built and every tensor checked against the dimensions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlx_rs::{Array, Dtype};

use crate::config::ModelDims;
use crate::ct2::{self, HostDtype, HostTensor};
use crate::error::{Result, WhisperError};
use crate::mel::MelFilters;
use crate::model::{Weights, WhisperModel};
use crate::tokenizer::Tokenizer;
use crate::Whisper;

/// The weight layout of a model directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    CTranslate2,
    MlxCommunity,
    HuggingFace,
}

impl Layout {
    pub fn detect(dir: &Path) -> Result<Self> {
        if dir.join("model.bin").is_file() {
            Ok(Layout::CTranslate2)
        } else if dir.join("weights.safetensors").is_file() || dir.join("weights.npz").is_file() {
            Ok(Layout::MlxCommunity)
        } else if dir.join("model.safetensors").is_file() {
            Ok(Layout::HuggingFace)
        } else {
            Err(WhisperError::InvalidModel {
                path: dir.to_path_buf(),
                detail: "no model.bin, weights.safetensors, weights.npz or model.safetensors"
                    .into(),
            })
        }
    }
}

/// The compute dtype for the default device: float16 on GPUs, float32 on the CPU
/// (MLX's CPU fp16 GEMM is far slower than fp32 through BLAS).
pub fn default_dtype() -> Dtype {
    match mlx_rs::Device::default().get_type() {
        Ok(mlx_rs::DeviceType::Gpu) => Dtype::Float16,
        _ => Dtype::Float32,
    }
}

#[derive(Default)]
pub struct LoadOptions {
    pub dtype: Option<Dtype>,
    /// tokenizer.json to use when the directory has none (mlx-community repos).
    pub tokenizer: Option<PathBuf>,
}

impl Whisper {
    /// Loads a model directory. Must run on the thread that owns MLX.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let dtype = options.dtype.unwrap_or_else(default_dtype);
        let layout = Layout::detect(dir)?;
        let (dims, weights, alignment_heads) = match layout {
            Layout::CTranslate2 => load_ct2(dir)?,
            Layout::MlxCommunity | Layout::HuggingFace => {
                return Err(WhisperError::InvalidModel {
                    path: dir.to_path_buf(),
                    detail: format!("{layout:?} layout is not supported yet"),
                })
            }
        };
        dims.validate()?;
        let tokenizer_path = [dir.join("tokenizer.json")]
            .into_iter()
            .chain(options.tokenizer.clone())
            .find(|p| p.is_file())
            .ok_or_else(|| {
                WhisperError::Tokenizer(format!("no tokenizer.json in {}", dir.display()))
            })?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path, dims.n_vocab)?;
        let model = WhisperModel::from_weights(dims.clone(), weights, dtype, dir)?;
        let alignment_heads = alignment_heads.unwrap_or_else(|| default_alignment_heads(&dims));
        Ok(Whisper {
            mel_filters: MelFilters::new(dims.n_mels),
            model,
            tokenizer,
            alignment_heads,
        })
    }
}

type Loaded = (ModelDims, Weights, Option<Vec<(usize, usize)>>);

fn load_ct2(dir: &Path) -> Result<Loaded> {
    let path = dir.join("model.bin");
    let model = ct2::read_model_bin(&path)?;
    let tensors = ct2::whisper_tensors(model, &path)?;
    let dims = ModelDims::infer_from_tensors(&tensors)?;
    let config_path = dir.join("config.json");
    let alignment_heads = if config_path.is_file() {
        crate::config::Ct2Config::from_file(&config_path)?.alignment_heads
    } else {
        None
    };
    let weights = tensors
        .into_iter()
        .map(|(name, t)| Ok((name, host_to_array(&t))))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok((dims, weights, alignment_heads))
}

fn host_to_array(tensor: &HostTensor) -> Array {
    let shape: Vec<i32> = tensor.shape.iter().map(|&d| d as i32).collect();
    let dtype = match tensor.dtype {
        HostDtype::F32 => Dtype::Float32,
        HostDtype::F16 => Dtype::Float16,
        HostDtype::BF16 => Dtype::Bfloat16,
    };
    // SAFETY: `data` holds exactly `num_elements` little-endian values of `dtype`
    // (checked by the reader); MLX copies the buffer.
    unsafe { Array::from_raw_data(tensor.data.as_ptr().cast(), &shape, dtype) }
}

/// OpenAI's rule when a model names no alignment heads: the second half of the
/// decoder layers, all heads.
pub fn default_alignment_heads(dims: &ModelDims) -> Vec<(usize, usize)> {
    (dims.n_text_layer / 2..dims.n_text_layer)
        .flat_map(|layer| (0..dims.n_text_head).map(move |head| (layer, head)))
        .collect()
}
