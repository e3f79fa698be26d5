//! The one validated configuration: built-in defaults (`config/default.toml`,
//! embedded) → `--config FILE` → `STENO_<KEY>` environment → command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The defaults, every key documented.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The id the embedded default model (the pinned tiny.en) is served under; a model
/// set with `models.model` is served under its own name unless `models.model_id`
/// says otherwise (see [`steno_whisper::hub::model_id`]).
pub const DEFAULT_MODEL_ID: &str = "whisper-tiny.en";

/// Deprecated keys still accepted, as `(section, old key, new key)`: in a file, as
/// `STENO_<OLD KEY>` and as flags (`steno serve --help` lists none of them). The new
/// key wins where both are given.
pub const ALIASES: &[(&str, &str, &str)] = &[("engine", "queue_capacity", "max_jobs")];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub engine: EngineSection,
    pub models: ModelsConfig,
    pub realtime: RealtimeConfig,
    pub speakers: SpeakersConfig,
    pub decoding: DecodingConfig,
}

/// How windows are decoded (`[decoding]`): the candidates a window gets, each a row of
/// the batch ([`steno_whisper::beam`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// Beams of the temperature-0 attempt for requests that name no `beam_size`; 1 greedy.
    pub beam_size: usize,
    /// Rows sampled at each fallback temperature, the best-ranked kept; 1 samples one.
    pub best_of: usize,
    /// Decoder steps compiled over static caches ([`steno_whisper::decoding::StepKind`]).
    pub compiled_step: CompiledStep,
}

/// `decoding.compiled_step` (and `steno transcribe --compiled-step`): `auto` is the
/// measured winner of the device (`StepKind::default_for_device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CompiledStep {
    #[default]
    Auto,
    On,
    Off,
}

impl CompiledStep {
    /// Applies it to the process ([`steno_whisper::decoding::set_compiled_step`]).
    pub fn apply(self) {
        steno_whisper::decoding::set_compiled_step(match self {
            CompiledStep::Auto => None,
            CompiledStep::On => Some(true),
            CompiledStep::Off => Some(false),
        });
    }
}

/// Diarization (`steno-speaker`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakersConfig {
    /// Resemblyzer's `pretrained.pt`; empty: the pinned one of the project's assets
    /// ([`embedded_speaker_encoder`]).
    pub encoder: String,
}

