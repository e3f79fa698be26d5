//! Model dimensions and the CTranslate2 model configuration.
//!
//! Dimensions come from an mlx-community / OpenAI `config.json` (`n_mels`, `n_audio_state`,
//! …), a Hugging Face transformers `config.json` (`num_mel_bins`, `d_model`, …), or, for
//! CTranslate2 directories whose `config.json` carries no dimensions, from the weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ct2::HostTensor;
use crate::error::{Result, WhisperError};

/// Vocabulary size of the English-only models; multilingual ones have at least 51865.
const ENGLISH_VOCAB: usize = 51864;

/// Whisper's architecture hyper-parameters, named as in OpenAI's `ModelDimensions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelDims {
    pub n_mels: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_vocab: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
}

/// Which naming a `config.json` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigNaming {
    /// OpenAI / mlx-community: `n_mels`, `n_audio_state`, …
    OpenAi,
    /// Hugging Face transformers: `num_mel_bins`, `d_model`, …
    HuggingFace,
}

impl ConfigNaming {
    /// Recognises the naming by its keys; `None` if neither (a CTranslate2 `config.json`).
    pub fn detect(value: &Value) -> Option<Self> {
        let has = |key| value.get(key).is_some();
        if has("n_audio_state") || has("n_mels") {
            Some(Self::OpenAi)
        } else if has("d_model") || has("num_mel_bins") {
            Some(Self::HuggingFace)
        } else {
            None
        }
    }
}

/// The placeholder path of errors about in-memory JSON; [`ModelDims::from_config_file`]
/// replaces it with the file's.
const IN_MEMORY: &str = "<config JSON>";

fn config_error(detail: String) -> WhisperError {
    WhisperError::InvalidConfig {
        path: PathBuf::from(IN_MEMORY),
        detail,
    }
}

fn dims_error(detail: String) -> WhisperError {
    WhisperError::InvalidConfig {
        path: PathBuf::from("<model dimensions>"),
        detail,
    }
}

fn get_usize(value: &Value, key: &str) -> Result<usize> {
    let field = value
        .get(key)
        .ok_or_else(|| config_error(format!("missing `{key}`")))?;
    field
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            config_error(format!(
                "`{key}` is {field}, expected a non-negative integer"
            ))
        })
}

impl ModelDims {
    /// From OpenAI / mlx-community names; other keys (`model_type`, `quantization`, …)
    /// are ignored.
    fn from_openai_json(value: &Value) -> Result<Self> {
        let g = |key| get_usize(value, key);
        Ok(Self {
            n_mels: g("n_mels")?,
            n_audio_ctx: g("n_audio_ctx")?,
            n_audio_state: g("n_audio_state")?,
            n_audio_head: g("n_audio_head")?,
            n_audio_layer: g("n_audio_layer")?,
            n_vocab: g("n_vocab")?,
            n_text_ctx: g("n_text_ctx")?,
            n_text_state: g("n_text_state")?,
            n_text_head: g("n_text_head")?,
            n_text_layer: g("n_text_layer")?,
        })
    }

    /// From Hugging Face transformers' `WhisperConfig` names (`d_model` is both states).
    fn from_hf_json(value: &Value) -> Result<Self> {
        let g = |key| get_usize(value, key);
        let d_model = g("d_model")?;
        Ok(Self {
            n_mels: g("num_mel_bins")?,
            n_audio_ctx: g("max_source_positions")?,
            n_audio_state: d_model,
            n_audio_head: g("encoder_attention_heads")?,
            n_audio_layer: g("encoder_layers")?,
            n_vocab: g("vocab_size")?,
            n_text_ctx: g("max_target_positions")?,
            n_text_state: d_model,
            n_text_head: g("decoder_attention_heads")?,
            n_text_layer: g("decoder_layers")?,
        })
    }

    /// From either naming, recognised by its keys.
    pub fn from_json(value: &Value) -> Result<Self> {
        match ConfigNaming::detect(value) {
            Some(ConfigNaming::OpenAi) => Self::from_openai_json(value),
            Some(ConfigNaming::HuggingFace) => Self::from_hf_json(value),
            None => Err(config_error(
                "no model dimensions (neither `n_audio_state` nor `d_model`)".into(),
            )),
        }
    }

