//! Loading a Whisper model directory in any of the three layouts:
//! * CTranslate2 / faster-whisper: `model.bin` (+ `config.json` with alignment heads);
//! * mlx-community: `weights.safetensors` or `weights.npz` + `config.json` (OpenAI
//!   names, MLX conv kernels `[out, kernel, in]`, MLP as `mlp1`/`mlp2`, no encoder
//!   positional embedding, an `alignment_heads` tensor; optional `quantization`);
//! * Hugging Face transformers: `model.safetensors` (or shards listed in
//!   `model.safetensors.index.json`) + `config.json` (+ `generation_config.json` with
//!   alignment heads).
//!
//! Each yields weights under OpenAI's parameter names with PyTorch shapes; then the
//! model is built and every tensor checked against the dimensions. Tensor names are
//! mapped by their own form, not by the layout, so an mlx-community `model.safetensors`
//! or an HF-named `weights.safetensors` load as well.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::config::{read_json, ModelDims};
use crate::ct2::{self, HostDtype, HostTensor};
use crate::error::{Result, WhisperError};
use crate::mel::MelFilters;
use crate::model::{Weights, WhisperModel};
use crate::tokenizer::Tokenizer;
use crate::Whisper;

/// CTranslate2 weights.
pub const CT2_WEIGHTS: &str = "model.bin";
/// mlx-community weights (current conversions).
pub const MLX_SAFETENSORS: &str = "weights.safetensors";
/// mlx-community weights (early conversions, `np.savez`).
pub const MLX_NPZ: &str = "weights.npz";
/// Hugging Face transformers weights.
pub const HF_SAFETENSORS: &str = "model.safetensors";
/// Hugging Face transformers sharded weights: the index naming the shards.
pub const HF_SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
/// Hugging Face generation config (alignment heads).
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// The weight layout of a model directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    CTranslate2,
    MlxCommunity,
    HuggingFace,
}

impl Layout {
    pub fn detect(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(WhisperError::InvalidModel {
                path: dir.to_path_buf(),
                detail: "not a directory".into(),
            });
        }
        Self::from_files(|name| dir.join(name).is_file()).ok_or_else(|| {
            WhisperError::InvalidModel {
                path: dir.to_path_buf(),
                detail: format!(
                    "no {CT2_WEIGHTS}, {MLX_SAFETENSORS}, {MLX_NPZ}, {HF_SAFETENSORS} or \
                     {HF_SAFETENSORS_INDEX}"
                ),
            }
        })
    }

    /// The layout of a file set, given which top-level file names exist.
    pub fn from_files(has: impl Fn(&str) -> bool) -> Option<Self> {
        if has(CT2_WEIGHTS) {
            Some(Layout::CTranslate2)
        } else if has(MLX_SAFETENSORS) || has(MLX_NPZ) {
            Some(Layout::MlxCommunity)
        } else if has(HF_SAFETENSORS) || has(HF_SAFETENSORS_INDEX) {
            Some(Layout::HuggingFace)
        } else {
            None
        }
    }

    /// The files to fetch for this layout: `(required, optional)`. Shards of a sharded HF
    /// checkpoint are listed in its index and not here. `tokenizer.json` is optional
    /// everywhere (mlx-community repos have none; it then comes from elsewhere).
    pub fn files(self, has: impl Fn(&str) -> bool) -> (Vec<&'static str>, Vec<&'static str>) {
        match self {
            Layout::CTranslate2 => (vec![CT2_WEIGHTS], vec![CONFIG, TOKENIZER]),
            Layout::MlxCommunity => {
                let weights = if has(MLX_SAFETENSORS) {
                    MLX_SAFETENSORS
                } else {
                    MLX_NPZ
                };
                (vec![CONFIG, weights], vec![TOKENIZER])
            }
            Layout::HuggingFace => {
                let weights = if has(HF_SAFETENSORS) {
                    HF_SAFETENSORS
                } else {
                    HF_SAFETENSORS_INDEX
                };
                (vec![CONFIG, weights], vec![TOKENIZER, GENERATION_CONFIG])
            }
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
        let Loaded {
            dims,
            weights,
            alignment_heads,
            source,
            config,
        } = match layout {
            Layout::CTranslate2 => load_ct2(dir)?,
            Layout::MlxCommunity | Layout::HuggingFace => load_tensor_dir(dir, layout)?,
        };
        dims.validate()?;
        let tokenizer_path = [dir.join(TOKENIZER)]
            .into_iter()
            .chain(options.tokenizer.clone())
            .find(|p| p.is_file())
            .ok_or_else(|| {
                WhisperError::Tokenizer(format!(
                    "no {TOKENIZER} in {}{}; pass one in LoadOptions::tokenizer (mlx-community \
                     repos ship none: the matching openai/whisper-* repo has it)",
                    dir.display(),
                    match &options.tokenizer {
                        Some(p) => format!(" and {} does not exist", p.display()),
                        None => String::new(),
                    }
                ))
            })?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path, dims.n_vocab)?;
        let model = WhisperModel::from_weights(dims.clone(), weights, dtype, &source)
            .map_err(|e| explain_dims_error(e, config.as_deref()))?;
        let alignment_heads = match alignment_heads {
            Some((heads, from)) => {
                check_alignment_heads(&heads, &dims, &from)?;
                heads
            }
            None => default_alignment_heads(&dims),
        };
        tracing::debug!(
            dir = %dir.display(),
            ?layout,
            ?dtype,
            tokenizer = %tokenizer_path.display(),
            "loaded Whisper model"
        );
        Ok(Whisper {
            mel_filters: MelFilters::new(dims.n_mels),
            model,
            tokenizer,
            alignment_heads,
        })
    }
}