impl SpeakersConfig {
    /// The voice encoder's file.
    pub fn encoder_path(&self) -> PathBuf {
        match self.encoder.trim() {
            "" => embedded_speaker_encoder(),
            path => PathBuf::from(path),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub api_keys: Vec<String>,
    /// Serve a non-loopback host without API keys ([`ServerConfig::check_exposure`]).
    pub allow_unauthenticated: bool,
    pub public_health: bool,
    pub log_format: LogFormat,
    pub max_concurrent_requests: usize,
    pub drain_seconds: u64,
    /// From a connection's first byte (or its accept) to a whole request head.
    pub header_read_timeout_seconds: u64,
    /// A keep-alive connection waiting for its next request.
    pub idle_timeout_seconds: u64,
    /// Open connections; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Uploads being read at once (they hold no transcription permit); past it, 429.
    pub max_uploads_in_progress: usize,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_upload_bytes: usize,
    pub max_audio_seconds: f64,
    pub request_timeout_seconds: f64,
    pub request_timeout_per_audio_second: f64,
    /// An upload may take this long plus its size / `upload_min_bytes_per_second`.
    pub upload_grace_seconds: u64,
    pub upload_min_bytes_per_second: u64,
    /// Decoded samples (4 bytes each) all requests hold together; past it, 429.
    pub max_audio_bytes_in_flight: usize,
    /// Address space each decoder child may map (`RLIMIT_AS`); past it, that upload 400.
    pub decoder_memory_bytes: u64,
    /// CPU time each decoder child may use (`RLIMIT_CPU`); past it, that upload 413.
    pub decoder_cpu_seconds: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub max_batch_rows: usize,
    /// Jobs admitted to the worker (queued or being transcribed) before 429
    /// (`engine.max_jobs`; deprecated alias `engine.queue_capacity`).
    pub max_jobs: usize,
    pub mlx_cache_limit_bytes: usize,
    pub cpu_lanes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub model_id: String,
    pub model: String,
    pub aliases: Vec<String>,
    /// Names of the default model that also turn diarization on (OpenAI's
    /// `gpt-4o-transcribe-diarize`), with that model's refusals.
    pub diarize_aliases: Vec<String>,
    pub idle_unload_seconds: u64,
    pub max_model_bytes: u64,
    pub extra: BTreeMap<String, String>,
}

/// Live transcription sessions (`GET /v1/realtime`, `crate::realtime`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Sessions open at once; past it a new one gets an `error` event and a close.
    pub max_sessions: usize,
    /// A session without a client event this long is closed.
    pub session_idle_timeout_seconds: u64,
    /// How often a turn in progress is re-transcribed for its interim text.
    pub interim_interval_ms: u64,
    /// Longest turn, in seconds of audio.
    pub max_turn_seconds: f64,
    /// Server events queued for a client that does not read; past it, the close.
    pub send_buffer_events: usize,
    /// Lifetime of a minted client secret when its request names none.
    pub client_secret_ttl_seconds: u64,
    /// Minted client secrets held at once.
    pub max_client_secrets: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(
        "refusing to serve {host} without API keys: set server.api_keys (STENO_API_KEYS, \
         --api-key), listen on a loopback address (server.host = \"127.0.0.1\"), or set \
         server.allow_unauthenticated = true to serve the network without authentication"
    )]
    Unauthenticated { host: String },
}

/// A `section.key = value` override from the environment or a flag.
pub type Override = (String, toml::Value);