    /// Reads a `config.json` in either naming and validates the dimensions.
    pub fn from_config_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        let dims = Self::from_json(&value).map_err(|e| at_path(e, path))?;
        dims.validate().map_err(|e| at_path(e, path))?;
        Ok(dims)
    }

    /// Dimensions of canonical Whisper tensors (see [`crate::ct2::whisper_tensors`]).
    /// Shapes do not tell head counts: `heads` gives `(encoder, decoder)` where the weights
    /// carry them (CTranslate2's `encoder/num_heads`, see
    /// [`crate::ct2::Ct2Model::num_heads`]); else they come from Whisper's table by state
    /// size.
    pub fn infer_from_tensors_with_heads(
        tensors: &BTreeMap<String, HostTensor>,
        heads: Option<(usize, usize)>,
    ) -> Result<Self> {
        let shape = |name: &str, rank: usize| -> Result<&[usize]> {
            let t = tensors
                .get(name)
                .ok_or_else(|| WhisperError::MissingTensor {
                    path: PathBuf::from("<weights>"),
                    name: name.to_string(),
                })?;
            if t.shape.len() != rank {
                return Err(dims_error(format!(
                    "`{name}` has shape {:?}, expected rank {rank}",
                    t.shape
                )));
            }
            Ok(&t.shape)
        };
        let conv1 = shape("encoder.conv1.weight", 3)?;
        let n_audio_state = conv1[0];
        // `[out, in, kernel]` (OpenAI, CTranslate2) or `[out, kernel, in]` (MLX); the kernel is 3.
        let n_mels = if conv1[2] == 3 { conv1[1] } else { conv1[2] };
        let n_audio_ctx = shape("encoder.positional_embedding", 2)?[0];
        let embedding = shape("decoder.token_embedding.weight", 2)?;
        let (n_vocab, n_text_state) = (embedding[0], embedding[1]);
        let n_text_ctx = shape("decoder.positional_embedding", 2)?[0];
        let n_audio_layer = count_blocks(tensors, "encoder")?;
        let n_text_layer = count_blocks(tensors, "decoder")?;
        let (n_audio_head, n_text_head) = match heads {
            Some(heads) => heads,
            None => (
                heads_for_state(n_audio_state)?,
                heads_for_state(n_text_state)?,
            ),
        };
        let dims = Self {
            n_mels,
            n_audio_ctx,
            n_audio_state,
            n_audio_head,
            n_audio_layer,
            n_vocab,
            n_text_ctx,
            n_text_state,
            n_text_head,
            n_text_layer,
        };
        dims.validate()?;
        Ok(dims)
    }

    /// Checks that the dimensions describe a buildable Whisper model.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("n_mels", self.n_mels),
            ("n_audio_ctx", self.n_audio_ctx),
            ("n_audio_state", self.n_audio_state),
            ("n_audio_head", self.n_audio_head),
            ("n_audio_layer", self.n_audio_layer),
            ("n_vocab", self.n_vocab),
            ("n_text_ctx", self.n_text_ctx),
            ("n_text_state", self.n_text_state),
            ("n_text_head", self.n_text_head),
            ("n_text_layer", self.n_text_layer),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(dims_error(format!("`{name}` is zero")));
        }
        for (state, heads, s, h) in [
            (
                "n_audio_state",
                "n_audio_head",
                self.n_audio_state,
                self.n_audio_head,
            ),
            (
                "n_text_state",
                "n_text_head",
                self.n_text_state,
                self.n_text_head,
            ),
        ] {
            if s % h != 0 {
                return Err(dims_error(format!(
                    "`{heads}` ({h}) does not divide `{state}` ({s})"
                )));
            }
        }
        // Cross-attention projects the encoder output with text-state-sized weights.
        if self.n_audio_state != self.n_text_state {
            return Err(dims_error(format!(
                "`n_audio_state` ({}) differs from `n_text_state` ({})",
                self.n_audio_state, self.n_text_state
            )));
        }
        Ok(())
    }

    /// Multilingual models have the extra `<|transcribe|>`-era token layout (vocab ≥ 51865).
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab > ENGLISH_VOCAB
    }

    /// Number of language tokens, by OpenAI's formula (99 for most models, 100 for large-v3).
    pub fn num_languages(&self) -> usize {
        self.n_vocab
            .saturating_sub(51765)
            .saturating_sub(usize::from(self.is_multilingual()))
    }
}

