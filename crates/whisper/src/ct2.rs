//! CTranslate2 Whisper models: the `model.bin` reader and the mapping of its variables to
//! our canonical (OpenAI / mlx-community) parameter names.
//!
//! The file layout (binary version 6, see CTranslate2's `specs/model_spec.py`, `_serialize`)
//! is, little-endian throughout:
//!
//! ```text
//! u32 binary version
//! str spec name, u32 spec revision              (version >= 2)
//! u32 variable count, then per variable:
//!   str name, u8 rank, u32 × rank dims,
//!   u8 dtype id, u32 byte count                 (version >= 4; before: u8 item size, u32 element count)
//!   raw data
//! u32 alias count, then (str alias, str target) (version >= 3)
//! ```
//!
//! where `str` is a u16 length followed by that many bytes, the last one a NUL.
//!
//! Every length read from the file is checked against the bytes that remain before anything
//! is allocated from it, so a truncated or corrupt file is an [`WhisperError::InvalidModel`]
//! naming the variable being read, never a panic or a huge allocation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use crate::error::{Result, WhisperError};

/// The newest `model.bin` layout this reader knows (CTranslate2 3.x and 4.x write 6).
const MAX_BINARY_VERSION: u32 = 6;

/// Element type of a stored CTranslate2 variable, numbered as in CTranslate2's `DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawDtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl RawDtype {
    /// The type for a dtype id of binary version 4 and later.
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    /// Versions before 4 stored only the item size; CTranslate2 resolved it like this.
    fn from_legacy_item_size(size: u8) -> Option<Self> {
        Some(match size {
            4 => Self::F32,
            2 => Self::I16,
            1 => Self::I8,
            _ => return None,
        })
    }
}

impl fmt::Display for RawDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "float32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        })
    }
}

/// One variable exactly as stored: row-major, little-endian `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: RawDtype,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The value of a rank-0 (or one-element) integer variable, such as `encoder/num_heads`.
    fn scalar_i64(&self) -> Option<i64> {
        if self.num_elements() != 1 {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            RawDtype::I8 => i64::from(d[0] as i8),
            RawDtype::I16 => i64::from(i16::from_le_bytes([d[0], d[1]])),
            RawDtype::I32 => i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            _ => return None,
        })
    }
}

/// The contents of a `model.bin`: variables in file order and the alias table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Model {
    pub binary_version: u32,
    /// e.g. `WhisperSpec`; empty for binary version 1.
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<RawTensor>,
    /// `(alias, target)`: `alias` names the same value as `target` (CTranslate2 stores
    /// duplicated variables once, e.g. `decoder/projection/weight` → `decoder/embeddings/weight`).
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model {
    /// A variable by name, following aliases (including the implicit `_scale` aliases
    /// CTranslate2 registers alongside each alias).
    fn get(&self, name: &str) -> Option<&RawTensor> {
        let index: HashMap<&str, usize> = self
            .variables
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect();
        let aliases = alias_map(&self.aliases);
        let resolved = resolve_name(name, &|n| index.contains_key(n), &aliases)?;
        Some(&self.variables[index[resolved.as_str()]])
    }

    /// `(encoder heads, decoder heads)` from the `encoder/num_heads` and `decoder/num_heads`
    /// scalars that CTranslate2's Whisper spec stores.
    pub fn num_heads(&self) -> Option<(usize, usize)> {
        let heads = |name: &str| {
            let value = self.get(name)?.scalar_i64()?;
            usize::try_from(value).ok().filter(|&h| h > 0)
        };
        Some((heads("encoder/num_heads")?, heads("decoder/num_heads")?))
    }
}

/// Reads a CTranslate2 `model.bin` (binary versions 1 to 6).
pub fn read_model_bin(path: &Path) -> Result<Ct2Model> {
    let bytes = std::fs::read(path).map_err(|source| WhisperError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_model_bin(&bytes, path)
}

/// Parses the bytes of a `model.bin`; `path` only names the file in errors.
fn parse_model_bin(bytes: &[u8], path: &Path) -> Result<Ct2Model> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    let what = "the header";
    let binary_version = r.u32(what)?;
    if binary_version == 0 || binary_version > MAX_BINARY_VERSION {
        return Err(r.invalid(format!(
            "unsupported binary version {binary_version} (this reader knows 1 to \
             {MAX_BINARY_VERSION}); not a CTranslate2 model.bin?"
        )));
    }
    let (spec, revision) = if binary_version >= 2 {
        (r.string(what)?, r.u32(what)?)
    } else {
        (String::new(), 1)
    };

    let count = r.u32("the variable count")? as usize;
    // A bogus count must not reserve memory: each variable takes at least 9 bytes (name
    // length, NUL, rank, dtype, byte count), and reading stops at the first truncated one.
    const MIN_VARIABLE_BYTES: usize = 9;
    let capacity = count.min(r.remaining() / MIN_VARIABLE_BYTES);
    let mut variables = Vec::with_capacity(capacity);
    let mut seen = HashMap::with_capacity(capacity);
    for i in 0..count {
        let previous = variables.last().map(|v: &RawTensor| v.name.as_str());
        let variable = read_variable(&mut r, i, previous, binary_version)?;
        if seen.insert(variable.name.clone(), i).is_some() {
            return Err(r.invalid(format!("variable `{}` appears twice", variable.name)));
        }
        variables.push(variable);
    }

    let mut aliases = Vec::new();
    if binary_version >= 3 {
        let count = r.u32("the alias count")? as usize;
        // Two strings of at least 3 bytes each.
        aliases.reserve(count.min(r.remaining() / 6));
        for i in 0..count {
            let what = format!("alias #{i}");
            let alias = r.string(&what)?;
            let target = r.string(&format!("the target of alias `{alias}`"))?;
            aliases.push((alias, target));
        }
    }
    if r.remaining() != 0 {
        return Err(r.invalid(format!(
            "{} unexpected bytes after the alias table (at offset {})",
            r.remaining(),
            r.pos
        )));
    }

    let model = Ct2Model {
        binary_version,
        spec,
        revision,
        variables,
        aliases,
    };
    check_aliases(&model, path)?;
    Ok(model)
}