impl Config {
    /// Layers the defaults, `file`, the `STENO_*` variables in `env` and `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Vec<Override>,
    ) -> Result<Self, ConfigError> {
        let defaults = defaults()?;
        // `models.model_id` comes from the layers only: without it, the id follows
        // the model (`steno_whisper::hub::model_id`).
        let mut merged = defaults.clone();
        if let Some(toml::Value::Table(models)) = merged.get_mut("models") {
            models.remove("model_id");
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            let mut layer = parse(&text, &origin)?;
            rename_aliases(&mut layer, &origin)?;
            merge(&mut merged, layer);
        }
        for (section, key, value) in env_overrides(&defaults, env)? {
            set(&mut merged, &section, &key, value);
        }
        for (path, value) in flags {
            if let Some((section, key)) = path.split_once('.') {
                let key = canonical_key(section, key);
                set(&mut merged, section, key, value);
            }
        }
        let model_id = match lookup(&merged, "models", "model_id") {
            Some(id) => id.clone(),
            None => toml::Value::String(default_model_id(
                lookup(&merged, "models", "model").and_then(toml::Value::as_str),
            )),
        };
        set(&mut merged, "models", "model_id", model_id);
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: "configuration".into(),
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if let Some(key) = self.non_finite_key() {
            return Err(ConfigError::Invalid(format!(
                "{key} must be a finite number"
            )));
        }
        if self.engine.max_batch_rows == 0 {
            return fail("engine.max_batch_rows must be at least 1");
        }
        if self.engine.max_jobs == 0 || self.server.max_concurrent_requests == 0 {
            return fail("engine.max_jobs and server.max_concurrent_requests must be at least 1");
        }
        if self.limits.max_upload_bytes == 0 || self.limits.max_audio_seconds <= 0.0 {
            return fail("limits.max_upload_bytes and limits.max_audio_seconds must be positive");
        }
        if self.limits.request_timeout_seconds <= 0.0
            || self.limits.request_timeout_per_audio_second < 0.0
        {
            return fail("limits.request_timeout_* must be positive");
        }
        if self.server.header_read_timeout_seconds == 0
            || self.server.idle_timeout_seconds == 0
            || self.server.max_connections == 0
            || self.server.max_uploads_in_progress == 0
        {
            return fail("server.header_read_timeout_seconds, idle_timeout_seconds, max_connections and max_uploads_in_progress must be at least 1");
        }
        if self.limits.upload_min_bytes_per_second == 0 {
            return fail("limits.upload_min_bytes_per_second must be at least 1");
        }
        if self.limits.max_audio_bytes_in_flight == 0 {
            return fail("limits.max_audio_bytes_in_flight must be at least 1");
        }
        if self.limits.decoder_memory_bytes == 0 || self.limits.decoder_cpu_seconds <= 0.0 {
            return fail(
                "limits.decoder_memory_bytes and limits.decoder_cpu_seconds must be positive",
            );
        }
        let live = &self.realtime;
        if live.max_sessions == 0
            || live.session_idle_timeout_seconds == 0
            || live.interim_interval_ms == 0
            || live.send_buffer_events < 8
            || live.client_secret_ttl_seconds == 0
            || live.max_client_secrets == 0
            || live.max_turn_seconds < 1.0
        {
            return fail(
                "realtime.* must be at least 1 (send_buffer_events at least 8, max_turn_seconds at least 1.0)",
            );
        }
        let most = steno_whisper::beam::MAX_CANDIDATES.min(self.engine.max_batch_rows);
        if ![self.decoding.beam_size, self.decoding.best_of]
            .iter()
            .all(|n| (1..=most).contains(n))
        {
            return Err(ConfigError::Invalid(format!(
                "decoding.beam_size and decoding.best_of must be 1 to {most} (at most {} and engine.max_batch_rows)",
                steno_whisper::beam::MAX_CANDIDATES
            )));
        }
        if self.server.api_keys.iter().any(|k| k.trim().is_empty()) {
            return fail("server.api_keys must not contain empty keys");
        }
        if self.models.model_id.trim().is_empty() {
            return fail("models.model_id must not be empty");
        }
        let mut ids: Vec<&str> = vec![self.models.model_id.as_str()];
        ids.extend(self.models.aliases.iter().map(String::as_str));
        ids.extend(self.models.diarize_aliases.iter().map(String::as_str));
        ids.extend(self.models.extra.keys().map(String::as_str));
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return fail("model ids and aliases must be unique");
        }
        Ok(())
    }

    /// The first number key (`section.key`) holding NaN or an infinity (TOML's `nan`,
    /// `inf`, or the same through `STENO_*`), which would otherwise pass the range checks
    /// and panic later (`Duration::from_secs_f64`). Every float key, present or future,
    /// is checked.
    fn non_finite_key(&self) -> Option<String> {
        let toml::Value::Table(sections) = toml::Value::try_from(self).ok()? else {
            return None;
        };
        sections.iter().find_map(|(section, keys)| {
            let keys = keys.as_table()?;
            keys.iter()
                .find(|(_, v)| v.as_float().is_some_and(|f| !f.is_finite()))
                .map(|(key, _)| format!("{section}.{key}"))
        })
    }

    /// The effective configuration as TOML, API keys redacted, for the start-up log.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        shown.server.api_keys = shown
            .server
            .api_keys
            .iter()
            .map(|_| "<redacted>".into())
            .collect();
        toml::to_string(&shown).unwrap_or_default()
    }

    /// The configured id a request's `model` names (an alias resolves to the default).
    pub fn resolve_model(&self, requested: &str) -> Option<&str> {
        let m = &self.models;
        let alias = m
            .aliases
            .iter()
            .chain(&m.diarize_aliases)
            .any(|a| a == requested);
        if requested == m.model_id || alias {
            Some(&m.model_id)
        } else {
            m.extra.get_key_value(requested).map(|(id, _)| id.as_str())
        }
    }

    /// Whether `requested` names a diarizing alias (`models.diarize_aliases`).
    pub fn diarizes(&self, requested: &str) -> bool {
        self.models.diarize_aliases.iter().any(|a| a == requested)
    }

    /// Every id clients may use, the default's first.
    pub fn model_ids(&self) -> Vec<String> {
        let m = &self.models;
        std::iter::once(&m.model_id)
            .chain(&m.aliases)
            .chain(&m.diarize_aliases)
            .chain(m.extra.keys())
            .cloned()
            .collect()
    }

    /// Where a configured model id comes from (`None`: the default's empty source).
    pub fn model_source(&self, id: &str) -> Option<&str> {
        if id == self.models.model_id {
            Some(self.models.model.as_str()).filter(|s| !s.is_empty())
        } else {
            self.models.extra.get(id).map(String::as_str)
        }
    }
}