/// Alignment heads, as (decoder layer, head) pairs, and the file they came from.
type HeadsFrom = (Vec<(usize, usize)>, PathBuf);

/// What a layout loader yields.
struct Loaded {
    dims: ModelDims,
    weights: Weights,
    alignment_heads: Option<HeadsFrom>,
    /// The weights file, named in errors about tensors.
    source: PathBuf,
    /// The config.json the dimensions came from, if not from the weights.
    config: Option<PathBuf>,
}

fn load_ct2(dir: &Path) -> Result<Loaded> {
    let path = dir.join(CT2_WEIGHTS);
    let model = ct2::read_model_bin(&path)?;
    let heads = model.num_heads();
    let tensors = ct2::whisper_tensors(model, &path)?;
    let dims = ModelDims::infer_from_tensors_with_heads(&tensors, heads)?;
    let config_path = dir.join(CONFIG);
    let alignment_heads = if config_path.is_file() {
        crate::config::Ct2Config::from_file(&config_path)?
            .alignment_heads
            .map(|heads| (heads, config_path.clone()))
    } else {
        None
    };
    let weights = tensors
        .into_iter()
        .map(|(name, t)| (name, host_to_array(&t)))
        .collect::<HashMap<_, _>>();
    Ok(Loaded {
        dims,
        weights,
        alignment_heads,
        source: path,
        config: None,
    })
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

fn invalid(path: &Path, detail: impl Into<String>) -> WhisperError {
    WhisperError::InvalidModel {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WhisperError + '_ {
    move |source| WhisperError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads an mlx-community or Hugging Face directory: dimensions from `config.json`,
/// tensors from safetensors / npz, mapped to canonical names.
fn load_tensor_dir(dir: &Path, layout: Layout) -> Result<Loaded> {
    let config_path = dir.join(CONFIG);
    let dims = read_config_dims(&config_path, layout)?;
    let (files, source) = weight_files(dir, layout)?;
    let (mut weights, mut alignment_heads) = read_canonical_tensors(&files)?;
    for conv in ["encoder.conv1.weight", "encoder.conv2.weight"] {
        if let Some(w) = weights.get_mut(conv) {
            *w = conv_to_pytorch(w)?;
        }
    }
    // MLX recomputes the encoder's sinusoidal table (`_positional_embedding`, not a
    // parameter), so mlx-community files do not have it. OpenAI's checkpoints store it
    // in float16, and OpenAI, transformers and CTranslate2 all run with those rounded
    // values; so do we (mlx_whisper's default float16 compute rounds it the same way).
    if !weights.contains_key("encoder.positional_embedding") {
        let table = sinusoids(dims.n_audio_ctx, dims.n_audio_state).as_dtype(Dtype::Float16)?;
        weights.insert("encoder.positional_embedding".into(), table);
    }
    let generation = dir.join(GENERATION_CONFIG);
    if alignment_heads.is_none() && generation.is_file() {
        alignment_heads = generation_alignment_heads(&generation)?.map(|h| (h, generation));
    }
    Ok(Loaded {
        dims,
        weights,
        alignment_heads,
        source,
        config: Some(config_path),
    })
}

/// The model dimensions a `config.json` states (a `layout` directory needs one), checked,
/// with a quantization the model can run.
fn read_config_dims(config_path: &Path, layout: Layout) -> Result<ModelDims> {
    if !config_path.is_file() {
        return Err(invalid(
            config_path,
            format!("missing: a {layout:?} directory needs its config.json for the dimensions"),
        ));
    }
    let config = read_json(config_path)?;
    let dims = ModelDims::from_json(&config)
        .and_then(|dims| dims.validate().map(|()| dims))
        .map_err(|e| match e {
            WhisperError::InvalidConfig { detail, .. } => WhisperError::InvalidConfig {
                path: config_path.to_path_buf(),
                detail,
            },
            other => other,
        })?;
    check_quantization(&config, config_path)?;
    Ok(dims)
}

/// The weight files of a `layout` directory (the shards of a sharded checkpoint), and the
/// file to name in errors about its tensors.
fn weight_files(dir: &Path, layout: Layout) -> Result<(Vec<PathBuf>, PathBuf)> {
    let has = |name: &str| dir.join(name).is_file();
    let (required, _) = layout.files(has);
    let weights_name = required[1];
    if weights_name == HF_SAFETENSORS_INDEX {
        let index = dir.join(HF_SAFETENSORS_INDEX);
        Ok((shard_files(&index)?, index))
    } else {
        let file = dir.join(weights_name);
        Ok((vec![file.clone()], file))
    }
}

/// Every tensor of `files` under its canonical name, and the alignment heads if a file
/// stores them (mlx-community's `alignment_heads` tensor) with the file they came from.
fn read_canonical_tensors(files: &[PathBuf]) -> Result<(Weights, Option<HeadsFrom>)> {
    let mut weights = Weights::new();
    let mut origin: HashMap<String, String> = HashMap::new();
    let mut alignment_heads = None;
    for file in files {
        let tensors = if file.extension().is_some_and(|e| e == "npz") {
            read_npz(file)?
        } else {
            read_safetensors(file)?
        };
        for (name, array) in tensors {
            if name == "alignment_heads" {
                alignment_heads = Some((heads_from_array(&array, file)?, file.clone()));
                continue;
            }
            let Some(canonical) = canonical_name(&name) else {
                continue;
            };
            if let Some(previous) = origin.insert(canonical.clone(), name.clone()) {
                return Err(invalid(
                    file,
                    format!("tensors `{previous}` and `{name}` both map to `{canonical}`"),
                ));
            }
            weights.insert(canonical, array);
        }
    }
    Ok((weights, alignment_heads))
}

/// Rejects quantization schemes the model cannot run (MLX's `mxfp4` etc. have no biases).
fn check_quantization(config: &Value, path: &Path) -> Result<()> {
    let Some(q) = config.get("quantization") else {
        return Ok(());
    };
    let bad = |detail: String| WhisperError::InvalidConfig {
        path: path.to_path_buf(),
        detail,
    };
    if !q.is_object() {
        return Err(bad(format!("`quantization` is {q}, expected an object")));
    }
    match q.get("mode").and_then(Value::as_str) {
        None | Some("affine") => Ok(()),
        Some(mode) => Err(bad(format!(
            "quantization mode `{mode}` is not supported (only MLX's affine quantization)"
        ))),
    }
}

/// The shard files an HF `model.safetensors.index.json` names, in name order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let names = shard_names(&read_json(index)?).ok_or_else(|| WhisperError::InvalidConfig {
        path: index.to_path_buf(),
        detail: "no `weight_map` object".into(),
    })?;
    if names.is_empty() {
        return Err(invalid(index, "`weight_map` names no files"));
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    names
        .into_iter()
        .map(|name| {
            let file = dir.join(&name);
            if name.contains("..") || !file.is_file() {
                Err(invalid(
                    &file,
                    format!("shard listed in {HF_SAFETENSORS_INDEX} is missing"),
                ))
            } else {
                Ok(file)
            }
        })
        .collect()
}

/// The shard file names of a parsed HF safetensors index, sorted and each once; `None`
/// without a `weight_map` object.
pub(crate) fn shard_names(index: &Value) -> Option<Vec<String>> {
    let map = index.get("weight_map").and_then(Value::as_object)?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// `(decoder layer, head)` pairs from an HF `generation_config.json`, if it has them.
fn generation_alignment_heads(path: &Path) -> Result<Option<Vec<(usize, usize)>>> {
    let value = read_json(path)?;
    match value.get("alignment_heads") {
        None | Some(Value::Null) => Ok(None),
        Some(heads) => serde_json::from_value(heads.clone())
            .map(Some)
            .map_err(|e| WhisperError::InvalidConfig {
                path: path.to_path_buf(),
                detail: format!("`alignment_heads` is not a list of [layer, head] pairs: {e}"),
            }),
    }
}

/// An MLX `alignment_heads` tensor `[n, 2]` (int64 as mlx_whisper saves it).
fn heads_from_array(array: &Array, path: &Path) -> Result<Vec<(usize, usize)>> {
    let shape = array.shape();
    if shape.len() != 2 || shape[1] != 2 {
        return Err(invalid(
            path,
            format!("`alignment_heads` has shape {shape:?}, expected [n, 2]"),
        ));
    }
    let values = array.as_dtype(Dtype::Int64)?;
    values.eval()?;
    values
        .as_slice::<i64>()
        .chunks_exact(2)
        .map(
            |pair| match (usize::try_from(pair[0]), usize::try_from(pair[1])) {
                (Ok(layer), Ok(head)) => Ok((layer, head)),
                _ => Err(invalid(path, "`alignment_heads` has a negative index")),
            },
        )
        .collect()
}

fn check_alignment_heads(heads: &[(usize, usize)], dims: &ModelDims, from: &Path) -> Result<()> {
    match heads
        .iter()
        .find(|&&(layer, head)| layer >= dims.n_text_layer || head >= dims.n_text_head)
    {
        Some((layer, head)) => Err(WhisperError::InvalidConfig {
            path: from.to_path_buf(),
            detail: format!(
                "alignment head ({layer}, {head}) is outside the decoder's {} layers × {} heads",
                dims.n_text_layer, dims.n_text_head
            ),
        }),
        None => Ok(()),
    }
}

/// Adds the config file to tensor errors raised while building a model whose dimensions
/// came from it: either file may be the wrong one.
fn explain_dims_error(error: WhisperError, config: Option<&Path>) -> WhisperError {
    let Some(config) = config else {
        return error;
    };
    match error {
        WhisperError::ShapeMismatch {
            path,
            name,
            expected,
            actual,
        } => WhisperError::InvalidModel {
            path,
            detail: format!(
                "tensor `{name}` has shape {actual:?}, but the dimensions in {} imply \
                 {expected:?}",
                config.display()
            ),
        },
        WhisperError::MissingTensor { path, name } => WhisperError::InvalidModel {
            path,
            detail: format!(
                "no tensor `{name}`, which the dimensions in {} require",
                config.display()
            ),
        },
        other => other,
    }
}

/// MLX conv kernels `[out, kernel, in]` → PyTorch `[out, in, kernel]`. Whisper's kernels
/// are 3 wide and no input width is 3, so the stored order shows in the shape.
fn conv_to_pytorch(weight: &Array) -> Result<Array> {
    let shape = weight.shape();
    if shape.len() == 3 && shape[1] == 3 && shape[2] != 3 {
        Ok(weight.transpose_axes(&[0, 2, 1])?)
    } else {
        Ok(weight.clone())
    }
}

/// Whisper's sinusoidal encoder position table `[length, channels]`, as OpenAI's
/// `sinusoids` computes it (float32).
pub fn sinusoids(length: usize, channels: usize) -> Array {
    let half = channels / 2;
    let increment = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let inv: Vec<f32> = (0..half).map(|i| (-increment * i as f32).exp()).collect();
    let mut data = vec![0f32; length * channels];
    for t in 0..length {
        let row = &mut data[t * channels..(t + 1) * channels];
        for (i, &f) in inv.iter().enumerate() {
            let x = t as f32 * f;
            row[i] = x.sin();
            row[half + i] = x.cos();
        }
    }
    Array::from_slice(&data, &[length as i32, channels as i32])
}

// ---------------------------------------------------------------------------------------
// Tensor names → canonical (OpenAI) names.
// ---------------------------------------------------------------------------------------

/// The canonical name of a stored tensor in any of the naming schemes: OpenAI (as is),
/// mlx-community (`mlp1`/`mlp2`) or Hugging Face transformers (`model.encoder.layers.N.
/// self_attn.q_proj.weight`, …). `None` for tensors the model does not use (HF's tied
/// `proj_out`). Unknown names pass through and are ignored by the model builder.
fn canonical_name(name: &str) -> Option<String> {
    let stripped = name.strip_prefix("model.").unwrap_or(name);
    if stripped.starts_with("proj_out.") {
        return None;
    }
    let (scope, rest) = match stripped.split_once('.') {
        Some((scope @ ("encoder" | "decoder"), rest)) => (scope, rest),
        _ => return Some(name.to_string()),
    };
    // Model-level tensors.
    let top = match (scope, rest) {
        ("encoder", "embed_positions.weight") => Some("encoder.positional_embedding".into()),
        ("decoder", "embed_positions.weight") => Some("decoder.positional_embedding".into()),
        ("decoder", "embed_tokens.weight") => Some("decoder.token_embedding.weight".into()),
        ("decoder", r) if r.starts_with("embed_tokens.") => Some(format!(
            "decoder.token_embedding.{}",
            &r["embed_tokens.".len()..]
        )),
        ("encoder", r) if r.starts_with("layer_norm.") => {
            Some(format!("encoder.ln_post.{}", &r["layer_norm.".len()..]))
        }
        ("decoder", r) if r.starts_with("layer_norm.") => {
            Some(format!("decoder.ln.{}", &r["layer_norm.".len()..]))
        }
        _ => None,
    };
    if top.is_some() {
        return top;
    }
    // Blocks: HF `layers.N.` or OpenAI `blocks.N.`.
    let block = rest
        .strip_prefix("layers.")
        .or_else(|| rest.strip_prefix("blocks."));
    let Some(block) = block else {
        return Some(format!("{scope}.{rest}"));
    };
    let Some((index, part)) = block.split_once('.') else {
        return Some(name.to_string());
    };
    Some(format!("{scope}.blocks.{index}.{}", block_part(part)))
}

/// A parameter path inside one residual block, canonicalised.
fn block_part(part: &str) -> String {
    const RENAMES: &[(&str, &str)] = &[
        // Hugging Face.
        ("self_attn_layer_norm.", "attn_ln."),
        ("encoder_attn_layer_norm.", "cross_attn_ln."),
        ("final_layer_norm.", "mlp_ln."),
        ("self_attn.", "attn."),
        ("encoder_attn.", "cross_attn."),
        ("fc1.", "mlp.0."),
        ("fc2.", "mlp.2."),
        // mlx-community.
        ("mlp1.", "mlp.0."),
        ("mlp2.", "mlp.2."),
    ];
    let mut part = part.to_string();
    if let Some((from, to)) = RENAMES.iter().find(|(from, _)| part.starts_with(from)) {
        part = format!("{to}{}", &part[from.len()..]);
    }
    for (from, to) in [
        (".q_proj.", ".query."),
        (".k_proj.", ".key."),
        (".v_proj.", ".value."),
        (".out_proj.", ".out."),
    ] {
        if let Some(pos) = part.find(from) {
            part = format!("{}{to}{}", &part[..pos], &part[pos + from.len()..]);
        }
    }
    part
}

// ---------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------

/// Largest safetensors header accepted (the format's reference reader uses 100 MB).
const MAX_HEADER: u64 = 100_000_000;

fn safetensors_dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F32" | "I32" | "U32" => 4,
        "F64" | "I64" | "U64" => 8,
        _ => return None,
    })
}

