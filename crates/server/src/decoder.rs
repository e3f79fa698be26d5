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

use crate::audio_budget::{AudioBudget, BudgetedSamples, Reservation};
use crate::error::ApiError;

/// The audio decoder: decodes uploads (any container [`steno_audio`] reads) to samples,
/// each in its own child process running `program decode-child` ("the decoder child"),
/// or in process where this executable cannot be found. Not Whisper's text decoder.
#[derive(Clone, Debug)]
pub struct Decoder {
    program: Option<PathBuf>,
    /// Every upload's samples are reserved here before they are allocated.
    budget: AudioBudget,
    limits: ChildLimits,
}

/// What each decoder child may use (`limits.decoder_memory_bytes`,
/// `limits.decoder_cpu_seconds`), given to it as arguments and set by [`limit_child`]
/// before it reads the upload.
#[derive(Clone, Copy, Debug, PartialEq, clap::Args)]
pub struct ChildLimits {
    /// Address space the child may map (`RLIMIT_AS`), in bytes.
    #[arg(long)]
    pub memory_bytes: u64,
    /// CPU time the child may use (`RLIMIT_CPU`, whole seconds, rounded up).
    #[arg(long)]
    pub cpu_seconds: f64,
}

impl ChildLimits {
    /// The limits of `config`'s `[limits]` section.
    pub fn from_config(limits: &crate::config::LimitsConfig) -> Self {
        ChildLimits {
            memory_bytes: limits.decoder_memory_bytes,
            cpu_seconds: limits.decoder_cpu_seconds,
        }
    }

    /// The arguments of the `decode-child` subcommand that carry them.
    fn args(&self) -> [String; 4] {
        [
            "--memory-bytes".into(),
            self.memory_bytes.to_string(),
            "--cpu-seconds".into(),
            self.cpu_seconds.to_string(),
        ]
    }

    /// `RLIMIT_CPU`'s soft limit: whole seconds, at least one.
    fn cpu_limit(&self) -> u64 {
        self.cpu_seconds.ceil().max(1.0) as u64
    }
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
    /// Children run this very executable under `limits`; decoded samples come out of
    /// `budget`.
    pub fn this_executable(budget: AudioBudget, limits: ChildLimits) -> Self {
        let program = std::env::current_exe()
            .inspect_err(|e| {
                tracing::warn!("decoding uploads in process: cannot find this executable: {e}")
            })
            .ok();
        Decoder {
            program,
            budget,
            limits,
        }
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
            Some(program) => {
                let child = Child {
                    program,
                    limits: self.limits,
                    budget,
                };
                decode_in_child(child, bytes, hint, limits, timeout).await
            }
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

/// What a decoder child is run with.
struct Child<'a> {
    program: &'a Path,
    limits: ChildLimits,
    budget: AudioBudget,
}

/// One child per upload: the upload goes in on stdin, the reply comes back on stdout,
/// stderr is kept for the log.
async fn decode_in_child(
    child: Child<'_>,
    bytes: Vec<u8>,
    hint: Option<String>,
    limits: Limits,
    timeout: Duration,
) -> Result<(Audio, Reservation), ApiError> {
    let Child {
        program,
        limits: child_limits,
        budget,
    } = child;
    let (mut process, stdout) = spawn_child(program, &child_limits)?;
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
            let status = status.map_err(|e| e.to_string());
            let shown = status.as_ref().map_or_else(Clone::clone, |s| describe(*s));
            tracing::warn!(status = %shown, reply = %e, stderr = %log, "the decoder process failed on an upload");
            Err(child_failure(status.ok(), &shown, &child_limits))
        }
    }
}

/// The answer for an upload whose decoder child died. Out of CPU time (the kernel's
/// SIGXCPU at `limits.decoder_cpu_seconds`) it is 413: the file may be sound, but
/// decoding it costs more than this server grants one upload, so a retry (429, 503)
/// would fail the same way and the client must send less (as for a file past
/// `limits.max_audio_seconds`). Anything else (an abort on an allocation a file
/// declares, past `limits.decoder_memory_bytes` or not) is the file's: 400.
fn child_failure(status: Option<ExitStatus>, shown: &str, limits: &ChildLimits) -> ApiError {
    if status.is_some_and(out_of_cpu_time) {
        return ApiError::too_large(format!(
            "decoding this file needs more than the {} s of CPU time this server grants an \
             upload (limits.decoder_cpu_seconds); send a shorter or simpler file",
            limits.cpu_limit()
        ));
    }
    AudioError::Corrupt(format!(
        "the decoder stopped on this file ({shown}); it is damaged or not audio"
    ))
    .into()
}