impl LimitsConfig {
    /// When the engine gives up on a job of `audio_seconds`: a fixed allowance plus
    /// some per second of audio.
    pub fn deadline(&self, audio_seconds: f64) -> std::time::Instant {
        let timeout =
            self.request_timeout_seconds + self.request_timeout_per_audio_second * audio_seconds;
        std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout)
    }
}

impl ServerConfig {
    /// Refuses a non-loopback `host` with no API keys unless `allow_unauthenticated`:
    /// secure by default, a server is never opened to the network without
    /// authentication by mistake.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.api_keys.is_empty() && !self.allow_unauthenticated && !is_loopback(&self.host) {
            return Err(ConfigError::Unauthenticated {
                host: self.host.clone(),
            });
        }
        Ok(())
    }
}

/// 127.0.0.0/8, ::1 (also as `[::1]` or IPv4-mapped) and `localhost`. Any other name
/// counts as the network: what it resolves to is not known here.
fn is_loopback(host: &str) -> bool {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The embedded defaults, with the upload limit from the audio crate (the one
/// definition of it; config/default.toml shows the same number).
fn defaults() -> Result<toml::Table, ConfigError> {
    let mut defaults = parse(DEFAULT_TOML, "built-in defaults")?;
    let max_upload = i64::try_from(steno_audio::MAX_UPLOAD_BYTES).unwrap_or(i64::MAX);
    set(
        &mut defaults,
        "limits",
        "max_upload_bytes",
        toml::Value::Integer(max_upload),
    );
    Ok(defaults)
}

/// The pinned tiny.en of the project's assets, served when `models.model` is empty:
/// `$STENO_ASSETS/models/tiny.en-ct2` (`~/.cache/steno/assets` without the variable,
/// where `make setup` puts it).
pub fn embedded_model_dir() -> PathBuf {
    assets_dir().join("models/tiny.en-ct2")
}

/// The pinned voice encoder of the project's assets (Resemblyzer's `pretrained.pt`,
/// fetched by `make setup`), which diarization uses.
pub fn embedded_speaker_encoder() -> PathBuf {
    assets_dir().join("models/resemblyzer/pretrained.pt")
}

/// `$STENO_ASSETS`, else `~/.cache/steno/assets`.
fn assets_dir() -> PathBuf {
    std::env::var_os("STENO_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/steno/assets")
        })
}

/// The id a default model from `source` is served under: [`DEFAULT_MODEL_ID`] for
/// the embedded one (no source, or its very directory), else the model's own name.
fn default_model_id(source: Option<&str>) -> String {
    let Some(source) = source.map(str::trim).filter(|s| !s.is_empty()) else {
        return DEFAULT_MODEL_ID.to_string();
    };
    let same_dir = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok().as_ref() == Some(&a))
    };
    if same_dir(Path::new(source), &embedded_model_dir()) {
        return DEFAULT_MODEL_ID.to_string();
    }
    steno_whisper::hub::model_id(source)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MODEL_ID.to_string())
}

/// The key `key` of `section` stands for: itself, or the new key of a deprecated
/// alias.
fn canonical_key<'a>(section: &str, key: &'a str) -> &'a str {
    ALIASES
        .iter()
        .find(|(s, old, _)| *s == section && *old == key)
        .map_or(key, |(_, _, new)| new)
}