/// Reads and checks a safetensors header against the file's size, so that a truncated
/// or corrupt file is reported here, naming the tensor, and never reaches MLX's lazy
/// reader. Returns each tensor's shape by name.
fn read_safetensors_header(path: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    let (header, data_len) = read_safetensors_json(path)?;
    let object = header
        .as_object()
        .ok_or_else(|| invalid(path, "safetensors header is not a JSON object"))?;
    object
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, entry)| {
            let shape = check_safetensors_entry(entry, data_len)
                .map_err(|detail| invalid(path, format!("tensor `{name}`: {detail}")))?;
            Ok((name.clone(), shape))
        })
        .collect()
}

/// The JSON header of a safetensors file and the length of the data section after it.
fn read_safetensors_json(path: &Path) -> Result<(Value, u64)> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return Err(invalid(
            path,
            format!("{file_len} bytes: too short for a safetensors file"),
        ));
    }
    file.read_exact(&mut len_bytes).map_err(io_error(path))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(invalid(
            path,
            format!(
                "header length {header_len} exceeds the file ({file_len} bytes): not a \
                 safetensors file, or truncated"
            ),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.seek(SeekFrom::Start(8)).map_err(io_error(path))?;
    file.read_exact(&mut header).map_err(io_error(path))?;
    let value: Value = serde_json::from_slice(&header)
        .map_err(|e| invalid(path, format!("safetensors header is not valid JSON: {e}")))?;
    Ok((value, file_len - 8 - header_len))
}

/// One tensor's header entry: its shape, once its dtype, shape and data offsets agree
/// with each other and fit in the `data_len` bytes of the data section.
fn check_safetensors_entry(
    entry: &Value,
    data_len: u64,
) -> std::result::Result<Vec<usize>, String> {
    let dtype = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("no dtype")?;
    let size = safetensors_dtype_size(dtype).ok_or(format!("unsupported dtype {dtype}"))?;
    let shape: Vec<usize> = entry
        .get("shape")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or("no valid shape")?;
    let (begin, end): (u64, u64) = entry
        .get("data_offsets")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or("no valid data_offsets")?;
    let bytes = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d as u64))
        .ok_or(format!("shape {shape:?} overflows"))?;
    if begin > end || end - begin != bytes {
        return Err(format!(
            "data_offsets [{begin}, {end}) do not hold {bytes} bytes of {dtype} {shape:?}"
        ));
    }
    if end > data_len {
        return Err(format!(
            "data ends at byte {end} of the data section, which has only {data_len} bytes \
             (the file is truncated)"
        ));
    }
    Ok(shape)
}