/// Whether the kernel stopped the child for its CPU time (SIGXCPU at the soft limit).
fn out_of_cpu_time(status: ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(libc::SIGXCPU)
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        false
    }
}

/// The child's reply, read as it decodes: its samples reserved in `budget` before they
/// are allocated, from the count the source declares and then chunk by chunk. Refused
/// (429 or 413), the pipe closes and the child, writing, ends at once.
fn read_reserved(
    stdout: PipeReader,
    limits: &Limits,
    budget: &AudioBudget,
) -> std::io::Result<Result<(Audio, Reservation), ApiError>> {
    let mut reply = child::ReplyReader::new(stdout, limits)?;
    let mut samples = BudgetedSamples::new(budget, reply.most_samples());
    loop {
        let taken = match reply.read_message()? {
            child::Message::Expect(count) => samples.expect(count),
            child::Message::Samples(chunk) => samples.extend(chunk),
            child::Message::Restart => {
                samples.clear();
                Ok(())
            }
            child::Message::End(Ok(source)) => {
                let (samples, reservation) = samples.finish();
                return Ok(Ok((source.with_samples(samples), reservation)));
            }
            child::Message::End(Err(error)) => return Ok(Err(error.into())),
        };
        if let Err(refused) = taken {
            return Ok(Err(refused));
        }
    }
}

/// Starts `program decode-child`, killed when dropped. The reply comes through a
/// blocking pipe (read on a blocking thread), returned beside the child.
fn spawn_child(
    program: &Path,
    limits: &ChildLimits,
) -> Result<(tokio::process::Child, PipeReader), ApiError> {
    let (stdout, child_stdout) =
        std::io::pipe().map_err(|e| ApiError::internal(format!("a pipe for the decoder: {e}")))?;
    // The command holds the pipe's write end: dropped on return, so that the reply reads
    // to its end when the child exits.
    let mut command = tokio::process::Command::new(program);
    command
        .arg(SUBCOMMAND)
        .args(limits.args())
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

/// The child's whole life (`steno decode-child`): [`limit_child`], then one upload from
/// stdin decoded to stdout. A server that stopped reading (it refused the samples, or
/// its client left) is no failure: the child ends quietly, without building an error
/// (with `RUST_BACKTRACE` set, an error's backtrace made each refused child load the
/// executable's debug info, 80 MB).
pub fn run_child(limits: &ChildLimits) -> std::io::Result<()> {
    limit_child(limits);
    match child::serve(std::io::stdin().lock(), std::io::stdout().lock()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// For the child, first thing, before it reads the upload: no core file (a decoder
/// that aborts on a hostile upload must not leave one behind each time, a client
/// could fill the disk with them), and `limits` on its memory and CPU time so that a
/// file that needs more costs only its own request. The CPU limit's hard limit is a
/// second past the soft one: SIGXCPU at the soft limit (which the server recognises),
/// SIGKILL a second later should the child survive it. macOS does not enforce
/// `RLIMIT_AS`; the decoder's own limits bound the memory there.
pub fn limit_child(limits: &ChildLimits) {
    #[cfg(unix)]
    {
        set_limit(libc::RLIMIT_CORE, 0, 0, "core dumps");
        let memory = limits.memory_bytes;
        set_limit(libc::RLIMIT_AS, memory, memory, "address space");
        let cpu = limits.cpu_limit();
        set_limit(libc::RLIMIT_CPU, cpu, cpu + 1, "CPU time");
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
                libc::SIGXCPU => "killed by SIGXCPU".to_string(),
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
        let limits = ChildLimits {
            memory_bytes: 1 << 30,
            cpu_seconds: 10.0,
        };
        let (mut process, mut stdout) = spawn_child(&script, &limits).unwrap();
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
