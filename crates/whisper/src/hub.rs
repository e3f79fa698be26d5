//! Model sources: a local directory, or a Hugging Face Hub repo `org/name[@revision]`
//! fetched into (or found in) the Hugging Face cache.
//!
//! The cache is the one the Python `huggingface_hub` uses
//! (`<cache>/models--org--name/{refs,blobs,snapshots}`), so models downloaded by either
//! are shared. Settings come from the usual environment variables (see
//! [`HubOptions::from_env`]); with `HF_HUB_OFFLINE=1` only the cache is read and the
//! network is never touched.
//!
//! Only the files the repo's layout needs are downloaded (see [`Layout::files`]). Repos
//! without a `tokenizer.json` (mlx-community) get the one of the matching
//! `openai/whisper-*` repo.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::config::{read_json, ModelDims};
use crate::error::{Result, WhisperError};
use crate::load::{shard_names, Layout, LoadOptions, CONFIG, HF_SAFETENSORS_INDEX, TOKENIZER};
use crate::Whisper;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory on this machine.
    Local(PathBuf),
    /// A Hugging Face Hub model repo at a revision (branch, tag or commit; `main` by default).
    Hub { repo: String, revision: String },
}

impl ModelSource {
    /// An existing path is local; otherwise `org/name` or `org/name@revision` is a Hub
    /// repo; anything else is a (missing) local path.
    pub fn parse(source: &str) -> Self {
        let path = Path::new(source);
        if path.exists() {
            return ModelSource::Local(path.to_path_buf());
        }
        match parse_repo_id(source) {
            Some((repo, revision)) => ModelSource::Hub { repo, revision },
            None => ModelSource::Local(path.to_path_buf()),
        }
    }
}

/// The id to serve the model from `source` under when none is configured, derived from the
/// model itself: a local directory's own name (`/srv/models/base-ct2/` → `base-ct2`; `.`
/// and `..` name the directory they mean), or a Hub repo's name without its organisation
/// or revision (`openai/whisper-large-v3@main` → `whisper-large-v3`). `None` when the
/// source names nothing (`/`, an empty string).
///
/// Just the name, as OpenAI's ids are (`whisper-1`): clients send the id back in the
/// `model` form field and in `GET /v1/models/{id}`, where a `/` would need escaping, and
/// the organisation and revision tell where the weights came from, not which model answers.
pub fn model_id(source: &str) -> Option<String> {
    ModelSource::parse(source).name()
}

impl ModelSource {
    /// The model's own name: see [`model_id`].
    pub fn name(&self) -> Option<String> {
        let name = match self {
            ModelSource::Hub { repo, .. } => repo.rsplit('/').next().map(str::to_string),
            ModelSource::Local(dir) => {
                // `.` or `..` has no name of its own: take the directory it means.
                let dir = match dir.file_name() {
                    Some(_) => dir.clone(),
                    None => dir.canonicalize().ok()?,
                };
                dir.file_name().map(|n| n.to_string_lossy().into_owned())
            }
        };
        name.filter(|n| !n.is_empty())
    }
}

fn parse_repo_id(source: &str) -> Option<(String, String)> {
    let (id, revision) = match source.split_once('@') {
        Some((id, revision)) if !revision.is_empty() => (id, revision),
        Some(_) => return None,
        None => (source, "main"),
    };
    let (org, name) = id.split_once('/')?;
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && !part.contains("..")
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    (valid(org) && valid(name)).then(|| (id.to_string(), revision.to_string()))
}

/// How to reach the Hub and where its cache is.
#[derive(Clone)]
pub struct HubOptions {
    /// The hub cache (`models--org--name/…` lives here).
    pub cache_dir: PathBuf,
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Use only the cache; never touch the network.
    pub offline: bool,
    /// Hub URL (`https://huggingface.co`, or a mirror).
    pub endpoint: String,
    /// Draw download progress bars on stderr.
    pub progress: bool,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("progress", &self.progress)
            .finish()
    }
}