/// All tensors of a safetensors file (loaded lazily by MLX after the header check).
fn read_safetensors(path: &Path) -> Result<Vec<(String, Array)>> {
    let header = read_safetensors_header(path)?;
    let arrays = Array::load_safetensors(path)
        .map_err(|e| invalid(path, format!("MLX cannot read it: {e}")))?;
    let mut out = Vec::with_capacity(arrays.len());
    for (name, array) in arrays {
        let expected = header.get(&name);
        let actual: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
        if expected != Some(&actual) {
            return Err(invalid(
                path,
                format!("tensor `{name}`: MLX read shape {actual:?}, header says {expected:?}"),
            ));
        }
        out.push((name, array));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// npz (a zip of .npy files)
// ---------------------------------------------------------------------------------------

fn read_npz(path: &Path) -> Result<Vec<(String, Array)>> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| invalid(path, format!("not a valid npz (zip) archive: {e}")))?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(path, format!("entry {i}: {e}")))?;
        let name = entry.name().to_string();
        let tensor = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 30) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(path, format!("tensor `{tensor}`: cannot read it: {e}")))?;
        let array =
            parse_npy(&bytes).map_err(|e| invalid(path, format!("tensor `{tensor}`: {e}")))?;
        out.push((tensor, array));
    }
    Ok(out)
}