fn read_variable(
    r: &mut Reader<'_>,
    i: usize,
    previous: Option<&str>,
    binary_version: u32,
) -> Result<RawTensor> {
    let after = previous
        .map(|p| format!(" (after `{p}`)"))
        .unwrap_or_default();
    let name = r.string(&format!("the name of variable #{i}{after}"))?;
    if name.is_empty() {
        return Err(r.invalid(format!("variable #{i} has an empty name")));
    }
    let what = format!("variable #{i} `{name}`");
    let rank = r.u8(&what)? as usize;
    r.need(4 * rank, &what)?;
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        shape.push(r.u32(&what)? as usize);
    }
    let (dtype, num_bytes) = if binary_version >= 4 {
        let id = r.u8(&what)?;
        let dtype = RawDtype::from_id(id)
            .ok_or_else(|| r.invalid(format!("{what} has unknown dtype id {id}")))?;
        (dtype, r.u32(&what)? as usize)
    } else {
        let size = r.u8(&what)?;
        let dtype = RawDtype::from_legacy_item_size(size)
            .ok_or_else(|| r.invalid(format!("{what} has unknown item size {size}")))?;
        let elements = r.u32(&what)? as usize;
        (dtype, elements * dtype.size())
    };
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| r.invalid(format!("{what} has an impossible shape {shape:?}")))?;
    if expected != num_bytes {
        return Err(r.invalid(format!(
            "{what} declares {num_bytes} bytes but shape {shape:?} of {dtype} needs {expected}"
        )));
    }
    let data = r.take(num_bytes, &what)?.to_vec();
    Ok(RawTensor {
        name,
        shape,
        dtype,
        data,
    })
}

/// Every alias must lead, possibly through other aliases, to a stored variable.
fn check_aliases(model: &Ct2Model, path: &Path) -> Result<()> {
    let names: std::collections::HashSet<&str> =
        model.variables.iter().map(|v| v.name.as_str()).collect();
    let aliases = alias_map(&model.aliases);
    for (alias, target) in &model.aliases {
        if names.contains(alias.as_str()) {
            return Err(invalid(
                path,
                format!("alias `{alias}` shadows a stored variable"),
            ));
        }
        if resolve_name(alias, &|n| names.contains(n), &aliases).is_none() {
            return Err(invalid(
                path,
                format!("alias `{alias}` points to `{target}`, which is not stored"),
            ));
        }
    }
    Ok(())
}

fn alias_map(aliases: &[(String, String)]) -> HashMap<&str, &str> {
    aliases
        .iter()
        .map(|(a, t)| (a.as_str(), t.as_str()))
        .collect()
}

/// The stored variable `name` stands for. Besides the explicit aliases, CTranslate2 aliases
/// `A_scale` to `T_scale` for every alias `A` → `T`.
fn resolve_name(
    name: &str,
    is_stored: &dyn Fn(&str) -> bool,
    aliases: &HashMap<&str, &str>,
) -> Option<String> {
    let mut current = name.to_string();
    // Bounded: a cycle of aliases resolves to nothing.
    for _ in 0..=aliases.len() {
        if is_stored(&current) {
            return Some(current);
        }
        current = if let Some(target) = aliases.get(current.as_str()) {
            (*target).to_string()
        } else if let Some(base) = current.strip_suffix("_scale") {
            format!("{}_scale", aliases.get(base)?)
        } else {
            return None;
        };
    }
    None
}

fn invalid(path: &Path, detail: String) -> WhisperError {
    WhisperError::InvalidModel {
        path: path.to_path_buf(),
        detail,
    }
}

/// A bounds-checked cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn invalid(&self, detail: String) -> WhisperError {
        invalid(self.path, detail)
    }

    fn need(&self, n: usize, what: &str) -> Result<()> {
        if n > self.remaining() {
            return Err(self.invalid(format!(
                "truncated while reading {what}: needs {n} bytes at offset {}, only {} left \
                 (file is {} bytes)",
                self.pos,
                self.remaining(),
                self.bytes.len()
            )));
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        self.need(n, what)?;
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u16-length string whose last byte is a NUL (CTranslate2 keeps what precedes the
    /// first NUL).
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u16(what)? as usize;
        let start = self.pos;
        let raw = self.take(len, what)?;
        let Some(nul) = raw.iter().position(|&b| b == 0) else {
            return Err(self.invalid(format!(
                "{what}: string at offset {start} is not NUL-terminated"
            )));
        };
        String::from_utf8(raw[..nul].to_vec())
            .map_err(|_| self.invalid(format!("{what}: string at offset {start} is not UTF-8")))
    }
}

// ---------------------------------------------------------------------------------------
// Whisper: CTranslate2 names → canonical names.
// ---------------------------------------------------------------------------------------

/// Element type of a tensor handed to the model builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostDtype {
    F32,
    F16,
    BF16,
}

impl HostDtype {
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// A tensor in host memory: row-major, little-endian raw `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub dtype: HostDtype,
    pub data: Vec<u8>,
}