impl HubOptions {
    /// From the environment, as `huggingface_hub` reads it:
    /// * cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, where
    ///   `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`;
    /// * token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file
    ///   `HF_TOKEN_PATH` or `$HF_HOME/token` that `huggingface-cli login` writes;
    /// * `HF_HUB_OFFLINE=1` (or `true`/`yes`/`on`): cache only;
    /// * `HF_ENDPOINT`: another hub URL.
    pub fn from_env() -> Self {
        Self::from_vars(|key| std::env::var(key).ok())
    }

    /// [`Self::from_env`] with the variables looked up by `var` (for tests).
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_default();
        let expand = |value: String| match value.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(value),
        };
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(expand)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self {
            cache_dir,
            token,
            offline,
            endpoint,
            progress: false,
        }
    }

    /// Offline access to the cache at `cache_dir` and nothing else.
    pub fn offline(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            token: None,
            offline: true,
            endpoint: DEFAULT_ENDPOINT.to_string(),
            progress: false,
        }
    }

    fn api(&self) -> Result<Api> {
        ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()))
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(self.progress)
            .with_user_agent("steno", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| WhisperError::InvalidModel {
                path: self.cache_dir.clone(),
                detail: format!("cannot set up the Hugging Face client: {e}"),
            })
    }
}

/// A model source made local: a directory to hand to [`Whisper::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model directory (for a Hub repo, its snapshot in the cache).
    pub dir: PathBuf,
    pub layout: Layout,
    /// `tokenizer.json` from elsewhere when `dir` has none (an `openai/whisper-*` repo's).
    pub tokenizer: Option<PathBuf>,
    /// The Hub repo, revision and commit, for Hub sources.
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
}

impl ResolvedModel {
    /// `options` with the fetched tokenizer filled in unless one was given.
    fn load_options(&self, options: &LoadOptions) -> LoadOptions {
        LoadOptions {
            dtype: options.dtype,
            tokenizer: options.tokenizer.clone().or_else(|| self.tokenizer.clone()),
        }
    }
}

/// Resolves a local directory or Hub repo id, downloading what is missing (unless
/// offline), including a tokenizer for repos without one. A local directory without a
/// `tokenizer.json` gets one the same way (from the cache, else the Hub unless offline);
/// [`Whisper::load_source`] skips that when `LoadOptions::tokenizer` is given.
pub fn resolve(source: &str, hub: &HubOptions) -> Result<ResolvedModel> {
    resolve_with(source, hub, true)
}

impl Whisper {
    /// Loads a model from a local directory or a Hub repo id (see [`resolve`]).
    pub fn load_source(source: &str, hub: &HubOptions, options: &LoadOptions) -> Result<Self> {
        let resolved = resolve_with(source, hub, options.tokenizer.is_none())?;
        tracing::info!(
            source,
            dir = %resolved.dir.display(),
            layout = ?resolved.layout,
            commit = resolved.commit.as_deref().unwrap_or("-"),
            "loading Whisper model"
        );
        Whisper::load(&resolved.dir, &resolved.load_options(options))
    }
}

fn resolve_with(source: &str, hub: &HubOptions, want_tokenizer: bool) -> Result<ResolvedModel> {
    let (resolved, name) = match ModelSource::parse(source) {
        ModelSource::Local(dir) => {
            if !dir.is_dir() {
                return Err(WhisperError::InvalidModel {
                    path: dir,
                    detail: "no such model directory (and not a Hugging Face repo id \
                             `org/name[@revision]`)"
                        .into(),
                });
            }
            let layout = Layout::detect(&dir)?;
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let resolved = ResolvedModel {
                dir,
                layout,
                tokenizer: None,
                repo: None,
                revision: None,
                commit: None,
            };
            (resolved, name)
        }
        ModelSource::Hub { repo, revision } => {
            let snapshot = fetch_repo(hub, &repo, &revision)?;
            let name = repo.rsplit('/').next().unwrap_or_default().to_string();
            let resolved = ResolvedModel {
                dir: snapshot.dir,
                layout: snapshot.layout,
                tokenizer: None,
                repo: Some(repo),
                revision: Some(revision),
                commit: Some(snapshot.commit),
            };
            (resolved, name)
        }
    };
    if !want_tokenizer || resolved.dir.join(TOKENIZER).is_file() {
        return Ok(resolved);
    }
    let n_vocab = ModelDims::from_config_file(&resolved.dir.join(CONFIG))
        .ok()
        .map(|d| d.n_vocab);
    let Some(openai) = openai_repo_for(&name, n_vocab) else {
        return Err(WhisperError::Tokenizer(format!(
            "{} has no {TOKENIZER} and the matching openai/whisper-* repo cannot be told \
             from `{name}`; pass a tokenizer.json",
            resolved.dir.display()
        )));
    };
    let tokenizer = fetch_file(hub, &openai, "main", TOKENIZER).map_err(|e| {
        WhisperError::Tokenizer(format!(
            "{} has no {TOKENIZER}, and {openai}'s is unavailable: {e}",
            resolved.dir.display()
        ))
    })?;
    Ok(ResolvedModel {
        tokenizer: Some(tokenizer),
        ..resolved
    })
}