/// Parses one `.npy` array (format versions 1 to 3, little-endian).
fn parse_npy(bytes: &[u8]) -> std::result::Result<Array, String> {
    let NpyHeader {
        descr,
        fortran,
        mut shape,
        data_start,
    } = NpyHeader::parse(bytes)?;
    let (dtype, size) = npy_dtype(descr)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &bytes[data_start..];
    let needed = count * size;
    if data.len() < needed {
        return Err(format!(
            "truncated: {} data bytes, {needed} needed for {descr} {shape:?}",
            data.len()
        ));
    }
    let data = &data[..needed];
    if fortran {
        shape.reverse();
    }
    let dims: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
    let array = if dtype == Dtype::Float64 {
        // Narrowed on the host: MLX's GPU backends have no float64.
        let values: Vec<f32> = data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect();
        Array::from_slice(&values, &dims)
    } else {
        // SAFETY: `data` holds exactly `count` little-endian values of `dtype`; MLX
        // copies the buffer.
        unsafe { Array::from_raw_data(data.as_ptr().cast(), &dims, dtype) }
    };
    if fortran && dims.len() > 1 {
        let axes: Vec<i32> = (0..dims.len() as i32).rev().collect();
        return array.transpose_axes(&axes).map_err(|e| e.to_string());
    }
    Ok(array)
}