/// Whisper's head count for each released state size (tiny to large).
fn heads_for_state(n_state: usize) -> Result<usize> {
    Ok(match n_state {
        384 => 6,
        512 => 8,
        768 => 12,
        1024 => 16,
        1280 => 20,
        _ => {
            return Err(dims_error(format!(
                "no known head count for state size {n_state} (Whisper uses 384, 512, 768, \
                 1024 or 1280); give the dimensions in a config.json"
            )))
        }
    })
}

/// Number of `<scope>.blocks.N.` blocks; every index below the highest must be present.
fn count_blocks(tensors: &BTreeMap<String, HostTensor>, scope: &str) -> Result<usize> {
    let prefix = format!("{scope}.blocks.");
    let indices: std::collections::BTreeSet<usize> = tensors
        .keys()
        .filter_map(|name| name.strip_prefix(&prefix)?.split('.').next()?.parse().ok())
        .collect();
    let count = indices.last().map_or(0, |last| last + 1);
    if indices.len() != count {
        let missing = (0..count).find(|i| !indices.contains(i)).unwrap_or(0);
        return Err(WhisperError::MissingTensor {
            path: PathBuf::from("<weights>"),
            name: format!("{prefix}{missing}.*"),
        });
    }
    Ok(count)
}

/// A JSON file's contents; [`WhisperError::InvalidConfig`] names it when it is not JSON.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| WhisperError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WhisperError::InvalidConfig {
        path: path.to_path_buf(),
        detail: format!("not valid JSON: {e}"),
    })
}

/// Puts the file's path into an error raised about its parsed contents.
fn at_path(error: WhisperError, path: &Path) -> WhisperError {
    match error {
        WhisperError::InvalidConfig { detail, .. } => WhisperError::InvalidConfig {
            path: path.to_path_buf(),
            detail,
        },
        other => other,
    }
}

/// The `config.json` CTranslate2 writes next to a Whisper `model.bin`. Every field is
/// optional (older conversions omit some); unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ct2Config {
    /// `(decoder layer, head)` pairs whose cross-attention aligns text with audio.
    #[serde(default)]
    pub alignment_heads: Option<Vec<(usize, usize)>>,
    /// Token ids of the language tokens, in the tokenizer's order.
    #[serde(default)]
    pub lang_ids: Option<Vec<u32>>,
    /// Tokens suppressed at every step (OpenAI's `suppress_tokens="-1"` set, resolved).
    #[serde(default)]
    pub suppress_ids: Option<Vec<u32>>,
    /// Tokens suppressed at the first sampled position (blank and end of text).
    #[serde(default)]
    pub suppress_ids_begin: Option<Vec<u32>>,
}