/// Renames deprecated keys of one layer to their new names; both in one layer is an
/// error.
fn rename_aliases(layer: &mut toml::Table, origin: &str) -> Result<(), ConfigError> {
    for (section, old, new) in ALIASES {
        let Some(toml::Value::Table(table)) = layer.get_mut(*section) else {
            continue;
        };
        if let Some(value) = table.remove(*old) {
            if table.contains_key(*new) {
                return Err(ConfigError::Parse {
                    origin: origin.to_string(),
                    message: format!(
                        "{section}.{old} is the deprecated name of {section}.{new}; set only {new}"
                    ),
                });
            }
            table.insert((*new).to_string(), value);
        }
    }
    Ok(())
}

fn lookup<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a toml::Value> {
    table.get(section)?.as_table()?.get(key)
}

/// The `STENO_*` variables of `env` as `(section, key, value)`, deprecated names
/// first so that the new name wins where both are set.
fn env_overrides(
    defaults: &toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String, toml::Value)>, ConfigError> {
    let by_env_name = env_keys(defaults);
    let aliases: BTreeMap<String, (&str, &str)> = ALIASES
        .iter()
        .map(|(section, old, new)| (format!("STENO_{}", old.to_uppercase()), (*section, *new)))
        .collect();
    let mut found = Vec::new();
    for (name, raw) in env {
        let (section, key, default, deprecated) = if let Some((s, k, d)) = by_env_name.get(&name) {
            (s.as_str(), k.as_str(), d, false)
        } else if let Some((s, k)) = aliases.get(&name) {
            let Some(default) = lookup(defaults, s, k) else {
                continue;
            };
            (*s, *k, default, true)
        } else {
            continue;
        };
        let value = env_value(default, &raw).map_err(|message| ConfigError::Parse {
            origin: format!("environment variable {name}"),
            message,
        })?;
        found.push((deprecated, (section.to_string(), key.to_string(), value)));
    }
    // Stable: among variables of one kind, the environment's order stays.
    found.sort_by_key(|(deprecated, _)| !deprecated);
    Ok(found.into_iter().map(|(_, o)| o).collect())
}

fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.message().to_string(),
    })
}

/// Tables merge key by key; any other value replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

/// `STENO_<KEY>` → (section, key, default value) for every scalar or list key.
fn env_keys(defaults: &toml::Table) -> BTreeMap<String, (String, String, toml::Value)> {
    let mut keys = BTreeMap::new();
    for (section, table) in defaults {
        if let toml::Value::Table(table) = table {
            for (key, value) in table {
                if !value.is_table() {
                    let name = format!("STENO_{}", key.to_uppercase());
                    keys.insert(name, (section.clone(), key.clone(), value.clone()));
                }
            }
        }
    }
    keys
}