/// The header of a `.npy` array: what its data holds and where the data starts.
struct NpyHeader<'a> {
    /// The dtype, as numpy spells it (`<f4`).
    descr: &'a str,
    /// Column-major data (the shape is then reversed, and the array transposed back).
    fortran: bool,
    shape: Vec<usize>,
    /// Offset of the data in the file.
    data_start: usize,
}

impl<'a> NpyHeader<'a> {
    fn parse(bytes: &'a [u8]) -> std::result::Result<Self, String> {
        if bytes.len() < 10 || !bytes.starts_with(b"\x93NUMPY") {
            return Err("not a .npy array".into());
        }
        let (header_len, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            v => return Err(format!("unsupported .npy version {v}")),
        };
        let header = bytes
            .get(start..start + header_len)
            .ok_or("truncated .npy header")?;
        let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
        let descr = npy_field(header, "descr").ok_or("the .npy header has no descr")?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let fortran = npy_field(header, "fortran_order").ok_or("no fortran_order")? == "True";
        let shape_text = npy_field(header, "shape").ok_or("the .npy header has no shape")?;
        let shape = shape_text
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| format!("bad shape {shape_text}"))?;
        Ok(NpyHeader {
            descr,
            fortran,
            shape,
            data_start: start + header_len,
        })
    }
}