impl Ct2Config {
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::deserialize(value).map_err(|e| config_error(e.to_string()))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        Self::from_json(&value).map_err(|e| at_path(e, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_en() -> ModelDims {
        ModelDims {
            n_mels: 80,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_vocab: 51864,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
        }
    }

    /// mlx-community `config.json` of whisper-tiny.en, as its conversion script writes it.
    fn mlx_json() -> Value {
        json!({
            "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
            "n_audio_layer": 4, "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384,
            "n_text_head": 6, "n_text_layer": 4, "model_type": "whisper",
            "quantization": {"group_size": 64, "bits": 4}
        })
    }

    /// Excerpt of openai/whisper-tiny.en's transformers `config.json`.
    fn hf_json() -> Value {
        json!({
            "_name_or_path": "openai/whisper-tiny.en", "activation_function": "gelu",
            "architectures": ["WhisperForConditionalGeneration"], "d_model": 384,
            "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "decoder_layers": 4,
            "decoder_start_token_id": 50257, "encoder_attention_heads": 6,
            "encoder_ffn_dim": 1536, "encoder_layers": 4, "eos_token_id": 50256,
            "max_length": 448, "max_source_positions": 1500, "max_target_positions": 448,
            "model_type": "whisper", "num_hidden_layers": 4, "num_mel_bins": 80,
            "vocab_size": 51864, "torch_dtype": "float32"
        })
    }

    #[test]
    fn openai_and_hf_json_agree() {
        let openai = ModelDims::from_openai_json(&mlx_json()).unwrap();
        let hf = ModelDims::from_hf_json(&hf_json()).unwrap();
        assert_eq!(openai, tiny_en());
        assert_eq!(hf, tiny_en());
        assert_eq!(ModelDims::from_json(&mlx_json()).unwrap(), tiny_en());
        assert_eq!(ModelDims::from_json(&hf_json()).unwrap(), tiny_en());
        assert_eq!(
            ConfigNaming::detect(&hf_json()),
            Some(ConfigNaming::HuggingFace)
        );
        assert_eq!(
            ConfigNaming::detect(&mlx_json()),
            Some(ConfigNaming::OpenAi)
        );
        // Our own serialisation is the OpenAI naming.
        let ours = serde_json::to_value(tiny_en()).unwrap();
        assert_eq!(ModelDims::from_openai_json(&ours).unwrap(), tiny_en());
    }

    #[test]
    fn config_files_are_auto_detected_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [("mlx.json", mlx_json()), ("hf.json", hf_json())] {
            let path = dir.path().join(name);
            std::fs::write(&path, value.to_string()).unwrap();
            assert_eq!(ModelDims::from_config_file(&path).unwrap(), tiny_en());
        }
        let ct2 = dir.path().join("ct2.json");
        std::fs::write(&ct2, r#"{"lang_ids": [50259]}"#).unwrap();
        let err = ModelDims::from_config_file(&ct2).unwrap_err();
        assert!(err.to_string().contains("ct2.json"), "{err}");

        let mut broken = mlx_json();
        broken["n_text_head"] = json!("six");
        let path = dir.path().join("broken.json");
        std::fs::write(&path, broken.to_string()).unwrap();
        let err = ModelDims::from_config_file(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("broken.json") && text.contains("n_text_head"),
            "{text}"
        );

        let path = dir.path().join("notjson.json");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            ModelDims::from_config_file(&path),
            Err(WhisperError::InvalidConfig { .. })
        ));
        assert!(matches!(
            ModelDims::from_config_file(&dir.path().join("absent.json")),
            Err(WhisperError::Io { .. })
        ));
    }

    #[test]
    fn missing_keys_are_named() {
        let mut value = hf_json();
        value.as_object_mut().unwrap().remove("decoder_layers");
        let err = ModelDims::from_hf_json(&value).unwrap_err();
        assert!(err.to_string().contains("decoder_layers"), "{err}");
        let err = ModelDims::from_openai_json(&json!({"n_mels": -1})).unwrap_err();
        assert!(err.to_string().contains("n_mels"), "{err}");
    }