/// The `openai/whisper-*` repo whose tokenizer fits a model named `name` (a repo or
/// directory name such as `whisper-tiny.en-mlx`) with vocabulary size `n_vocab`. The
/// name decides when it is consistent with the vocabulary; otherwise the vocabulary
/// alone (51864: English-only, 51865: multilingual, 51866: large-v3 and turbo).
fn openai_repo_for(name: &str, n_vocab: Option<usize>) -> Option<String> {
    const SIZES: &[(&str, &str)] = &[
        ("large-v3-turbo", "large-v3-turbo"),
        ("large-v3", "large-v3"),
        ("large-v2", "large-v2"),
        ("large-v1", "large-v1"),
        ("large", "large-v2"),
        ("turbo", "large-v3-turbo"),
        ("medium.en", "medium.en"),
        ("medium", "medium"),
        ("small.en", "small.en"),
        ("small", "small"),
        ("base.en", "base.en"),
        ("base", "base"),
        ("tiny.en", "tiny.en"),
        ("tiny", "tiny"),
    ];
    let vocab_of = |size: &str| {
        if size.ends_with(".en") {
            51864
        } else if size.starts_with("large-v3") {
            51866
        } else {
            51865
        }
    };
    let lower = name.to_ascii_lowercase();
    let from_name = lower.rsplit_once("whisper").and_then(|(_, tail)| {
        let tail = tail.trim_start_matches(['-', '_']);
        SIZES
            .iter()
            .find(|(prefix, _)| tail.starts_with(prefix))
            .map(|&(_, size)| size)
    });
    // `whisper-large` is v3 in MLX's conversions and v2 on the Hub: the vocabulary says.
    let from_name = match (from_name, n_vocab) {
        (Some("large-v2"), Some(51866)) if !lower.contains("large-v2") => Some("large-v3"),
        (size, _) => size,
    };
    let size = match (from_name, n_vocab) {
        (Some(size), Some(n)) if vocab_of(size) == n => size,
        (Some(size), None) => size,
        (_, Some(51864)) => "tiny.en",
        (_, Some(51865)) => "tiny",
        (_, Some(51866)) => "large-v3",
        _ => return None,
    };
    Some(format!("openai/whisper-{size}"))
}

/// A repo's files at one commit in the cache.
struct Snapshot {
    dir: PathBuf,
    commit: String,
    layout: Layout,
}

/// The cache folder of one model repo.
struct RepoCache {
    cache_dir: PathBuf,
    repo: String,
    dir: PathBuf,
}

impl RepoCache {
    fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = Repo::new(repo.to_string(), RepoType::Model).folder_name();
        Self {
            cache_dir: cache_dir.to_path_buf(),
            repo: repo.to_string(),
            dir: cache_dir.join(folder),
        }
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    /// The commit a revision names in the cache: `refs/<revision>`, or the revision
    /// itself when it is a cached commit.
    fn commit(&self, revision: &str) -> Option<String> {
        if let Ok(commit) = std::fs::read_to_string(self.ref_path(revision)) {
            let commit = commit.trim();
            if !commit.is_empty() {
                return Some(commit.to_string());
            }
        }
        let is_commit = !revision.contains('/') && !revision.contains("..");
        (is_commit && self.snapshot_dir(revision).is_dir()).then(|| revision.to_string())
    }

    fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// "`file` of repo@revision is not in the cache" (`file`: `None` for the whole repo).
    fn not_cached(
        &self,
        path: PathBuf,
        file: Option<&str>,
        revision: &str,
        offline: bool,
    ) -> WhisperError {
        let what = match file {
            Some(file) => format!("`{file}` of {}@{revision}", self.repo),
            None => format!("{}@{revision}", self.repo),
        };
        WhisperError::InvalidModel {
            path,
            detail: format!(
                "{what} is not in the Hugging Face cache at {}{}",
                self.cache_dir.display(),
                if offline {
                    " (offline: HF_HUB_OFFLINE forbids downloading it)"
                } else {
                    ""
                }
            ),
        }
    }

    /// The cached snapshot of `revision` with every file its layout requires.
    fn snapshot(&self, revision: &str, offline: bool) -> Result<Snapshot> {
        let commit = self
            .commit(revision)
            .ok_or_else(|| self.not_cached(self.dir.clone(), None, revision, offline))?;
        let dir = self.snapshot_dir(&commit);
        let has = |name: &str| dir.join(name).is_file();
        let layout = Layout::from_files(has).ok_or_else(|| WhisperError::InvalidModel {
            path: dir.clone(),
            detail: format!(
                "the cached snapshot of {}@{revision} has no Whisper weights (model.bin, \
                 weights.safetensors, weights.npz or model.safetensors){}",
                self.repo,
                if offline {
                    " and HF_HUB_OFFLINE forbids downloading them"
                } else {
                    ""
                }
            ),
        })?;
        let (required, _) = layout.files(has);
        if let Some(missing) = required.iter().find(|name| !has(name)) {
            return Err(self.not_cached(dir.join(missing), Some(missing), revision, offline));
        }
        Ok(Snapshot {
            dir,
            commit,
            layout,
        })
    }

    /// A cached file of `revision`, if present.
    fn file(&self, revision: &str, name: &str) -> Option<PathBuf> {
        let path = self.snapshot_dir(&self.commit(revision)?).join(name);
        path.is_file().then_some(path)
    }

    /// Points `refs/<revision>` at `commit` (what `huggingface_hub` does on download).
    fn write_ref(&self, revision: &str, commit: &str) {
        let path = self.ref_path(revision);
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, commit));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot record the revision: {e}");
        }
    }
}

/// The snapshot of `repo@revision` with the files its layout needs: from the cache
/// when offline (or when the hub cannot be reached), else listed and downloaded.
fn fetch_repo(hub: &HubOptions, repo: &str, revision: &str) -> Result<Snapshot> {
    let cache = RepoCache::new(&hub.cache_dir, repo);
    if hub.offline {
        return cache.snapshot(revision, true);
    }
    let api = hub.api()?;
    let info = match api
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .info()
    {
        Ok(info) => info,
        Err(network) => {
            tracing::warn!(
                repo,
                revision,
                endpoint = hub.endpoint,
                "cannot list the repo ({network}); trying the cache"
            );
            return cache
                .snapshot(revision, false)
                .map_err(|cached| WhisperError::InvalidModel {
                    path: cache.dir.clone(),
                    detail: format!(
                        "cannot list {repo}@{revision} on {}: {network}; and {cached}",
                        hub.endpoint
                    ),
                });
        }
    };
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let listed = |name: &str| names.iter().any(|n| n == name);
    let layout = Layout::from_files(listed).ok_or_else(|| WhisperError::InvalidModel {
        path: cache.dir.clone(),
        detail: format!(
            "{repo}@{revision} has no Whisper weights (model.bin, weights.safetensors, \
             weights.npz or model.safetensors); its files: {}",
            names.join(", ")
        ),
    })?;
    download_snapshot(&api, &cache, revision, info.sha, layout, listed)
}