impl HostTensor {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values widened to f32 (for checks and tests; the model keeps the stored type).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            HostDtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            HostDtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            HostDtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

/// Where one canonical tensor comes from: all of a CTranslate2 variable, or one of `parts`
/// equal row blocks of it (fused projections).
struct Piece {
    canonical: String,
    part: usize,
}

struct Source {
    ct2: String,
    parts: usize,
    pieces: Vec<Piece>,
}

/// Counts layers by the `<scope>/layer_N/` names present in the file (variables or aliases).
fn count_layers(model: &Ct2Model, scope: &str) -> usize {
    let prefix = format!("{scope}/layer_");
    model
        .variables
        .iter()
        .map(|v| v.name.as_str())
        .chain(model.aliases.iter().map(|(a, _)| a.as_str()))
        .filter_map(|name| {
            let rest = name.strip_prefix(&prefix)?;
            rest.split('/').next()?.parse::<usize>().ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// The CTranslate2 → canonical plan for a Whisper spec with these layer counts.
fn whisper_plan(encoder_layers: usize, decoder_layers: usize) -> Vec<Source> {
    let mut plan = Plan::default();
    plan.model_tensors();
    for i in 0..encoder_layers {
        plan.layer("encoder", i, false);
    }
    for i in 0..decoder_layers {
        plan.layer("decoder", i, true);
    }
    plan.0
}

/// A plan under construction, in the order its sources are resolved (and so the order in
/// which a missing variable is reported).
#[derive(Default)]
struct Plan(Vec<Source>);

impl Plan {
    /// The tensors outside the residual blocks: convolutions, embeddings, final norms.
    fn model_tensors(&mut self) {
        for conv in ["conv1", "conv2"] {
            self.linear(&format!("encoder/{conv}"), &format!("encoder.{conv}"));
        }
        self.whole(
            "encoder/position_encodings/encodings".into(),
            "encoder.positional_embedding".into(),
        );
        self.whole(
            "decoder/embeddings/weight".into(),
            "decoder.token_embedding.weight".into(),
        );
        self.whole(
            "decoder/position_encodings/encodings".into(),
            "decoder.positional_embedding".into(),
        );
        self.norm("encoder/layer_norm", "encoder.ln_post");
        self.norm("decoder/layer_norm", "decoder.ln");
    }

    /// Residual block `i` of `scope` (`encoder` or `decoder`); decoder blocks (`cross`)
    /// also attend to the audio.
    fn layer(&mut self, scope: &str, i: usize, cross: bool) {
        let c = format!("{scope}/layer_{i}");
        let o = format!("{scope}.blocks.{i}");
        self.norm(
            &format!("{c}/self_attention/layer_norm"),
            &format!("{o}.attn_ln"),
        );
        self.norm(&format!("{c}/ffn/layer_norm"), &format!("{o}.mlp_ln"));
        if cross {
            self.norm(
                &format!("{c}/attention/layer_norm"),
                &format!("{o}.cross_attn_ln"),
            );
        }
        self.linear(
            &format!("{c}/self_attention/linear_1"),
            &format!("{o}.attn.out"),
        );
        self.linear(&format!("{c}/ffn/linear_0"), &format!("{o}.mlp.0"));
        self.linear(&format!("{c}/ffn/linear_1"), &format!("{o}.mlp.2"));
        if cross {
            self.linear(
                &format!("{c}/attention/linear_0"),
                &format!("{o}.cross_attn.query"),
            );
            self.linear(
                &format!("{c}/attention/linear_2"),
                &format!("{o}.cross_attn.out"),
            );
        }
        self.fused(
            &format!("{c}/self_attention/linear_0"),
            &format!("{o}.attn"),
            &["query", "key", "value"],
        );
        if cross {
            self.fused(
                &format!("{c}/attention/linear_1"),
                &format!("{o}.cross_attn"),
                &["key", "value"],
            );
        }
    }

    /// All of the variable `ct2` is the tensor `canonical`.
    fn whole(&mut self, ct2: String, canonical: String) {
        self.0.push(Source {
            ct2,
            parts: 1,
            pieces: vec![Piece { canonical, part: 0 }],
        });
    }

    /// A layer norm: CTranslate2's `gamma` and `beta` are `weight` and `bias`.
    fn norm(&mut self, ct2: &str, canonical: &str) {
        self.whole(format!("{ct2}/gamma"), format!("{canonical}.weight"));
        self.whole(format!("{ct2}/beta"), format!("{canonical}.bias"));
    }

    /// A linear (or convolution) layer's `weight` and `bias`, under the same names.
    fn linear(&mut self, ct2: &str, canonical: &str) {
        for p in ["weight", "bias"] {
            self.whole(format!("{ct2}/{p}"), format!("{canonical}.{p}"));
        }
    }

    /// A fused projection: equal row blocks of `ct2`'s weight and bias are the projections
    /// `names` of `attn`. Whisper's key projection has no bias: the fused bias carries
    /// zeros there, which we drop.
    fn fused(&mut self, ct2: &str, attn: &str, names: &[&str]) {
        let parts = names.len();
        for p in ["weight", "bias"] {
            let pieces = names
                .iter()
                .enumerate()
                .filter(|(_, n)| p == "weight" || **n != "key")
                .map(|(part, n)| Piece {
                    canonical: format!("{attn}.{n}.{p}"),
                    part,
                })
                .collect();
            self.0.push(Source {
                ct2: format!("{ct2}/{p}"),
                parts,
                pieces,
            });
        }
    }
}

/// Turns a CTranslate2 Whisper model into canonical tensors (`encoder.conv1.weight`,
/// `decoder.blocks.0.cross_attn.key.weight`, …; see the module docs).
///
/// Convolution weights keep CTranslate2's `[out, in, kernel]` layout (OpenAI's too).
/// Fused projections are split by rows. Float tensors keep their stored type; int8/int16
/// weights are dequantized to f32 with their `weight_scale`. `path` names the file in errors.
pub fn whisper_tensors(model: Ct2Model, path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let encoder_layers = count_layers(&model, "encoder");
    let decoder_layers = count_layers(&model, "decoder");
    if encoder_layers == 0 || decoder_layers == 0 {
        return Err(invalid(
            path,
            format!(
                "found {encoder_layers} encoder and {decoder_layers} decoder layers \
                 (spec `{}`); not a CTranslate2 Whisper model?",
                model.spec
            ),
        ));
    }
    let plan = whisper_plan(encoder_layers, decoder_layers);

    let aliases: Vec<(String, String)> = model.aliases;
    let alias_lookup = alias_map(&aliases);
    let mut stored: HashMap<String, RawTensor> = model
        .variables
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();

    // Resolve every source first, so that a value used by several names (through aliases)
    // is copied only for the earlier uses and moved for the last.
    let mut resolved = Vec::with_capacity(plan.len());
    let mut uses: HashMap<String, usize> = HashMap::new();
    for source in &plan {
        let name = resolve_name(&source.ct2, &|n| stored.contains_key(n), &alias_lookup)
            .ok_or_else(|| WhisperError::MissingTensor {
                path: path.to_path_buf(),
                name: source.ct2.clone(),
            })?;
        *uses.entry(name.clone()).or_default() += 1;
        resolved.push(name);
    }

    let mut out = BTreeMap::new();
    for (source, name) in plan.iter().zip(resolved) {
        let scale_name = format!("{}_scale", source.ct2);
        let scale = resolve_name(&scale_name, &|n| stored.contains_key(n), &alias_lookup)
            .map(|n| stored[&n].clone());
        let left = uses.get_mut(&name).expect("counted above");
        *left -= 1;
        let raw = if *left == 0 {
            stored.remove(&name).expect("resolved above")
        } else {
            stored[&name].clone()
        };
        let tensor = to_host(raw, scale.as_ref(), &source.ct2, path)?;
        if source.parts == 1 {
            let piece = &source.pieces[0];
            out.insert(piece.canonical.clone(), tensor);
        } else {
            for piece in &source.pieces {
                let part = row_block(&tensor, piece.part, source.parts)
                    .map_err(|detail| invalid(path, format!("`{}`: {detail}", source.ct2)))?;
                out.insert(piece.canonical.clone(), part);
            }
        }
    }
    Ok(out)
}

/// Block `index` of `parts` equal blocks of rows (the first axis).
fn row_block(
    tensor: &HostTensor,
    index: usize,
    parts: usize,
) -> std::result::Result<HostTensor, String> {
    let rows = tensor.shape.first().copied().unwrap_or(0);
    if rows == 0 || rows % parts != 0 {
        return Err(format!(
            "cannot split shape {:?} into {parts} equal row blocks",
            tensor.shape
        ));
    }
    let block_bytes = tensor.data.len() / parts;
    let mut shape = tensor.shape.clone();
    shape[0] = rows / parts;
    Ok(HostTensor {
        shape,
        dtype: tensor.dtype,
        data: tensor.data[index * block_bytes..(index + 1) * block_bytes].to_vec(),
    })
}

fn to_host(
    raw: RawTensor,
    scale: Option<&RawTensor>,
    ct2_name: &str,
    path: &Path,
) -> Result<HostTensor> {
    let dtype = match raw.dtype {
        RawDtype::F32 => HostDtype::F32,
        RawDtype::F16 => HostDtype::F16,
        RawDtype::BF16 => HostDtype::BF16,
        RawDtype::I8 | RawDtype::I16 => {
            let scale = scale.ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "`{ct2_name}` is {} but `{ct2_name}_scale` is missing",
                        raw.dtype
                    ),
                )
            })?;
            return dequantize(&raw, scale)
                .map_err(|detail| invalid(path, format!("`{ct2_name}`: {detail}")));
        }
        RawDtype::I32 => {
            return Err(invalid(
                path,
                format!("`{ct2_name}` is int32, which is not a weight type"),
            ))
        }
    };
    Ok(HostTensor {
        shape: raw.shape,
        dtype,
        data: raw.data,
    })
}

