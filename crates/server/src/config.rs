//! The one validated configuration: built-in defaults (`config/default.toml`,
//! embedded) → `--config FILE` → `STENO_<KEY>` environment → command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The defaults, every key documented.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub engine: EngineSection,
    pub models: ModelsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub api_keys: Vec<String>,
    pub public_health: bool,
    pub log_format: LogFormat,
    pub max_concurrent_requests: usize,
    pub drain_seconds: u64,
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
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub max_batch_rows: usize,
    pub queue_capacity: usize,
    pub mlx_cache_limit_bytes: usize,
    pub cpu_lanes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub model_id: String,
    pub model: String,
    pub aliases: Vec<String>,
    pub idle_unload_seconds: u64,
    pub max_model_bytes: u64,
    pub extra: BTreeMap<String, String>,
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
        let mut merged = parse(DEFAULT_TOML, "built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            merge(&mut merged, parse(&text, &path.display().to_string())?);
        }
        let defaults = parse(DEFAULT_TOML, "built-in defaults")?;
        let by_env_name = env_keys(&defaults);
        for (name, value) in env {
            if let Some((section, key, default)) = by_env_name.get(&name) {
                let value = env_value(default, &value).map_err(|message| ConfigError::Parse {
                    origin: format!("environment variable {name}"),
                    message,
                })?;
                set(&mut merged, section, key, value);
            }
        }
        for (path, value) in flags {
            if let Some((section, key)) = path.split_once('.') {
                set(&mut merged, section, key, value);
            }
        }
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
        if self.engine.max_batch_rows == 0 {
            return fail("engine.max_batch_rows must be at least 1");
        }
        if self.engine.queue_capacity == 0 || self.server.max_concurrent_requests == 0 {
            return fail(
                "engine.queue_capacity and server.max_concurrent_requests must be at least 1",
            );
        }
        if self.limits.max_upload_bytes == 0 || self.limits.max_audio_seconds <= 0.0 {
            return fail("limits.max_upload_bytes and limits.max_audio_seconds must be positive");
        }
        if self.limits.request_timeout_seconds <= 0.0
            || self.limits.request_timeout_per_audio_second < 0.0
        {
            return fail("limits.request_timeout_* must be positive");
        }
        if self.server.api_keys.iter().any(|k| k.trim().is_empty()) {
            return fail("server.api_keys must not contain empty keys");
        }
        if self.models.model_id.trim().is_empty() {
            return fail("models.model_id must not be empty");
        }
        let mut ids: Vec<&str> = vec![self.models.model_id.as_str()];
        ids.extend(self.models.aliases.iter().map(String::as_str));
        ids.extend(self.models.extra.keys().map(String::as_str));
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return fail("model ids and aliases must be unique");
        }
        Ok(())
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
        if requested == m.model_id || m.aliases.iter().any(|a| a == requested) {
            Some(&m.model_id)
        } else {
            m.extra.get_key_value(requested).map(|(id, _)| id.as_str())
        }
    }

    /// Every id clients may use, the default's first.
    pub fn model_ids(&self) -> Vec<String> {
        let m = &self.models;
        std::iter::once(&m.model_id)
            .chain(&m.aliases)
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
        assert_eq!(
            config.engine.queue_capacity, 64,
            "untouched keys keep defaults"
        );
        assert_eq!(config.server.api_keys, ["sk-a", "sk-b"]);
        assert_eq!(config.resolve_model("whisper-1"), Some("whisper-tiny.en"));
        assert_eq!(config.resolve_model("base"), Some("base"));
        assert_eq!(config.model_source("base"), Some("/m/base"));
        assert_eq!(config.resolve_model("nope"), None);
        assert!(!config.redacted().contains("sk-a"));
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
}