/// Downloads into the snapshot of `commit` the files `layout` needs (of those `listed`,
/// and the shards of a sharded checkpoint) unless cached, then points `refs/<revision>`
/// at the commit.
fn download_snapshot(
    api: &Api,
    cache: &RepoCache,
    revision: &str,
    commit: String,
    layout: Layout,
    listed: impl Fn(&str) -> bool,
) -> Result<Snapshot> {
    let repo = cache.repo.as_str();
    let dir = cache.snapshot_dir(&commit);
    // Download by commit, so that every file lands in the same snapshot even if the
    // branch moves meanwhile.
    let commit_ref = cache.ref_path(&commit);
    let commit_ref_existed = commit_ref.exists();
    let pinned = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        commit.clone(),
    ));
    let (required, optional) = layout.files(&listed);
    let mut result = Ok(());
    for name in required
        .iter()
        .chain(optional.iter().filter(|name| listed(name)))
    {
        result = result.and_then(|()| ensure_file(&pinned, &dir, repo, &commit, name));
    }
    if result.is_ok() && required.contains(&HF_SAFETENSORS_INDEX) {
        result = shards(&dir.join(HF_SAFETENSORS_INDEX)).and_then(|shards| {
            shards
                .iter()
                .try_for_each(|name| ensure_file(&pinned, &dir, repo, &commit, name))
        });
    }
    if revision != commit {
        if !commit_ref_existed {
            let _ = std::fs::remove_file(&commit_ref);
        }
        cache.write_ref(revision, &commit);
    }
    result?;
    Ok(Snapshot {
        dir,
        commit,
        layout,
    })
}

/// Downloads `name` into the snapshot `dir` unless it is there.
fn ensure_file(pinned: &ApiRepo, dir: &Path, repo: &str, commit: &str, name: &str) -> Result<()> {
    if dir.join(name).is_file() {
        return Ok(());
    }
    tracing::info!(repo, commit, file = name, "downloading");
    pinned
        .download(name)
        .map(|_| ())
        .map_err(|e| WhisperError::InvalidModel {
            path: dir.join(name),
            detail: format!("cannot download `{name}` of {repo}@{commit}: {e}"),
        })
}

/// Shard file names of an HF safetensors index.
/// Without a `weight_map` there is nothing more to fetch; loading reports it.
fn shards(index: &Path) -> Result<Vec<String>> {
    Ok(shard_names(&read_json(index)?).unwrap_or_default())
}