/// Parses an environment value as the type of the key's default.
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.parse()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {raw:?}")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_defaults_load_and_every_key_has_a_unique_env_name() {
        let config = Config::load(None, env(&[]), vec![]).unwrap();
        assert_eq!(config.server.port, 8000);
        assert_eq!(config.limits.max_upload_bytes, 26_214_400);
        let defaults = parse(DEFAULT_TOML, "defaults").unwrap();
        let scalar_keys: usize = defaults
            .values()
            .filter_map(toml::Value::as_table)
            .map(|t| t.values().filter(|v| !v.is_table()).count())
            .sum();
        assert_eq!(env_keys(&defaults).len(), scalar_keys, "env names collide");
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steno.toml");
        std::fs::write(
            &file,
            "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[engine]\nmax_batch_rows = 4\n[models.extra]\nbase = \"/m/base\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("STENO_PORT", "9100"),
                ("STENO_API_KEYS", "sk-a, sk-b"),
                ("OTHER", "x"),
            ]),
            vec![("server.port".into(), toml::Value::Integer(9200))],
        )
        .unwrap();
        assert_eq!(config.server.port, 9200, "flags win");
        assert_eq!(config.server.host, "0.0.0.0", "the file overrides defaults");
        assert_eq!(config.engine.max_batch_rows, 4);
        assert_eq!(config.engine.max_jobs, 64, "untouched keys keep defaults");
        assert_eq!(config.server.api_keys, ["sk-a", "sk-b"]);
        assert_eq!(config.resolve_model("whisper-1"), Some("whisper-tiny.en"));
        for openai in [
            "gpt-4o-transcribe",
            "gpt-4o-mini-transcribe",
            "gpt-transcribe",
        ] {
            assert_eq!(config.resolve_model(openai), Some("whisper-tiny.en"));
            assert!(!config.diarizes(openai));
        }
        let diarize = "gpt-4o-transcribe-diarize";
        assert_eq!(config.resolve_model(diarize), Some("whisper-tiny.en"));
        assert!(config.diarizes(diarize) && !config.diarizes("whisper-1"));
        assert!(config.model_ids().iter().any(|id| id == diarize));
        assert_eq!(config.resolve_model("base"), Some("base"));
        assert_eq!(config.model_source("base"), Some("/m/base"));
        assert_eq!(config.resolve_model("nope"), None);
        assert!(!config.redacted().contains("sk-a"));
    }

    #[test]
    fn decoder_limits_must_be_positive() {
        let defaults = Config::load(None, env(&[]), vec![]).unwrap();
        assert_eq!(defaults.limits.decoder_memory_bytes, 2 << 30);
        assert_eq!(defaults.limits.decoder_cpu_seconds, 60.0);
        for (key, value) in [
            ("STENO_DECODER_MEMORY_BYTES", "0"),
            ("STENO_DECODER_CPU_SECONDS", "0"),
            ("STENO_DECODER_CPU_SECONDS", "-1.5"),
        ] {
            let e = Config::load(None, env(&[(key, value)]), vec![]).unwrap_err();
            assert!(
                e.to_string().contains("limits.decoder_"),
                "{key}={value}: {e}"
            );
        }
        let e = Config::load(None, env(&[("STENO_DECODER_CPU_SECONDS", "inf")]), vec![]);
        assert!(e.unwrap_err().to_string().contains("decoder_cpu_seconds"));
    }

    #[test]
    fn compiled_step_is_auto_unless_set() {
        let defaults = Config::load(None, env(&[]), vec![]).unwrap();
        assert_eq!(defaults.decoding.compiled_step, CompiledStep::Auto);
        let on = Config::load(None, env(&[("STENO_COMPILED_STEP", "on")]), vec![]).unwrap();
        assert_eq!(on.decoding.compiled_step, CompiledStep::On);
        assert!(Config::load(None, env(&[("STENO_COMPILED_STEP", "fast")]), vec![]).is_err());
    }

    #[test]
    fn beams_fit_the_batch() {
        let defaults = Config::load(None, env(&[]), vec![]).unwrap();
        assert_eq!(
            (defaults.decoding.beam_size, defaults.decoding.best_of),
            (1, 1)
        );
        let five = Config::load(None, env(&[("STENO_BEAM_SIZE", "5")]), vec![]).unwrap();
        assert_eq!(five.decoding.beam_size, 5);
        for pairs in [
            &[("STENO_BEAM_SIZE", "0")][..],
            &[("STENO_BEST_OF", "17")],
            &[("STENO_BEAM_SIZE", "5"), ("STENO_MAX_BATCH_ROWS", "4")],
        ] {
            let e = Config::load(None, env(pairs), vec![]).unwrap_err();
            assert!(
                e.to_string().contains("decoding.beam_size"),
                "{pairs:?}: {e}"
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steno.toml");
        std::fs::write(&file, "[server]\nprot = 9000\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
        let e = Config::load(None, env(&[("STENO_PORT", "eighty")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("STENO_PORT"), "{e}");
        let e = Config::load(
            None,
            env(&[]),
            vec![("engine.max_batch_rows".into(), toml::Value::Integer(0))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_batch_rows"), "{e}");
    }

    #[test]
    fn the_upload_limit_is_the_audio_crates_and_default_toml_shows_it() {
        let config = Config::load(None, env(&[]), vec![]).unwrap();
        assert_eq!(
            config.limits.max_upload_bytes,
            steno_audio::MAX_UPLOAD_BYTES
        );
        let shown = parse(DEFAULT_TOML, "defaults").unwrap();
        assert_eq!(
            lookup(&shown, "limits", "max_upload_bytes").and_then(toml::Value::as_integer),
            i64::try_from(steno_audio::MAX_UPLOAD_BYTES).ok(),
            "config/default.toml documents the same number"
        );
    }

    #[test]
    fn max_jobs_keeps_its_deprecated_names() {
        let int = |n| toml::Value::Integer(n);
        let load = |pairs: &[(&str, &str)], flags: Vec<Override>| {
            Config::load(None, env(pairs), flags)
                .unwrap()
                .engine
                .max_jobs
        };
        assert_eq!(load(&[], vec![]), 64);
        assert_eq!(load(&[("STENO_QUEUE_CAPACITY", "7")], vec![]), 7);
        assert_eq!(load(&[("STENO_MAX_JOBS", "8")], vec![]), 8);
        assert_eq!(
            load(
                &[("STENO_MAX_JOBS", "8"), ("STENO_QUEUE_CAPACITY", "7")],
                vec![]
            ),
            8,
            "the new name wins"
        );
        assert_eq!(
            load(&[], vec![("engine.queue_capacity".into(), int(9))]),
            9,
            "a flag by the old key"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steno.toml");
        std::fs::write(&file, "[engine]\nqueue_capacity = 5\n").unwrap();
        let config = Config::load(Some(&file), env(&[]), vec![]).unwrap();
        assert_eq!(config.engine.max_jobs, 5, "the old key in a file");
        std::fs::write(&file, "[engine]\nqueue_capacity = 5\nmax_jobs = 6\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(e.to_string().contains("set only max_jobs"), "{e}");
        let e = Config::load(None, env(&[("STENO_QUEUE_CAPACITY", "0")]), vec![]).unwrap_err();
        assert!(
            e.to_string().contains("engine.max_jobs"),
            "validated as before: {e}"
        );
    }

    #[test]
    fn the_served_id_follows_the_model_unless_configured() {
        let models = |pairs: &[(&str, &str)], flags: Vec<Override>| {
            Config::load(None, env(pairs), flags)
                .unwrap()
                .models
                .model_id
        };
        let model = |source: &str| {
            vec![(
                "models.model".to_string(),
                toml::Value::String(source.into()),
            )]
        };
        assert_eq!(
            models(&[], vec![]),
            "whisper-tiny.en",
            "the embedded default"
        );
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("whisper-base");
        std::fs::create_dir(&base).unwrap();
        let with_slash = format!("{}/", base.display());
        assert_eq!(
            models(&[], model(&with_slash)),
            "whisper-base",
            "a directory's name"
        );
        assert_eq!(
            models(&[], model("mlx-community/whisper-large-v3-turbo@main")),
            "whisper-large-v3-turbo",
            "a repo's name, without organisation or revision"
        );
        assert_eq!(
            models(&[("STENO_MODEL", "openai/whisper-base")], vec![]),
            "whisper-base"
        );
        let mut explicit = model(&with_slash);
        explicit.push(("models.model_id".into(), toml::Value::String("mine".into())));
        assert_eq!(models(&[], explicit), "mine", "a configured id wins");
        assert_eq!(
            models(
                &[("STENO_MODEL_ID", "whisper-tiny.en")],
                model("openai/whisper-base")
            ),
            "whisper-tiny.en",
            "even when it is the default's"
        );
        let inside = base.join(".");
        assert_eq!(
            models(&[], model(&inside.display().to_string())),
            "whisper-base"
        );
    }

    #[test]
    fn the_embedded_models_own_directory_keeps_its_id() {
        let dir = embedded_model_dir();
        if !dir.is_dir() {
            eprintln!("skipped: no {} (make setup)", dir.display());
            return;
        }
        let flags = vec![(
            "models.model".to_string(),
            toml::Value::String(dir.display().to_string()),
        )];
        let config = Config::load(None, env(&[]), flags).unwrap();
        assert_eq!(config.models.model_id, DEFAULT_MODEL_ID);
    }

    #[test]
    fn every_float_key_must_be_finite() {
        let config = Config::load(None, env(&[]), vec![]).unwrap();
        let toml::Value::Table(defaults) = toml::Value::try_from(&config).unwrap() else {
            panic!("a configuration is a table");
        };
        let float_keys: Vec<(String, String)> = defaults
            .iter()
            .filter_map(|(section, keys)| Some((section, keys.as_table()?)))
            .flat_map(|(section, keys)| {
                keys.iter()
                    .filter(|(_, v)| v.is_float())
                    .map(move |(key, _)| (section.clone(), key.clone()))
            })
            .collect();
        assert!(float_keys.len() >= 3, "{float_keys:?}");
        for (section, key) in &float_keys {
            let name = format!("{section}.{key}");
            for raw in ["nan", "inf", "-inf", "NaN", "infinity"] {
                let variable = format!("STENO_{}", key.to_uppercase());
                let e = Config::load(None, env(&[(&variable, raw)]), vec![]).unwrap_err();
                assert!(e.to_string().contains(&name), "{variable}={raw}: {e}");
            }
            let flag = vec![(name.clone(), toml::Value::Float(f64::NAN))];
            let e = Config::load(None, env(&[]), flag).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid configuration: {name} must be a finite number")
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steno.toml");
        std::fs::write(&file, "[limits]\nrequest_timeout_seconds = nan\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(
            e.to_string().contains("limits.request_timeout_seconds"),
            "{e}"
        );
        std::fs::write(&file, "[limits]\nmax_audio_seconds = inf\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(e.to_string().contains("limits.max_audio_seconds"), "{e}");
    }

    #[test]
    fn the_network_needs_keys_or_an_explicit_opt_out() {
        let server = |host: &str, keys: &[&str], allow: bool| {
            let flags = vec![
                ("server.host".to_string(), toml::Value::String(host.into())),
                (
                    "server.allow_unauthenticated".to_string(),
                    toml::Value::Boolean(allow),
                ),
            ];
            let keys = keys.join(",");
            let pairs = [("STENO_API_KEYS", keys.as_str())];
            Config::load(None, env(&pairs), flags).unwrap().server
        };
        let loopback = [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
            "::ffff:127.0.0.1",
        ];
        for host in loopback {
            assert!(server(host, &[], false).check_exposure().is_ok(), "{host}");
        }
        for host in [
            "0.0.0.0",
            "::",
            "192.168.1.2",
            "10.0.0.1",
            "steno.example.com",
            "localhost.evil.com",
            "",
        ] {
            let e = server(host, &[], false).check_exposure().unwrap_err();
            let message = e.to_string();
            assert!(
                message.contains("server.allow_unauthenticated")
                    && message.contains("server.api_keys"),
                "{host}: {message}"
            );
            assert!(
                server(host, &["sk-a"], false).check_exposure().is_ok(),
                "{host} with a key"
            );
            assert!(
                server(host, &[], true).check_exposure().is_ok(),
                "{host} allowed"
            );
        }
        let defaults = Config::load(None, env(&[]), vec![]).unwrap().server;
        assert!(!defaults.allow_unauthenticated, "secure by default");
        assert!(
            defaults.check_exposure().is_ok(),
            "the default host is loopback"
        );
        let from_env = Config::load(
            None,
            env(&[("STENO_ALLOW_UNAUTHENTICATED", "true")]),
            vec![],
        );
        assert!(from_env.unwrap().server.allow_unauthenticated);
    }
}