/// CTranslate2 quantizes `q = round(w * scale)` with one scale per row (int8) or one for the
/// whole tensor (int16), so `w = q / scale`.
fn dequantize(raw: &RawTensor, scale: &RawTensor) -> std::result::Result<HostTensor, String> {
    let scales: Vec<f32> = match scale.dtype {
        RawDtype::F32 => scale
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        RawDtype::F16 => scale
            .data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        RawDtype::BF16 => scale
            .data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("its scale is {other}, expected a float type")),
    };
    let rows = raw.shape.first().copied().unwrap_or(1);
    let n = raw.num_elements();
    let row_len = n.checked_div(rows).unwrap_or(0);
    if !(scales.len() == 1 || scales.len() == rows) {
        return Err(format!(
            "{} scales for shape {:?} (expected 1 or {rows})",
            scales.len(),
            raw.shape
        ));
    }
    if scales.iter().any(|s| *s == 0.0 || !s.is_finite()) {
        return Err("its scale contains zero or a non-finite value".into());
    }
    let value = |i: usize| -> f32 {
        match raw.dtype {
            RawDtype::I8 => f32::from(raw.data[i] as i8),
            _ => f32::from(i16::from_le_bytes([raw.data[2 * i], raw.data[2 * i + 1]])),
        }
    };
    let mut data = Vec::with_capacity(n * 4);
    for i in 0..n {
        let s = if scales.len() == 1 {
            scales[0]
        } else {
            scales[i / row_len]
        };
        data.extend_from_slice(&(value(i) / s).to_le_bytes());
    }
    Ok(HostTensor {
        shape: raw.shape.clone(),
        dtype: HostDtype::F32,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn plan_covers_every_block_tensor_once() {
        let plan = whisper_plan(1, 2);
        // 11 model tensors; an encoder block 12 sources, a decoder block 20.
        assert_eq!(plan.len(), 11 + 12 + 2 * 20);
        let canonical: Vec<&str> = plan
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.canonical.as_str()))
            .collect();
        let unique: std::collections::HashSet<&str> = canonical.iter().copied().collect();
        assert_eq!(
            unique.len(),
            canonical.len(),
            "a canonical name planned twice"
        );
        for name in [
            "encoder.conv2.bias",
            "encoder.ln_post.weight",
            "decoder.ln.bias",
            "encoder.blocks.0.attn.value.bias",
            "decoder.blocks.1.cross_attn_ln.weight",
            "decoder.blocks.1.cross_attn.key.weight",
            "decoder.blocks.1.mlp.2.weight",
        ] {
            assert!(unique.contains(name), "{name} not planned");
        }
        // Whisper's key projections have no bias; cross-attention only in the decoder.
        assert!(!unique.contains("encoder.blocks.0.attn.key.bias"));
        assert!(!unique.contains("decoder.blocks.0.cross_attn.key.bias"));
        assert!(!unique
            .iter()
            .any(|n| n.starts_with("encoder.blocks.0.cross_attn")));
        let qkv = plan
            .iter()
            .find(|s| s.ct2 == "decoder/layer_1/self_attention/linear_0/weight")
            .unwrap();
        assert_eq!(qkv.parts, 3);
        let parts: Vec<(&str, usize)> = qkv
            .pieces
            .iter()
            .map(|p| (p.canonical.as_str(), p.part))
            .collect();
        assert_eq!(
            parts,
            [
                ("decoder.blocks.1.attn.query.weight", 0),
                ("decoder.blocks.1.attn.key.weight", 1),
                ("decoder.blocks.1.attn.value.weight", 2),
            ]
        );
    }

    /// Writes a `model.bin` of binary version 6, as CTranslate2's `_serialize` does.
    struct Writer(Vec<u8>);

    impl Writer {
        fn new(spec: &str, revision: u32) -> Self {
            let mut w = Writer(Vec::new());
            w.u32(6);
            w.string(spec);
            w.u32(revision);
            w
        }
        fn u32(&mut self, v: u32) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn string(&mut self, s: &str) {
            self.0
                .extend_from_slice(&u16::try_from(s.len() + 1).unwrap().to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
        }
        fn variables(&mut self, vars: &[RawTensor]) {
            self.u32(vars.len() as u32);
            for v in vars {
                self.string(&v.name);
                self.0.push(v.shape.len() as u8);
                for &d in &v.shape {
                    self.u32(d as u32);
                }
                let id = match v.dtype {
                    RawDtype::F32 => 0,
                    RawDtype::I8 => 1,
                    RawDtype::I16 => 2,
                    RawDtype::I32 => 3,
                    RawDtype::F16 => 4,
                    RawDtype::BF16 => 5,
                };
                self.0.push(id);
                self.u32(v.data.len() as u32);
                self.0.extend_from_slice(&v.data);
            }
        }
        fn aliases(&mut self, aliases: &[(&str, &str)]) {
            self.u32(aliases.len() as u32);
            for (a, t) in aliases {
                self.string(a);
                self.string(t);
            }
        }
    }

    fn f32_tensor(name: &str, shape: &[usize], values: impl Fn(usize) -> f32) -> RawTensor {
        let n: usize = shape.iter().product();
        RawTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: RawDtype::F32,
            data: (0..n).flat_map(|i| values(i).to_le_bytes()).collect(),
        }
    }

    fn f16_tensor(name: &str, shape: &[usize], values: impl Fn(usize) -> f32) -> RawTensor {
        let n: usize = shape.iter().product();
        RawTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: RawDtype::F16,
            data: (0..n)
                .flat_map(|i| half::f16::from_f32(values(i)).to_le_bytes())
                .collect(),
        }
    }

    fn scalar_i16(name: &str, v: i16) -> RawTensor {
        RawTensor {
            name: name.into(),
            shape: vec![],
            dtype: RawDtype::I16,
            data: v.to_le_bytes().to_vec(),
        }
    }

    /// A complete, tiny Whisper spec: state 8, 2 mels, vocab 10, contexts 6/4, one layer
    /// each; each variable's values encode (variable index, element index).
    fn tiny_whisper_variables(state: usize, quantize_fused_qkv: bool) -> Vec<RawTensor> {
        let s = state;
        let mut specs: Vec<(String, Vec<usize>)> = vec![
            ("encoder/conv1/weight".into(), vec![s, 2, 3]),
            ("encoder/conv1/bias".into(), vec![s]),
            ("encoder/conv2/weight".into(), vec![s, s, 3]),
            ("encoder/conv2/bias".into(), vec![s]),
            ("encoder/position_encodings/encodings".into(), vec![6, s]),
            ("encoder/layer_norm/gamma".into(), vec![s]),
            ("encoder/layer_norm/beta".into(), vec![s]),
            ("decoder/embeddings/weight".into(), vec![10, s]),
            ("decoder/position_encodings/encodings".into(), vec![4, s]),
            ("decoder/layer_norm/gamma".into(), vec![s]),
            ("decoder/layer_norm/beta".into(), vec![s]),
        ];
        for scope in ["encoder", "decoder"] {
            let c = format!("{scope}/layer_0");
            let mut blocks = vec!["self_attention/layer_norm", "ffn/layer_norm"];
            if scope == "decoder" {
                blocks.push("attention/layer_norm");
            }
            for b in blocks {
                specs.push((format!("{c}/{b}/gamma"), vec![s]));
                specs.push((format!("{c}/{b}/beta"), vec![s]));
            }
            let mut linears = vec![
                ("self_attention/linear_0", 3 * s, s),
                ("self_attention/linear_1", s, s),
                ("ffn/linear_0", 4 * s, s),
                ("ffn/linear_1", s, 4 * s),
            ];
            if scope == "decoder" {
                linears.push(("attention/linear_0", s, s));
                linears.push(("attention/linear_1", 2 * s, s));
                linears.push(("attention/linear_2", s, s));
            }
            for (l, rows, cols) in linears {
                specs.push((format!("{c}/{l}/weight"), vec![rows, cols]));
                specs.push((format!("{c}/{l}/bias"), vec![rows]));
            }
        }
        let mut vars: Vec<RawTensor> = specs
            .iter()
            .enumerate()
            .map(|(vi, (name, shape))| {
                f16_tensor(name, shape, |i| vi as f32 + (i % 100) as f32 / 128.0)
            })
            .collect();
        if quantize_fused_qkv {
            let name = "encoder/layer_0/self_attention/linear_0/weight";
            let v = vars.iter_mut().find(|v| v.name == name).unwrap();
            let (rows, cols) = (v.shape[0], v.shape[1]);
            v.dtype = RawDtype::I8;
            v.data = (0..rows * cols).map(|i| (i % 200) as i8 as u8).collect();
            vars.push(f32_tensor(&format!("{name}_scale"), &[rows], |r| {
                (r + 1) as f32
            }));
        }
        vars.push(scalar_i16("encoder/num_heads", 2));
        vars.push(scalar_i16("decoder/num_heads", 2));
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        vars
    }

    fn tiny_model_bytes(vars: &[RawTensor], aliases: &[(&str, &str)]) -> Vec<u8> {
        let mut w = Writer::new("WhisperSpec", 3);
        w.variables(vars);
        w.aliases(aliases);
        w.0
    }

    const PROJECTION_ALIAS: (&str, &str) =
        ("decoder/projection/weight", "decoder/embeddings/weight");

    #[test]
    fn hand_built_model_round_trips() {
        let vars = tiny_whisper_variables(8, false);
        let bytes = tiny_model_bytes(&vars, &[PROJECTION_ALIAS]);
        let model = parse_model_bin(&bytes, Path::new("tiny.bin")).unwrap();
        assert_eq!(model.binary_version, 6);
        assert_eq!(model.spec, "WhisperSpec");
        assert_eq!(model.revision, 3);
        assert_eq!(model.variables, vars);
        assert_eq!(
            model.aliases,
            vec![(
                PROJECTION_ALIAS.0.to_string(),
                PROJECTION_ALIAS.1.to_string()
            )]
        );
        assert_eq!(model.num_heads(), Some((2, 2)));
        let projection = model.get("decoder/projection/weight").unwrap();
        assert_eq!(projection.name, "decoder/embeddings/weight");
    }

    #[test]
    fn hand_built_model_maps_and_splits_fused_projections() {
        let s = 8;
        let vars = tiny_whisper_variables(s, false);
        let fused_qkv = vars
            .iter()
            .find(|v| v.name == "decoder/layer_0/self_attention/linear_0/weight")
            .unwrap()
            .clone();
        let fused_kv_bias = vars
            .iter()
            .find(|v| v.name == "decoder/layer_0/attention/linear_1/bias")
            .unwrap()
            .clone();
        let bytes = tiny_model_bytes(&vars, &[PROJECTION_ALIAS]);
        let model = parse_model_bin(&bytes, Path::new("tiny.bin")).unwrap();
        let tensors = whisper_tensors(model, Path::new("tiny.bin")).unwrap();

        let row_bytes = s * 2;
        for (k, name) in ["query", "key", "value"].iter().enumerate() {
            let t = &tensors[&format!("decoder.blocks.0.attn.{name}.weight")];
            assert_eq!(t.shape, vec![s, s]);
            assert_eq!(t.dtype, HostDtype::F16);
            assert_eq!(
                t.data,
                fused_qkv.data[k * s * row_bytes..(k + 1) * s * row_bytes]
            );
        }
        let v_bias = &tensors["decoder.blocks.0.cross_attn.value.bias"];
        assert_eq!(v_bias.data, fused_kv_bias.data[s * 2..]);
        assert!(!tensors.contains_key("decoder.blocks.0.attn.key.bias"));
        assert!(!tensors.contains_key("decoder.blocks.0.cross_attn.key.bias"));
        assert!(!tensors.contains_key("encoder.blocks.0.attn.key.bias"));
        assert_eq!(tensors["encoder.conv1.weight"].shape, vec![s, 2, 3]);
        assert_eq!(tensors["encoder.positional_embedding"].shape, vec![6, s]);
        assert_eq!(tensors["decoder.token_embedding.weight"].shape, vec![10, s]);
        // 11 top-level tensors, 15 per encoder block, 24 per decoder block.
        assert_eq!(tensors.len(), 11 + 15 + 24);
    }

    #[test]
    fn int8_weights_are_dequantized_with_their_row_scales() {
        let s = 4;
        let vars = tiny_whisper_variables(s, true);
        let bytes = tiny_model_bytes(&vars, &[PROJECTION_ALIAS]);
        let model = parse_model_bin(&bytes, Path::new("q.bin")).unwrap();
        let tensors = whisper_tensors(model, Path::new("q.bin")).unwrap();
        for (k, name) in ["query", "key", "value"].iter().enumerate() {
            let t = &tensors[&format!("encoder.blocks.0.attn.{name}.weight")];
            assert_eq!(t.dtype, HostDtype::F32);
            assert_eq!(t.shape, vec![s, s]);
            let values = t.to_f32_vec();
            for r in 0..s {
                for c in 0..s {
                    let global_row = k * s + r;
                    let i = global_row * s + c;
                    let q = (i % 200) as i8 as f32;
                    assert_eq!(values[r * s + c], q / (global_row + 1) as f32);
                }
            }
        }
    }

    #[test]
    fn int8_weight_without_scale_is_invalid() {
        let mut vars = tiny_whisper_variables(4, true);
        vars.retain(|v| !v.name.ends_with("_scale"));
        let bytes = tiny_model_bytes(&vars, &[]);
        let model = parse_model_bin(&bytes, Path::new("q.bin")).unwrap();
        let err = whisper_tensors(model, Path::new("q.bin")).unwrap_err();
        assert!(
            matches!(&err, WhisperError::InvalidModel { detail, .. } if detail.contains("_scale")),
            "{err}"
        );
    }

    #[test]
    fn aliased_variables_and_their_scales_resolve() {
        // CTranslate2 stores identical values once; here the decoder's final layer norm is
        // an alias of the encoder's.
        let mut vars = tiny_whisper_variables(4, false);
        vars.retain(|v| v.name != "decoder/layer_norm/gamma");
        let bytes = tiny_model_bytes(
            &vars,
            &[("decoder/layer_norm/gamma", "encoder/layer_norm/gamma")],
        );
        let model = parse_model_bin(&bytes, Path::new("a.bin")).unwrap();
        let tensors = whisper_tensors(model, Path::new("a.bin")).unwrap();
        assert_eq!(
            tensors["decoder.ln.weight"],
            tensors["encoder.ln_post.weight"]
        );

        let aliases: HashMap<&str, &str> = [("a/weight", "b/weight")].into_iter().collect();
        let stored = |n: &str| n == "b/weight" || n == "b/weight_scale";
        assert_eq!(
            resolve_name("a/weight_scale", &stored, &aliases).as_deref(),
            Some("b/weight_scale")
        );
        let cyclic: HashMap<&str, &str> = [("x", "y"), ("y", "x")].into_iter().collect();
        assert_eq!(resolve_name("x", &|_| false, &cyclic), None);
    }

    #[test]
    fn missing_tensor_is_named() {
        let mut vars = tiny_whisper_variables(4, false);
        vars.retain(|v| v.name != "decoder/layer_0/attention/linear_2/bias");
        let bytes = tiny_model_bytes(&vars, &[]);
        let model = parse_model_bin(&bytes, Path::new("m.bin")).unwrap();
        let err = whisper_tensors(model, Path::new("m.bin")).unwrap_err();
        assert!(
            matches!(&err, WhisperError::MissingTensor { name, .. }
                if name == "decoder/layer_0/attention/linear_2/bias"),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_of_a_small_model_is_an_error() {
        let vars = tiny_whisper_variables(4, true);
        let bytes = tiny_model_bytes(&vars, &[PROJECTION_ALIAS]);
        for cut in 0..bytes.len() {
            let err = parse_model_bin(&bytes[..cut], Path::new("cut.bin")).unwrap_err();
            assert!(
                matches!(err, WhisperError::InvalidModel { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse_model_bin(&longer, Path::new("long.bin")).is_err());
    }

    #[test]
    fn bogus_lengths_are_rejected_before_allocating() {
        // A variable count of 4 billion in a tiny file.
        let mut w = Writer::new("WhisperSpec", 3);
        w.u32(u32::MAX);
        let err = parse_model_bin(&w.0, Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("variable #0"), "{err}");

        // A byte count that disagrees with the shape.
        let mut w = Writer::new("WhisperSpec", 3);
        w.u32(1);
        w.string("encoder/conv1/bias");
        w.0.push(1);
        w.u32(4);
        w.0.push(0);
        w.u32(u32::MAX);
        let err = parse_model_bin(&w.0, Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("encoder/conv1/bias"), "{err}");

        // A shape whose byte size overflows.
        let mut w = Writer::new("WhisperSpec", 3);
        w.u32(1);
        w.string("huge");
        w.0.push(4);
        for _ in 0..4 {
            w.u32(u32::MAX);
        }
        w.0.push(0);
        w.u32(16);
        let err = parse_model_bin(&w.0, Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("huge"), "{err}");

        // Unknown dtype, alias to nowhere, unsupported version.
        let mut w = Writer::new("WhisperSpec", 3);
        w.u32(1);
        w.string("v");
        w.0.push(0);
        w.0.push(9);
        w.u32(1);
        w.0.push(0);
        w.u32(0);
        let err = parse_model_bin(&w.0, Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("dtype id 9"), "{err}");

        let mut w = Writer::new("WhisperSpec", 3);
        w.variables(&[scalar_i16("a", 1)]);
        w.aliases(&[("b", "c")]);
        let err = parse_model_bin(&w.0, Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("alias `b`"), "{err}");

        let err = parse_model_bin(&7u32.to_le_bytes(), Path::new("x.bin")).unwrap_err();
        assert!(err.to_string().contains("binary version 7"), "{err}");
    }

    #[test]
    fn random_bytes_are_an_error() {
        // A small deterministic generator (xorshift) so failures reproduce.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [0, 1, 3, 4, 7, 64, 1000, 100_000] {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let err = parse_model_bin(&bytes, Path::new("random.bin")).unwrap_err();
                assert!(matches!(err, WhisperError::InvalidModel { .. }), "{err}");
            }
        }
        // Plausible header, random body.
        for _ in 0..200 {
            let mut w = Writer::new("WhisperSpec", 3);
            w.0.extend((0..300).map(|_| next() as u8));
            assert!(parse_model_bin(&w.0, Path::new("random.bin")).is_err());
        }
    }

    #[test]
    fn legacy_versions_parse() {
        // Binary version 3: item size and element count instead of dtype id and byte count.
        let mut b = Vec::new();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&5u16.to_le_bytes());
        b.extend_from_slice(b"Spec\0");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"w\0");
        b.push(1);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        let model = parse_model_bin(&b, Path::new("v3.bin")).unwrap();
        assert_eq!(model.variables[0].dtype, RawDtype::F32);
        assert_eq!(model.variables[0].shape, vec![2]);
        assert_eq!(model.variables[0].data.len(), 8);
    }

    // --- the real tiny.en ---------------------------------------------------------------

    pub(crate) fn assets_dir() -> PathBuf {
        std::env::var_os("STENO_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/steno/assets")
            })
    }

    fn real_model(name: &str) -> Option<PathBuf> {
        let path = assets_dir().join("models").join(name).join("model.bin");
        if path.is_file() {
            Some(path)
        } else {
            eprintln!("skipping: {} not found (set STENO_ASSETS)", path.display());
            None
        }
    }

    #[test]
    fn real_tiny_en_truncations_name_the_tensor() {
        let Some(path) = real_model("tiny.en-ct2") else {
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        let full = parse_model_bin(&bytes, &path).unwrap();
        assert_eq!(full.variables.len(), 148);
        for cut in [
            0,
            3,
            10,
            30,
            100,
            1_000,
            1_000_000,
            bytes.len() / 2,
            bytes.len() - 100,
            bytes.len() - 1,
        ] {
            let err = parse_model_bin(&bytes[..cut], &path).unwrap_err();
            let WhisperError::InvalidModel { detail, .. } = &err else {
                panic!("cut at {cut}: {err}");
            };
            if cut >= 60 {
                assert!(
                    detail.contains('`') && detail.contains('/'),
                    "cut at {cut}: {detail}"
                );
            }
            assert!(detail.contains("truncated"), "cut at {cut}: {detail}");
        }
    }

    #[test]
    fn real_tiny_en_maps_to_canonical_names() {
        let Some(path) = real_model("tiny.en-ct2") else {
            return;
        };
        let model = read_model_bin(&path).unwrap();
        assert_eq!(model.spec, "WhisperSpec");
        assert_eq!(model.num_heads(), Some((6, 6)));
        let tensors = whisper_tensors(model, &path).unwrap();
        let expected = expected_shapes(80, 384, 1500, 51864, 448, 4, 4);
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut want: Vec<&String> = expected.keys().collect();
        want.sort();
        assert_eq!(names, want);
        for (name, shape) in &expected {
            assert_eq!(&tensors[name].shape, shape, "{name}");
            assert_eq!(tensors[name].dtype, HostDtype::F16, "{name}");
            assert_eq!(
                tensors[name].data.len(),
                shape.iter().product::<usize>() * 2,
                "{name}"
            );
        }
        // The key part of the fused bias was zero, and layer norms look like layer norms.
        let gamma = tensors["encoder.ln_post.weight"].to_f32_vec();
        assert!(gamma.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn real_base_maps_to_canonical_names() {
        let Some(path) = real_model("base-ct2") else {
            return;
        };
        let model = read_model_bin(&path).unwrap();
        assert_eq!(model.num_heads(), Some((8, 8)));
        let tensors = whisper_tensors(model, &path).unwrap();
        let expected = expected_shapes(80, 512, 1500, 51865, 448, 6, 6);
        assert_eq!(tensors.len(), expected.len());
        for (name, shape) in &expected {
            assert_eq!(&tensors[name].shape, shape, "{name}");
        }
    }

    /// Every canonical tensor of an OpenAI Whisper model and its shape (conv weights as
    /// `[out, in, kernel]`).
    pub(crate) fn expected_shapes(
        mels: usize,
        state: usize,
        audio_ctx: usize,
        vocab: usize,
        text_ctx: usize,
        audio_layers: usize,
        text_layers: usize,
    ) -> BTreeMap<String, Vec<usize>> {
        let s = state;
        let mut m = BTreeMap::new();
        let mut add = |name: String, shape: &[usize]| {
            m.insert(name, shape.to_vec());
        };
        add("encoder.conv1.weight".into(), &[s, mels, 3]);
        add("encoder.conv1.bias".into(), &[s]);
        add("encoder.conv2.weight".into(), &[s, s, 3]);
        add("encoder.conv2.bias".into(), &[s]);
        add("encoder.positional_embedding".into(), &[audio_ctx, s]);
        add("encoder.ln_post.weight".into(), &[s]);
        add("encoder.ln_post.bias".into(), &[s]);
        add("decoder.token_embedding.weight".into(), &[vocab, s]);
        add("decoder.positional_embedding".into(), &[text_ctx, s]);
        add("decoder.ln.weight".into(), &[s]);
        add("decoder.ln.bias".into(), &[s]);
        let mut block = |o: String, cross: bool| {
            let mut attns = vec!["attn"];
            let mut norms = vec!["attn_ln", "mlp_ln"];
            if cross {
                attns.push("cross_attn");
                norms.push("cross_attn_ln");
            }
            for a in attns {
                for p in ["query", "key", "value", "out"] {
                    add(format!("{o}.{a}.{p}.weight"), &[s, s]);
                    if p != "key" {
                        add(format!("{o}.{a}.{p}.bias"), &[s]);
                    }
                }
            }
            for n in norms {
                add(format!("{o}.{n}.weight"), &[s]);
                add(format!("{o}.{n}.bias"), &[s]);
            }
            add(format!("{o}.mlp.0.weight"), &[4 * s, s]);
            add(format!("{o}.mlp.0.bias"), &[4 * s]);
            add(format!("{o}.mlp.2.weight"), &[s, 4 * s]);
            add(format!("{o}.mlp.2.bias"), &[s]);
        };
        for i in 0..audio_layers {
            block(format!("encoder.blocks.{i}"), false);
        }
        for i in 0..text_layers {
            block(format!("decoder.blocks.{i}"), true);
        }
        m
    }
}