    #[test]
    fn validate_rejects_impossible_dimensions() {
        assert!(tiny_en().validate().is_ok());
        let err = ModelDims {
            n_text_layer: 0,
            ..tiny_en()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("n_text_layer"), "{err}");
        let err = ModelDims {
            n_audio_head: 7,
            ..tiny_en()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("does not divide"), "{err}");
        let err = ModelDims {
            n_text_state: 512,
            n_text_head: 8,
            ..tiny_en()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
    }

    #[test]
    fn languages_follow_openai() {
        assert!(!tiny_en().is_multilingual());
        assert_eq!(tiny_en().num_languages(), 99);
        let base = ModelDims {
            n_vocab: 51865,
            ..tiny_en()
        };
        assert!(base.is_multilingual());
        assert_eq!(base.num_languages(), 99);
        let large_v3 = ModelDims {
            n_vocab: 51866,
            ..tiny_en()
        };
        assert_eq!(large_v3.num_languages(), 100);
    }

    #[test]
    fn head_table() {
        assert_eq!(heads_for_state(384).unwrap(), 6);
        assert_eq!(heads_for_state(1280).unwrap(), 20);
        assert!(heads_for_state(100).is_err());
    }

    fn fake_tensors(dims: &ModelDims, conv_kernel_last: bool) -> BTreeMap<String, HostTensor> {
        let t = |shape: &[usize]| HostTensor {
            shape: shape.to_vec(),
            dtype: crate::ct2::HostDtype::F16,
            data: Vec::new(),
        };
        let s = dims.n_audio_state;
        let mut m = BTreeMap::new();
        let conv1 = if conv_kernel_last {
            [s, dims.n_mels, 3]
        } else {
            [s, 3, dims.n_mels]
        };
        m.insert("encoder.conv1.weight".to_string(), t(&conv1));
        m.insert(
            "encoder.positional_embedding".into(),
            t(&[dims.n_audio_ctx, s]),
        );
        m.insert(
            "decoder.token_embedding.weight".into(),
            t(&[dims.n_vocab, s]),
        );
        m.insert(
            "decoder.positional_embedding".into(),
            t(&[dims.n_text_ctx, s]),
        );
        for i in 0..dims.n_audio_layer {
            m.insert(format!("encoder.blocks.{i}.attn_ln.weight"), t(&[s]));
        }
        for i in 0..dims.n_text_layer {
            m.insert(format!("decoder.blocks.{i}.attn_ln.weight"), t(&[s]));
        }
        m
    }

    #[test]
    fn dims_are_inferred_from_shapes() {
        let want = tiny_en();
        for kernel_last in [true, false] {
            let tensors = fake_tensors(&want, kernel_last);
            assert_eq!(
                ModelDims::infer_from_tensors_with_heads(&tensors, None).unwrap(),
                want
            );
        }
        let tensors = fake_tensors(&want, true);
        let with_heads =
            ModelDims::infer_from_tensors_with_heads(&tensors, Some((12, 12))).unwrap();
        assert_eq!(with_heads.n_audio_head, 12);

        let mut gap = fake_tensors(&want, true);
        gap.remove("decoder.blocks.1.attn_ln.weight");
        let err = ModelDims::infer_from_tensors_with_heads(&gap, None).unwrap_err();
        assert!(err.to_string().contains("decoder.blocks.1"), "{err}");

        let mut odd = tiny_en();
        odd.n_audio_state = 100;
        odd.n_text_state = 100;
        assert!(ModelDims::infer_from_tensors_with_heads(&fake_tensors(&odd, true), None).is_err());
    }

    #[test]
    fn ct2_config_parses_with_and_without_fields() {
        let value = json!({
            "alignment_heads": [[1, 0], [2, 5]],
            "lang_ids": [50259, 50260],
            "suppress_ids": [1, 2, 7],
            "suppress_ids_begin": [220, 50256],
            "something_new": true
        });
        let config = Ct2Config::from_json(&value).unwrap();
        assert_eq!(config.alignment_heads, Some(vec![(1, 0), (2, 5)]));
        assert_eq!(config.lang_ids, Some(vec![50259, 50260]));
        assert_eq!(config.suppress_ids_begin, Some(vec![220, 50256]));
        assert_eq!(
            Ct2Config::from_json(&json!({})).unwrap(),
            Ct2Config::default()
        );
        assert!(Ct2Config::from_json(&json!({"alignment_heads": [[1]]})).is_err());
    }

    fn real_model_dir(name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("STENO_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/steno/assets")
            })
            .join("models")
            .join(name);
        if dir.join("model.bin").is_file() {
            Some(dir)
        } else {
            eprintln!("skipping: {} not found (set STENO_ASSETS)", dir.display());
            None
        }
    }

    #[test]
    fn real_tiny_en_dims_and_config() {
        let Some(dir) = real_model_dir("tiny.en-ct2") else {
            return;
        };
        let path = dir.join("model.bin");
        let model = crate::ct2::read_model_bin(&path).unwrap();
        let heads = model.num_heads();
        let tensors = crate::ct2::whisper_tensors(model, &path).unwrap();
        assert_eq!(
            ModelDims::infer_from_tensors_with_heads(&tensors, None).unwrap(),
            tiny_en()
        );
        assert_eq!(
            ModelDims::infer_from_tensors_with_heads(&tensors, heads).unwrap(),
            tiny_en()
        );
        let config = Ct2Config::from_file(&dir.join("config.json")).unwrap();
        assert_eq!(config.alignment_heads.as_ref().unwrap().len(), 8);
        assert_eq!(config.lang_ids.as_ref().unwrap().len(), 98);
        assert_eq!(config.suppress_ids_begin, Some(vec![220, 50256]));
        // A CTranslate2 config.json has no dimensions.
        assert!(ModelDims::from_config_file(&dir.join("config.json")).is_err());
    }
}