/// One file of `repo@revision`: from the cache if there, else downloaded (unless offline).
fn fetch_file(hub: &HubOptions, repo: &str, revision: &str, name: &str) -> Result<PathBuf> {
    let cache = RepoCache::new(&hub.cache_dir, repo);
    if let Some(path) = cache.file(revision, name) {
        return Ok(path);
    }
    if hub.offline {
        let path = cache
            .commit(revision)
            .map_or(cache.dir.clone(), |c| cache.snapshot_dir(&c).join(name));
        return Err(cache.not_cached(path, Some(name), revision, true));
    }
    hub.api()?
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .download(name)
        .map_err(|e| WhisperError::InvalidModel {
            path: cache.dir.clone(),
            detail: format!("cannot download `{name}` of {repo}@{revision}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sources_parse() {
        assert_eq!(
            ModelSource::parse("mlx-community/whisper-tiny.en-mlx"),
            ModelSource::Hub {
                repo: "mlx-community/whisper-tiny.en-mlx".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("openai/whisper-tiny@refs/pr/3"),
            ModelSource::Hub {
                repo: "openai/whisper-tiny".into(),
                revision: "refs/pr/3".into()
            }
        );
        for local in [
            "/nonexistent/model",
            "./model",
            "a/b/c",
            "model",
            "org/",
            "../x",
            "org/name@",
        ] {
            assert_eq!(
                ModelSource::parse(local),
                ModelSource::Local(local.into()),
                "{local}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSource::parse(existing),
            ModelSource::Local(existing.into())
        );
    }

    #[test]
    fn model_ids_are_the_models_own_names() {
        let cases = [
            ("openai/whisper-large-v3", "whisper-large-v3"),
            ("openai/whisper-tiny@refs/pr/3", "whisper-tiny"),
            (
                "mlx-community/whisper-tiny.en-mlx@0123abc",
                "whisper-tiny.en-mlx",
            ),
            ("/nonexistent/models/base-ct2", "base-ct2"),
            ("/nonexistent/models/base-ct2/", "base-ct2"),
            ("models/tiny.en-ct2", "tiny.en-ct2"),
            ("base-ct2", "base-ct2"),
        ];
        for (source, id) in cases {
            assert_eq!(model_id(source).as_deref(), Some(id), "{source}");
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("whisper-small-ct2");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let dir_text = dir.to_str().unwrap();
        assert_eq!(model_id(dir_text).as_deref(), Some("whisper-small-ct2"));
        assert_eq!(
            model_id(&format!("{dir_text}/")).as_deref(),
            Some("whisper-small-ct2")
        );
        // `..` names the directory it means.
        assert_eq!(
            model_id(&format!("{dir_text}/sub/..")).as_deref(),
            Some("whisper-small-ct2")
        );
        let cwd = std::env::current_dir().unwrap();
        let cwd_name = cwd.file_name().map(|n| n.to_string_lossy().into_owned());
        assert_eq!(model_id("."), cwd_name);
        assert_eq!(model_id("/"), None);
        assert_eq!(model_id(""), None);
    }

    #[test]
    fn openai_repos_are_inferred() {
        let cases = [
            ("whisper-tiny.en-mlx", None, "openai/whisper-tiny.en"),
            ("whisper-tiny-mlx", Some(51865), "openai/whisper-tiny"),
            (
                "whisper-large-v3-turbo",
                Some(51866),
                "openai/whisper-large-v3-turbo",
            ),
            ("whisper-turbo", None, "openai/whisper-large-v3-turbo"),
            ("whisper-large-v3-mlx-4bit", None, "openai/whisper-large-v3"),
            ("whisper-large-mlx", Some(51866), "openai/whisper-large-v3"),
            (
                "whisper-large-v2-mlx",
                Some(51865),
                "openai/whisper-large-v2",
            ),
            (
                "distil-whisper-large-v3",
                Some(51866),
                "openai/whisper-large-v3",
            ),
            (
                "whisper-medium.en-mlx-8bit",
                Some(51864),
                "openai/whisper-medium.en",
            ),
            ("whisper-small-mlx-q4", None, "openai/whisper-small"),
            ("faster-whisper-base.en", None, "openai/whisper-base.en"),
            // The vocabulary overrides an inconsistent name, and stands in for none.
            ("whisper-tiny-mlx", Some(51864), "openai/whisper-tiny.en"),
            ("my-model", Some(51865), "openai/whisper-tiny"),
        ];
        for (name, vocab, repo) in cases {
            assert_eq!(
                openai_repo_for(name, vocab).as_deref(),
                Some(repo),
                "{name} {vocab:?}"
            );
        }
        assert_eq!(openai_repo_for("my-model", None), None);
    }

    #[test]
    fn options_follow_the_environment() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            HubOptions::from_vars(move |k| map.get(k).cloned())
        };
        let o = env(&[("HOME", "/home/u")]);
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(!o.offline);
        assert_eq!(o.endpoint, "https://huggingface.co");
        let o = env(&[("HOME", "/home/u"), ("HF_HOME", "/data/hf")]);
        assert_eq!(o.cache_dir, PathBuf::from("/data/hf/hub"));
        let o = env(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/hub"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_TOKEN", "hf_abc"),
            ("HF_ENDPOINT", "https://mirror.example/"),
        ]);
        assert_eq!(o.cache_dir, PathBuf::from("/fast/hub"));
        assert!(o.offline);
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert_eq!(o.endpoint, "https://mirror.example");
        assert!(!format!("{o:?}").contains("hf_abc"));
        assert!(env(&[("HF_HUB_OFFLINE", "TRUE")]).offline);
        assert!(!env(&[("HF_HUB_OFFLINE", "0")]).offline);

        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("token"), "hf_file\n").unwrap();
        let hf_home = home.path().to_str().unwrap();
        assert_eq!(
            env(&[("HF_HOME", hf_home)]).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            env(&[("HF_HOME", hf_home), ("HF_TOKEN", "hf_env")])
                .token
                .as_deref(),
            Some("hf_env")
        );
    }
}
