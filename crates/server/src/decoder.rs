//! The audio decoder: uploads are decoded to samples in a child process
//! (`steno decode-child`, "the decoder child"), one per upload.
//!
//! symphonia allocates sizes a file declares before reading them, and a failed allocation
//! aborts the process. A crafted WebM a few hundred bytes long was enough to take the whole
//! server down (`make fuzz`, see [`steno_audio::child`]). In a child it costs one request,
//! answered 400. The child is killed when the request is dropped (the client left) or
//! when decoding outlives `limits.request_timeout_seconds`. Spawning it costs a few
//! milliseconds, small next to transcription.

use std::io::PipeReader;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use steno_audio::{child, Audio, AudioError, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audio_budget::{AudioBudget, Reservation};
use crate::error::ApiError;

/// The audio decoder: decodes uploads (any container [`steno_audio`] reads) to samples,
/// each in its own child process running `program decode-child` ("the decoder child"),
/// or in process where this executable cannot be found. Not Whisper's text decoder.
#[derive(Clone, Debug)]
pub struct Decoder {
    program: Option<PathBuf>,
    /// Every upload's samples are reserved here before they are allocated.
    budget: AudioBudget,
}

/// The subcommand of `steno` that runs [`child::serve`] on stdin and stdout.
pub const SUBCOMMAND: &str = "decode-child";

/// The only variables of the server's environment the child gets: it runs C codecs on
/// hostile bytes, so secrets (`STENO_API_KEYS`, `HF_TOKEN`) must not be in its memory.
/// It needs none to decode; these keep it starting where the server starts (the
/// dynamic linker's search path for the MLX library this executable links) and keep a
/// panic's backtrace in the log.
const CHILD_ENV: &[&str] = &[
    "LD_LIBRARY_PATH",
    "DYLD_LIBRARY_PATH",
    "DYLD_FALLBACK_LIBRARY_PATH",
    "RUST_BACKTRACE",
];

/// Most of the child's stderr kept for the log.
const STDERR_KEPT: usize = 2048;

impl Decoder {
    /// Children run this very executable; decoded samples come out of `budget`.
    pub fn this_executable(budget: AudioBudget) -> Self {
        let program = std::env::current_exe()
            .inspect_err(|e| {
                tracing::warn!("decoding uploads in process: cannot find this executable: {e}")
            })
            .ok();
        Decoder { program, budget }
    }

    /// The budget decoded samples come out of (raw PCM, converted without a child,
    /// reserves there too).
    pub fn budget(&self) -> &AudioBudget {
        &self.budget
    }

    /// The upload's audio, with its samples' reservation in the budget (429 past it);
    /// `hint` is its file extension. A child still decoding after `timeout` is killed
    /// (400).
    pub async fn decode(
        &self,
        bytes: Vec<u8>,
        hint: Option<String>,
        limits: Limits,
        timeout: Duration,
    ) -> Result<(Audio, Reservation), ApiError> {
        let budget = self.budget.clone();
        match &self.program {
            Some(program) => decode_in_child(program, bytes, hint, limits, timeout, budget).await,
            None => {
                let audio = tokio::task::spawn_blocking(move || {
                    steno_audio::decode_owned(bytes, hint.as_deref(), &limits)
                })
                .await
                .map_err(ApiError::internal)??;
                let reservation = budget.reserve_samples(audio.samples.len())?;
                Ok((audio, reservation))
            }
        }
    }
}

/// One child per upload: the upload goes in on stdin, the reply comes back on stdout,
/// stderr is kept for the log.
async fn decode_in_child(
    program: &Path,
    bytes: Vec<u8>,
    hint: Option<String>,
    limits: Limits,
    timeout: Duration,
    budget: AudioBudget,
) -> Result<(Audio, Reservation), ApiError> {
    let (mut process, stdout) = spawn_child(program)?;
    let (Some(mut stdin), Some(stderr)) = (process.stdin.take(), process.stderr.take()) else {
        return Err(ApiError::internal("the decoder process has no pipes"));
    };
    let header = child::request_header(bytes.len(), hint.as_deref(), &limits);
    // A child that dies mid-upload makes these writes fail; its reply says why.
    let write = async move {
        let _ = stdin.write_all(&header).await;
        let _ = stdin.write_all(&bytes).await;
    };
    let read = tokio::task::spawn_blocking(move || read_reserved(stdout, &limits, &budget));
    let finished = tokio::time::timeout(timeout, async {
        let ((), reply, log) = tokio::join!(write, read, stderr_text(stderr));
        (reply, log, process.wait().await)
    })
    .await;
    let Ok((reply, log, status)) = finished else {
        // Dropping the future dropped the child, which kills it.
        return Err(ApiError::invalid(
            format!(
                "could not decode the audio: decoding took longer than {} s",
                timeout.as_secs()
            ),
            Some("file"),
        ));
    };
    match reply.map_err(ApiError::internal)? {
        Ok(result) => result,
        Err(e) => {
            let status = status.map_or_else(|e| e.to_string(), describe);
            tracing::warn!(%status, reply = %e, stderr = %log, "the decoder process failed on an upload");
            Err(AudioError::Corrupt(format!(
                "the decoder stopped on this file ({status}); it is damaged or not audio"
            ))
            .into())
        }
    }
}

/// The child's reply, its samples reserved in `budget` from the count it declares
/// before any is read (refused: the pipe closes and the child, writing, ends).
fn read_reserved(
    mut stdout: PipeReader,
    limits: &Limits,
    budget: &AudioBudget,
) -> std::io::Result<Result<(Audio, Reservation), ApiError>> {
    let head = match child::read_head(&mut stdout, limits)? {
        Ok(head) => head,
        Err(error) => return Ok(Err(error.into())),
    };
    let reservation = match budget.reserve_samples(head.sample_count()) {
        Ok(reservation) => reservation,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok((child::read_samples(stdout, head)?, reservation)))
}

/// Starts `program decode-child`, killed when dropped. The reply comes through a
/// blocking pipe (read on a blocking thread), returned beside the child.
fn spawn_child(program: &Path) -> Result<(tokio::process::Child, PipeReader), ApiError> {
    let (stdout, child_stdout) =
        std::io::pipe().map_err(|e| ApiError::internal(format!("a pipe for the decoder: {e}")))?;
    // The command holds the pipe's write end: dropped on return, so that the reply reads
    // to its end when the child exits.
    let mut command = tokio::process::Command::new(program);
    command
        .arg(SUBCOMMAND)
        .env_clear()
        .envs(child_env(std::env::vars_os()))
        .stdin(Stdio::piped())
        .stdout(child_stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let process = command
        .spawn()
        .map_err(|e| ApiError::internal(format!("starting the decoder process: {e}")))?;
    Ok((process, stdout))
}

/// The variables of `parent` that [`CHILD_ENV`] lets through.
fn child_env(
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    parent.filter(|(name, _)| CHILD_ENV.iter().any(|allowed| name == allowed))
}

/// The first [`STDERR_KEPT`] bytes the child writes to stderr, read to its end.
async fn stderr_text(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0; 1024];
    while let Ok(n @ 1..) = stderr.read(&mut buffer).await {
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

/// Address space the child may map. A 3-hour 48 kHz stereo FLAC (the longest audio
/// accepted) needs between 1.2 and 1.5 GB here (measured with `prlimit --as`; peak RSS
/// 0.69 GB); past this an allocation fails and the child aborts: that upload gets 400.
pub const CHILD_MEMORY_BYTES: u64 = 2 << 30;

/// CPU seconds the child may use: that same file takes 3.2 s; past this the kernel
/// stops it (SIGXCPU, then SIGKILL a second later), whatever the load on the machine.
pub const CHILD_CPU_SECONDS: u64 = 60;

/// For the child, first thing, before it reads the upload: no core file (a decoder
/// that aborts on a hostile upload must not leave one behind each time, a client
/// could fill the disk with them), and bounds on its memory and CPU time so that a
/// file that needs more costs only its own request. macOS does not enforce
/// `RLIMIT_AS`; the decoder's own limits bound the memory there.
pub fn limit_child() {
    #[cfg(unix)]
    {
        set_limit(libc::RLIMIT_CORE, 0, 0, "core dumps");
        set_limit(
            libc::RLIMIT_AS,
            CHILD_MEMORY_BYTES,
            CHILD_MEMORY_BYTES,
            "address space",
        );
        set_limit(
            libc::RLIMIT_CPU,
            CHILD_CPU_SECONDS,
            CHILD_CPU_SECONDS + 1,
            "CPU time",
        );
    }
}

#[cfg(unix)]
fn set_limit(resource: RlimitResource, soft: u64, hard: u64, what: &str) {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given and touches nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        eprintln!(
            "cannot limit the decoder's {what}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The type `setrlimit` takes its resource as (it differs between libcs).
#[cfg(all(unix, target_env = "gnu"))]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(all(unix, not(target_env = "gnu")))]
type RlimitResource = libc::c_int;

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return match signal {
                libc::SIGABRT => "killed by SIGABRT".to_string(),
                libc::SIGKILL => "killed by SIGKILL".to_string(),
                libc::SIGSEGV => "killed by SIGSEGV".to_string(),
                signal => format!("killed by signal {signal}"),
            };
        }
    }
    status.to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn only_the_allowed_variables_reach_the_child() {
        let parent = [
            ("STENO_API_KEYS", "sk-secret"),
            ("HF_TOKEN", "hf_secret"),
            ("HOME", "/home/steno"),
            ("RUST_BACKTRACE", "1"),
            ("LD_LIBRARY_PATH", "/opt/mlx/lib"),
        ]
        .map(|(n, v)| (n.into(), v.into()));
        let passed: Vec<_> = child_env(parent.into_iter()).collect();
        assert_eq!(
            passed,
            [("RUST_BACKTRACE", "1"), ("LD_LIBRARY_PATH", "/opt/mlx/lib")]
                .map(|(n, v)| (n.into(), v.into()))
        );
    }

    /// The child command itself: `env` run in its place prints an environment with
    /// nothing of this test process's (cargo sets CARGO_PKG_NAME for it).
    #[tokio::test]
    async fn the_child_starts_with_a_cleared_environment() {
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let script = std::env::temp_dir().join(format!("steno-env-{}.sh", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\nexec /usr/bin/env\n").unwrap();
        let mut permissions = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).unwrap();
        let (mut process, mut stdout) = spawn_child(&script).unwrap();
        let _ = process.wait().await;
        let mut printed = String::new();
        stdout.read_to_string(&mut printed).unwrap();
        let _ = std::fs::remove_file(&script);
        let names: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.split('=').next())
            .collect();
        // The shell adds a few of its own; nothing else comes from this process.
        let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
        assert!(
            names
                .iter()
                .all(|n| shell.contains(n) || CHILD_ENV.contains(n)),
            "{printed}"
        );
    }
}