/// The MLX dtype and element size of a numpy `descr` (little-endian, or byte-sized).
fn npy_dtype(descr: &str) -> std::result::Result<(Dtype, usize), String> {
    let (byte_order, kind) = descr.split_at(1.min(descr.len()));
    if byte_order == ">" && kind != "u1" && kind != "i1" && kind != "b1" {
        return Err(format!("big-endian dtype {descr} is not supported"));
    }
    Ok(match kind {
        "f2" => (Dtype::Float16, 2),
        "f4" => (Dtype::Float32, 4),
        "f8" => (Dtype::Float64, 8),
        "V2" => (Dtype::Bfloat16, 2), // MLX writes bfloat16 as raw 2-byte records.
        "u1" => (Dtype::Uint8, 1),
        "i1" => (Dtype::Int8, 1),
        "b1" => (Dtype::Bool, 1),
        "u2" => (Dtype::Uint16, 2),
        "i2" => (Dtype::Int16, 2),
        "u4" => (Dtype::Uint32, 4),
        "i4" => (Dtype::Int32, 4),
        "u8" => (Dtype::Uint64, 8),
        "i8" => (Dtype::Int64, 8),
        _ => return Err(format!("unsupported dtype {descr}")),
    })
}

/// The raw text of `key`'s value in a .npy header dict (`{'descr': '<f4', …}`).
fn npy_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(quote @ ('\'' | '"')) = rest.chars().next() {
        rest[1..].find(quote)? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// OpenAI's rule when a model names no alignment heads: the second half of the
/// decoder layers, all heads.
pub fn default_alignment_heads(dims: &ModelDims) -> Vec<(usize, usize)> {
    (dims.n_text_layer / 2..dims.n_text_layer)
        .flat_map(|layer| (0..dims.n_text_head).map(move |head| (layer, head)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_openai() {
        let cases = [
            ("model.encoder.conv1.weight", "encoder.conv1.weight"),
            ("model.encoder.conv2.bias", "encoder.conv2.bias"),
            (
                "model.encoder.embed_positions.weight",
                "encoder.positional_embedding",
            ),
            (
                "model.encoder.layers.3.self_attn.q_proj.weight",
                "encoder.blocks.3.attn.query.weight",
            ),
            (
                "model.encoder.layers.0.self_attn.k_proj.weight",
                "encoder.blocks.0.attn.key.weight",
            ),
            (
                "model.encoder.layers.0.self_attn.v_proj.bias",
                "encoder.blocks.0.attn.value.bias",
            ),
            (
                "model.encoder.layers.11.self_attn.out_proj.weight",
                "encoder.blocks.11.attn.out.weight",
            ),
            (
                "model.encoder.layers.0.self_attn_layer_norm.weight",
                "encoder.blocks.0.attn_ln.weight",
            ),
            (
                "model.encoder.layers.0.fc1.weight",
                "encoder.blocks.0.mlp.0.weight",
            ),
            (
                "model.encoder.layers.0.fc2.bias",
                "encoder.blocks.0.mlp.2.bias",
            ),
            (
                "model.encoder.layers.0.final_layer_norm.bias",
                "encoder.blocks.0.mlp_ln.bias",
            ),
            ("model.encoder.layer_norm.weight", "encoder.ln_post.weight"),
            (
                "model.decoder.layers.2.encoder_attn.k_proj.weight",
                "decoder.blocks.2.cross_attn.key.weight",
            ),
            (
                "model.decoder.layers.2.encoder_attn_layer_norm.bias",
                "decoder.blocks.2.cross_attn_ln.bias",
            ),
            (
                "model.decoder.layers.2.self_attn.q_proj.bias",
                "decoder.blocks.2.attn.query.bias",
            ),
            (
                "model.decoder.embed_tokens.weight",
                "decoder.token_embedding.weight",
            ),
            (
                "model.decoder.embed_positions.weight",
                "decoder.positional_embedding",
            ),
            ("model.decoder.layer_norm.bias", "decoder.ln.bias"),
            // WhisperModel checkpoints have no `model.` prefix.
            (
                "encoder.layers.1.fc1.weight",
                "encoder.blocks.1.mlp.0.weight",
            ),
        ];
        for (hf, openai) in cases {
            assert_eq!(canonical_name(hf).as_deref(), Some(openai), "{hf}");
        }
        assert_eq!(canonical_name("proj_out.weight"), None);
    }

    #[test]
    fn mlx_and_openai_names_map_to_openai() {
        let cases = [
            (
                "encoder.blocks.0.mlp1.weight",
                "encoder.blocks.0.mlp.0.weight",
            ),
            (
                "encoder.blocks.0.mlp2.scales",
                "encoder.blocks.0.mlp.2.scales",
            ),
            (
                "decoder.blocks.3.mlp1.biases",
                "decoder.blocks.3.mlp.0.biases",
            ),
            (
                "encoder.blocks.0.mlp.0.weight",
                "encoder.blocks.0.mlp.0.weight",
            ),
            (
                "decoder.blocks.1.cross_attn.query.weight",
                "decoder.blocks.1.cross_attn.query.weight",
            ),
            (
                "decoder.token_embedding.scales",
                "decoder.token_embedding.scales",
            ),
            (
                "decoder.positional_embedding",
                "decoder.positional_embedding",
            ),
            ("encoder.ln_post.weight", "encoder.ln_post.weight"),
            ("encoder.conv1.weight", "encoder.conv1.weight"),
            ("something.else", "something.else"),
        ];
        for (from, to) in cases {
            assert_eq!(canonical_name(from).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn layouts_and_their_files() {
        let has = |files: &'static [&'static str]| move |n: &str| files.contains(&n);
        assert_eq!(
            Layout::from_files(has(&["model.bin", "config.json"])),
            Some(Layout::CTranslate2)
        );
        assert_eq!(
            Layout::from_files(has(&["weights.npz", "config.json"])),
            Some(Layout::MlxCommunity)
        );
        assert_eq!(
            Layout::from_files(has(&["model.safetensors.index.json"])),
            Some(Layout::HuggingFace)
        );
        assert_eq!(Layout::from_files(has(&["README.md"])), None);
        let files = &["weights.npz", "weights.safetensors", "config.json"];
        assert_eq!(
            Layout::MlxCommunity.files(has(files)).0,
            vec!["config.json", "weights.safetensors"]
        );
    }

    #[test]
    fn npy_headers_parse() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(npy_field(header, "descr"), Some("'<f4'"));
        assert_eq!(npy_field(header, "fortran_order"), Some("False"));
        assert_eq!(npy_field(header, "shape"), Some("(2, 3)"));
        let scalar = "{'descr': '<i8', 'fortran_order': False, 'shape': (), }";
        assert_eq!(npy_field(scalar, "shape"), Some("()"));
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let py_bool = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {py_bool}, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_arrays_load() {
        let values = [1f32, 2., 3., 4., 5., 6.];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_npy(&npy("<f4", false, "(2, 3)", &data)).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.as_slice::<f32>(), &values);
        // Fortran order: column-major, element (i, j) is value i + 3j.
        let f = parse_npy(&npy("<f4", true, "(3, 2)", &data)).unwrap();
        assert_eq!(f.shape(), &[3, 2]);
        let f = f.reshape(&[6]).unwrap();
        assert_eq!(f.as_slice::<f32>(), &[1., 4., 2., 5., 3., 6.]);
        let wide: Vec<u8> = values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect();
        let w = parse_npy(&npy("<f8", false, "(6,)", &wide)).unwrap();
        assert_eq!(w.dtype(), Dtype::Float32);
        assert_eq!(w.as_slice::<f32>(), &values);
        let err = parse_npy(&npy("<f4", false, "(2, 4)", &data)).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(parse_npy(&npy(">f4", false, "(6,)", &data)).is_err());
        assert!(parse_npy(b"not numpy").is_err());
    }

    #[test]
    fn sinusoids_match_openai() {
        let s = sinusoids(1500, 384);
        assert_eq!(s.shape(), &[1500, 384]);
        let v = s.as_slice::<f32>();
        // Row 0: sin(0) = 0, cos(0) = 1.
        assert!(v[..192].iter().all(|&x| x == 0.0));
        assert!(v[192..384].iter().all(|&x| x == 1.0));
        // Row 1, channel 0: sin(1); last sin channel: sin(1e-4).
        assert!((v[384] - 1f32.sin()).abs() < 1e-7);
        assert!((v[384 + 191] - 1e-4f32.sin()).abs() < 1e-8);
    }

    #[test]
    fn only_affine_quantization_is_accepted() {
        let path = Path::new("config.json");
        let ok = |v: Value| check_quantization(&v, path).is_ok();
        assert!(ok(serde_json::json!({"n_mels": 80})));
        assert!(ok(
            serde_json::json!({"quantization": {"group_size": 64, "bits": 4}})
        ));
        assert!(ok(
            serde_json::json!({"quantization": {"bits": 4, "mode": "affine"}})
        ));
        assert!(!ok(
            serde_json::json!({"quantization": {"bits": 4, "mode": "mxfp4"}})
        ));
        assert!(!ok(serde_json::json!({"quantization": 4})));
    }

    #[test]
    fn dims_errors_name_the_config() {
        let config = Path::new("/m/config.json");
        let e = explain_dims_error(
            WhisperError::ShapeMismatch {
                path: "/m/weights.safetensors".into(),
                name: "encoder.conv1.weight".into(),
                expected: vec![512, 80, 3],
                actual: vec![384, 80, 3],
            },
            Some(config),
        );
        let text = e.to_string();
        assert!(
            text.contains("weights.safetensors")
                && text.contains("config.json")
                && text.contains("encoder.conv1.weight"),
            "{text}"
        );
    }
}
