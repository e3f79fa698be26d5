//! The deployment kit under `deploy/`:
//!
//! * the launchd plist parses (Python's `plistlib`) with the keys launchd needs, and the
//!   systemd unit carries its hardening, stop and health-gate settings (parsed here, and
//!   checked by `systemd-analyze verify` where installed); the unit's health gate really
//!   waits for `/health`; the scripts are strict bash; the Linux installer stages a layout
//!   whose binary finds the installed MLX runtime and transcribes;
//! * every `steno_*` metric that prometheus.yml, alerts.yml and grafana-dashboard.json name
//!   is one a running server exports;
//! * nginx accepts `deploy/nginx/steno.conf`, serves it over HTTPS with a certificate the
//!   test generates (plain HTTP only redirects), streams and carries request ids through
//!   it, and a pool of two real servers behind it answers every transcription correctly
//!   while one of them is killed mid-stream, except the one request that instance died
//!   under, which nginx does not replay; and live sessions (WebSocket, /v1/realtime)
//!   through it while one instance is killed: its session ends at once (never a hang),
//!   the other's transcribes jfk.wav, and a reconnect is served by the survivor.
//!
//! Several tests start servers: run one test at a time (`--test-threads 1`). The nginx
//! tests are skipped with a note when nginx is not installed (`make setup` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use steno_e2e::live::SessionOptions;
use steno_e2e::nginx::{self, Nginx, TlsWebSocket};
use steno_e2e::server::{Request, Response, Server};
use steno_e2e::{assets, cli, pcm24, prometheus, wer};

const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";
/// Word error rate allowed on the 11-second JFK clip (22 words: two edits).
const JFK_WER: f64 = 0.1;
/// After `server.drain_seconds`, `steno serve` waits this much longer before closing what
/// is left (crates/server/src/main.rs); service managers must wait longer than both.
const DRAIN_GRACE_SECONDS: u64 = 2;

// ---------------------------------------------------------------------------------------
// Files

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file of the repository, by its path relative to the root.
fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The default of `key` in config/default.toml (keys used here are unique across sections).
fn default_config(key: &str) -> String {
    read("config/default.toml")
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == key).then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no `{key} =` in config/default.toml"))
}

fn drain_seconds() -> u64 {
    default_config("drain_seconds")
        .parse()
        .expect("drain_seconds is a number")
}

/// Runs `program args…`, returning its status and stdout+stderr; `None` when the program
/// is not installed.
fn run(program: &str, args: &[&str]) -> Option<(ExitStatus, String)> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some((
            output.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// Runs `command` (`what` in messages) and returns its stdout; panics with its output
/// unless it succeeds.
fn succeed(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `python3 -c script path` printing JSON, parsed.
fn python_json(script: &str, path: &Path) -> Value {
    let path = path.to_str().expect("UTF-8 path");
    let (status, output) =
        run("python3", &["-c", script, path]).expect("python3 is installed (make setup)");
    assert!(status.success(), "python3 on {path}: {output}");
    serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

// ---------------------------------------------------------------------------------------
// macOS: launchd

const PLIST: &str = "deploy/macos/com.steno.server.plist";
const MACOS_LOG: &str = "/usr/local/var/log/steno/steno.log";
/// The hidden system user launchd runs Steno as, and its home.
const MACOS_USER: &str = "_steno";
const MACOS_HOME: &str = "/usr/local/var/steno";

#[test]
fn launchd_plist_runs_steno_serve_with_its_config() {
    let plist = python_json(
        "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        &repo().join(PLIST),
    );
    assert_eq!(plist["Label"], "com.steno.server", "{plist}");
    assert_eq!(
        plist["ProgramArguments"],
        json!([
            "/usr/local/bin/steno",
            "serve",
            "--config",
            "/usr/local/etc/steno/steno.toml"
        ])
    );
    assert_eq!(plist["KeepAlive"], true);
    assert_eq!(plist["RunAtLoad"], true);
    assert_eq!(plist["StandardOutPath"], MACOS_LOG);
    assert_eq!(plist["StandardErrorPath"], MACOS_LOG);
    assert_eq!(plist["EnvironmentVariables"]["RUST_LOG"], "info");
    // Not root: the user and group that install.sh creates, whose home the daemon gets.
    assert_eq!(plist["UserName"], MACOS_USER, "{plist}");
    assert_eq!(plist["GroupName"], MACOS_USER, "{plist}");
    assert_eq!(plist["EnvironmentVariables"]["HOME"], MACOS_HOME);
    let exit_timeout = plist["ExitTimeOut"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer ExitTimeOut: {plist}"));
    assert!(
        exit_timeout > drain_seconds() + DRAIN_GRACE_SECONDS,
        "launchd would SIGKILL after {exit_timeout} s, before the {} s drain ends",
        drain_seconds()
    );

    let install = read("deploy/macos/install.sh");
    for needed in [
        "label=com.steno.server",
        "/Library/LaunchDaemons/$label.plist",
        "deploy/macos/$label.plist",
        "runtime=target/mlx/metal/mlx/lib",
        "/usr/local/lib/steno",
        "install_name_tool -add_rpath /usr/local/lib/steno /usr/local/bin/steno",
        "codesign --force --sign - /usr/local/bin/steno",
        "config=/usr/local/etc/steno/steno.toml",
        "user=_steno",
        "home=/usr/local/var/steno",
        "deploy/macos/user.sh \"$user\" \"$home\"",
        // Root-only but for the daemon's group, on every run (an upgrade tightens it).
        "install -m 0640 -o root -g \"$user\" config/default.toml \"$config\"",
        "chown \"root:$user\" \"$config\"",
        "chmod 0640 \"$config\"",
        "chown -R \"$user:$user\" \"$home\" /usr/local/var/log/steno /usr/local/var/cache/steno",
        "/usr/local/var/log/steno",
        "launchctl bootstrap system",
        "Apple silicon",
        "macOS 14",
        "mlx-metal",
        "make setup",
    ] {
        assert!(
            install.contains(needed),
            "macos/install.sh lacks {needed:?}"
        );
    }
    let uninstall = read("deploy/macos/uninstall.sh");
    for needed in [
        "label=com.steno.server",
        "launchctl bootout \"system/$label\"",
        "/Library/LaunchDaemons/$label.plist",
        "rm -rf /usr/local/lib/steno",
        "dscl . -delete /Users/_steno",
        "dscl . -delete /Groups/_steno",
    ] {
        assert!(
            uninstall.contains(needed),
            "macos/uninstall.sh lacks {needed:?}"
        );
    }
}

/// A stand-in for macOS's `dscl .` on the local directory: a record is a directory under
/// `$DSCL_STORE` (`/Users/_steno`), an attribute a file in it; every `-create` of an
/// attribute is appended to `$DSCL_STORE/creates`.
const FAKE_DSCL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
[ "$1" = . ] || exit 2
command=$2 record="$DSCL_STORE$3"
shift 3
case "$command" in
  -list)
    for dir in "$record"/*/; do
      if [ -f "$dir$1" ]; then echo "$(basename "$dir") $(cat "$dir$1")"; fi
    done ;;
  -read)
    if [ $# -eq 0 ]; then [ -d "$record" ] || exit 56; exit 0; fi
    [ -f "$record/$1" ] || exit 56
    echo "$1: $(cat "$record/$1")" ;;
  -create)
    mkdir -p "$record"
    if [ $# -gt 0 ]; then
      printf '%s' "$2" >"$record/$1"
      echo "$record $1" >>"$DSCL_STORE/creates"
    fi ;;
  *) exit 2 ;;
esac
"#;

#[test]
fn macos_user_script_creates_a_hidden_system_user_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let store = dir.path().join("directory");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("dscl"), FAKE_DSCL).unwrap();
    std::fs::set_permissions(bin.join("dscl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Ids already taken: the first two of the range, one by a user and one by a group.
    for (record, key, value) in [
        ("Users/root", "UniqueID", "0"),
        ("Users/_other", "UniqueID", "300"),
        ("Groups/_other", "PrimaryGroupID", "301"),
    ] {
        std::fs::create_dir_all(store.join(record)).unwrap();
        std::fs::write(store.join(record).join(key), value).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let create_user = || {
        let mut user_sh = Command::new("bash");
        user_sh
            .arg(repo().join("deploy/macos/user.sh"))
            .args([MACOS_USER, MACOS_HOME])
            .env("PATH", &path)
            .env("DSCL_STORE", &store);
        succeed(&mut user_sh, "user.sh");
    };
    let attribute = |record: &str, key: &str| {
        std::fs::read_to_string(store.join(record).join(key))
            .unwrap_or_else(|e| panic!("{record} {key}: {e}"))
    };

    create_user();
    let user = format!("Users/{MACOS_USER}");
    let group = format!("Groups/{MACOS_USER}");
    let gid = attribute(&group, "PrimaryGroupID");
    let uid = attribute(&user, "UniqueID");
    assert_eq!((gid.as_str(), uid.as_str()), ("302", "303"));
    for (key, value) in [
        ("PrimaryGroupID", gid.as_str()),
        ("UserShell", "/usr/bin/false"),
        ("NFSHomeDirectory", MACOS_HOME),
        ("Password", "*"),
        ("IsHidden", "1"),
    ] {
        assert_eq!(attribute(&user, key), value, "{user} {key}");
    }
    assert_eq!(attribute(&group, "Password"), "*");

    // Again (an upgrade): the same ids, none chosen anew.
    create_user();
    assert_eq!(attribute(&user, "UniqueID"), uid);
    assert_eq!(attribute(&group, "PrimaryGroupID"), gid);
    let creates = std::fs::read_to_string(store.join("creates")).unwrap();
    for id in [
        format!("{user} UniqueID"),
        format!("{group} PrimaryGroupID"),
    ] {
        let chosen = creates.lines().filter(|l| l.ends_with(&id)).count();
        assert_eq!(chosen, 1, "{id} set {chosen} times:\n{creates}");
    }
}

#[test]
fn deploy_scripts_are_strict_bash() {
    use std::os::unix::fs::PermissionsExt;
    let mut scripts = Vec::new();
    for dir in ["deploy/linux", "deploy/macos"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("deploy dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    assert_eq!(scripts.len(), 5, "{scripts:?}");
    for script in &scripts {
        let name = script.display();
        let text = std::fs::read_to_string(script).expect("read script");
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{name}: shebang");
        assert!(
            text.lines().any(|l| l == "set -euo pipefail"),
            "{name}: no `set -euo pipefail`"
        );
        let mode = std::fs::metadata(script)
            .expect("stat")
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{name} is not executable");
        let (status, output) = run("bash", &["-n", script.to_str().unwrap()]).expect("bash");
        assert!(status.success(), "bash -n {name}: {output}");
        match run("shellcheck", &[script.to_str().unwrap()]) {
            Some((status, output)) => assert!(status.success(), "shellcheck {name}:\n{output}"),
            None => eprintln!("note: shellcheck is not installed; {name} only checked by bash -n"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Linux: systemd

const UNIT: &str = "deploy/linux/steno.service";

/// A systemd unit file: (section, key, value) in file order.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not `Key=value`: {line:?}"));
            assert!(!section.is_empty(), "{line:?} before any [Section]");
            assert!(!value.ends_with('\\'), "continuation lines: {line:?}");
            entries.push((section.clone(), key.trim().into(), value.trim().into()));
        }
        Unit(entries)
    }

    fn load() -> Unit {
        Unit::parse(&read(UNIT))
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value of a key set exactly once.
    fn one(&self, section: &str, key: &str) -> &str {
        let values = self.all(section, key);
        assert_eq!(
            values.len(),
            1,
            "[{section}] {key}= set {} times",
            values.len()
        );
        values[0]
    }

    /// The value of `Environment=NAME=value` in [Service].
    fn env(&self, name: &str) -> Option<&str> {
        self.all("Service", "Environment")
            .into_iter()
            .find_map(|v| v.strip_prefix(name)?.strip_prefix('='))
    }
}

/// systemd seconds: `45`, `45s`.
fn unit_seconds(value: &str) -> u64 {
    value
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("not plain seconds: {value:?}"))
}

/// systemd bytes: `512M`, `12G` (powers of 1024).
fn unit_bytes(value: &str) -> u64 {
    let (number, unit) = value.split_at(value.len() - 1);
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => panic!("no K/M/G/T suffix: {value:?}"),
    };
    number.parse::<u64>().expect("a number of bytes") * scale
}

#[test]
fn systemd_unit_is_hardened_drains_and_is_health_gated() {
    let unit = Unit::load();
    for (key, value) in [
        ("Type", "exec"),
        (
            "ExecStart",
            "/usr/local/bin/steno serve --config ${CREDENTIALS_DIRECTORY}/steno.toml",
        ),
        // The root-only config reaches the service as a credential, and the root-only
        // environment file through systemd: the service user needs to read neither.
        ("LoadCredential", "steno.toml:/etc/steno/steno.toml"),
        ("EnvironmentFile", "-/etc/steno/steno.env"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "steno"),
        ("CacheDirectory", "steno"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(unit.one("Service", key), value, "[Service] {key}=");
    }
    assert_eq!(unit.one("Install", "WantedBy"), "multi-user.target");
    assert_eq!(unit.env("RUST_LOG"), Some("info"));
    let hf_home = unit.env("HF_HOME").expect("Environment=HF_HOME=");
    assert!(
        hf_home.starts_with("/var/cache/steno/") || hf_home.starts_with("/var/lib/steno/"),
        "HF_HOME={hf_home} is not in the unit's CacheDirectory/StateDirectory"
    );

    // Stop: longer than the drain, or systemd SIGKILLs requests about to finish.
    let stop = unit_seconds(unit.one("Service", "TimeoutStopSec"));
    assert!(
        stop > drain_seconds() + DRAIN_GRACE_SECONDS,
        "TimeoutStopSec={stop} does not outlast drain_seconds={} (+{DRAIN_GRACE_SECONDS} s)",
        drain_seconds()
    );

    // Memory: bounded, with the bound explained in terms of the batch size.
    let memory = unit_bytes(unit.one("Service", "MemoryMax"));
    assert!(memory >= 1 << 30, "MemoryMax below 1 GiB: {memory}");
    let text = read(UNIT);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("MemoryMax="))
        .unwrap();
    let comment: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with('#'))
        .copied()
        .collect();
    assert!(
        comment.iter().any(|l| l.contains("max_batch_rows")),
        "the comment above MemoryMax= does not tie it to engine.max_batch_rows"
    );

    // Readiness: a bounded curl loop on /health, on the configured port, within the start
    // timeout.
    let gate = unit.one("Service", "ExecStartPost");
    let limit = gate_limit(gate);
    assert!(
        gate.contains("curl") && gate.contains("$$HEALTH_CHECK_URL"),
        "{gate}"
    );
    assert!(
        unit_seconds(unit.one("Service", "TimeoutStartSec")) > limit,
        "TimeoutStartSec does not outlast the health gate's {limit} s"
    );
    assert_eq!(
        unit.env("HEALTH_CHECK_URL"),
        Some(format!("http://127.0.0.1:{}/health", default_config("port")).as_str())
    );

    systemd_analyze_verify(&text);
}

/// The `N` of an `ExecStartPost=/usr/bin/timeout N …` health gate.
fn gate_limit(gate: &str) -> u64 {
    gate.strip_prefix("/usr/bin/timeout ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the health gate is not `/usr/bin/timeout N …`: {gate}"))
}

/// `systemd-analyze verify` on the unit, with ExecStart pointing at this build's binary
/// (verify wants it to exist). Warnings about the unit fail like errors.
fn systemd_analyze_verify(unit_text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steno.service");
    let binary = cli::steno_binary();
    let unit_text = unit_text.replace("/usr/local/bin/steno", binary.to_str().unwrap());
    std::fs::write(&path, unit_text).unwrap();
    let Some((status, report)) = run("systemd-analyze", &["verify", path.to_str().unwrap()]) else {
        eprintln!("note: systemd-analyze is not installed; `systemd-analyze verify` skipped");
        return;
    };
    let about_unit: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("steno.service"))
        .collect();
    assert!(
        status.success() && about_unit.is_empty(),
        "systemd-analyze verify ({status}):\n{report}"
    );
}

/// Runs the unit's health gate as systemd would (`$$` → `$`), with HEALTH_CHECK_URL=`url`.
fn spawn_gate(gate: &str, url: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {}", gate.replace("$$", "$")))
        .env("HEALTH_CHECK_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the health gate")
}

#[test]
fn systemd_health_gate_waits_for_a_serving_instance() {
    let unit = Unit::load();
    let gate = unit.one("Service", "ExecStartPost");
    let limit = gate_limit(gate);
    let nothing = format!("http://127.0.0.1:{}/health", nginx::free_port());

    let mut waiting = spawn_gate(gate, &nothing);
    assert_eq!(
        cli::wait_within(&mut waiting, Duration::from_secs(3)),
        None,
        "the gate returned within 3 s with nothing listening"
    );

    // Its own time limit fails the start (shortened from {limit} s to 2 s here).
    let short = gate.replacen(&format!("timeout {limit} "), "timeout 2 ", 1);
    let started = Instant::now();
    let status = cli::wait_within(&mut spawn_gate(&short, &nothing), Duration::from_secs(10))
        .expect("the gate outlived its 2 s limit");
    assert_eq!(status.code(), Some(124), "timeout's exit status");
    assert!(started.elapsed() < Duration::from_secs(5));

    let server = Server::start(&[]);
    let status = cli::wait_within(
        &mut spawn_gate(gate, &server.url("/health")),
        Duration::from_secs(30),
    )
    .expect("the gate did not return for a serving instance");
    assert!(
        status.success(),
        "health gate on a serving instance: {status}"
    );
}

#[test]
fn linux_install_stages_a_layout_that_runs() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: the Linux installer stages Linux binaries");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let staged = |path: &str| root.path().join(path.trim_start_matches('/'));
    let install = || {
        let mut install_sh = Command::new("bash");
        install_sh
            .arg(repo().join("deploy/linux/install.sh"))
            .env("DESTDIR", root.path())
            .env("STENO_BINARY", cli::steno_binary());
        succeed(&mut install_sh, "install.sh");
    };
    install();

    let binary = staged("/usr/local/bin/steno");
    assert!(binary.is_file());
    assert_eq!(
        std::fs::read_to_string(staged("/etc/systemd/system/steno.service")).unwrap(),
        read(UNIT)
    );
    let config = staged("/etc/steno/steno.toml");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        read("config/default.toml")
    );
    let env = staged("/etc/steno/steno.env");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        read("deploy/linux/steno.env.example")
    );
    assert!(staged("/etc/steno/steno.env.example").is_file());
    // What may hold keys is root-only.
    assert_root_only(&config, root.path());
    assert_root_only(&env, root.path());

    // The unit's LD_LIBRARY_PATH finds the installed runtime (and libmlx its own bundled
    // libraries), not the checkout's.
    let unit = Unit::load();
    let lib_dir = staged(unit.env("LD_LIBRARY_PATH").expect("LD_LIBRARY_PATH"));
    let libmlx = lib_dir.join("libmlx.so");
    assert!(libmlx.is_file(), "{} missing", libmlx.display());
    let ldd = |file: &Path| {
        let output = Command::new("ldd")
            .arg(file)
            .env("LD_LIBRARY_PATH", &lib_dir)
            .output()
            .expect("run ldd");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            !text.contains("not found"),
            "ldd {}:\n{text}",
            file.display()
        );
        text
    };
    let linked = ldd(&binary);
    assert!(
        linked.contains(&format!("libmlx.so => {}", libmlx.display())),
        "libmlx.so not from the installed runtime:\n{linked}"
    );
    let bundled = ldd(&libmlx);
    let root_dir = root.path().display().to_string();
    for line in bundled.lines().filter(|l| l.contains(".libs/")) {
        assert!(line.contains(&root_dir), "outside the install: {line}");
    }

    let jfk = assets::jfk();
    let mut transcribe = Command::new(&binary);
    transcribe
        .arg("transcribe")
        .arg("--model")
        .arg(assets::model_dir(assets::TINY_EN))
        .arg(&jfk.path)
        .env("LD_LIBRARY_PATH", &lib_dir);
    let text = succeed(&mut transcribe, "installed steno transcribe");
    assert_jfk_text(&text, "installed binary");

    // Installing again (an upgrade) keeps the operator's configuration, and makes root-only
    // what an older install left world-readable.
    let edited = format!("# edited by the operator\n{}", read("config/default.toml"));
    std::fs::write(&config, &edited).unwrap();
    for file in [&config, &env] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    install();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_root_only(&config, root.path());
    assert_root_only(&env, root.path());
}

/// `file` is readable and writable by its owner only (0600), the user who ran the
/// installer (root, under sudo), as the owner of the staging directory `root` shows.
fn assert_root_only(file: &Path, root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(file).expect("stat");
    let mode = metadata.mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    let installer = std::fs::metadata(root).expect("stat").uid();
    assert_eq!(metadata.uid(), installer, "{} owner", file.display());
}

#[test]
fn env_example_names_real_configuration_keys() {
    let text = read("deploy/linux/steno.env.example");
    let keys: BTreeSet<String> = read("config/default.toml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(key, _)| format!("STENO_{}", key.trim().to_uppercase()))
        .collect();
    let mut named = 0;
    for line in text.lines() {
        let assignment = line.trim_start_matches('#');
        let Some((name, _)) = assignment.split_once('=') else {
            continue;
        };
        if name.starts_with("STENO_") && !name.contains(' ') {
            assert!(keys.contains(name), "{name} is no configuration key");
            named += 1;
        }
    }
    assert!(named >= 5, "only {named} STENO_ settings documented");
    for needed in ["MLX_BACKEND=cuda", "CUDA 13", "LD_LIBRARY_PATH=", "mlx-cpu"] {
        assert!(text.contains(needed), "steno.env.example lacks {needed:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus, alerts, Grafana

const OBSERVABILITY: [&str; 3] = [
    "deploy/observability/prometheus.yml",
    "deploy/observability/alerts.yml",
    "deploy/observability/grafana-dashboard.json",
];

/// Every `steno_*` metric named in `text`: (name, is a histogram series), with the
/// `_bucket`/`_sum`/`_count` suffixes of histogram series removed.
fn metric_names(text: &str) -> BTreeSet<(String, bool)> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("steno_") {
        let starts_word = at == 0 || {
            let before = bytes[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        if !starts_word {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix));
        names.insert(match base {
            Some(base) => (base.to_string(), true),
            None => (name, false),
        });
    }
    names
}

/// The metrics a `/metrics` exposition declares (`# TYPE name type`), with their types.
fn declared_metrics(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// About `seconds` of speech (jfk.wav repeated with short pauses) as a 16 kHz WAV.
fn long_wav(dir: &Path, seconds: f64) -> PathBuf {
    let jfk = assets::samples(&assets::jfk().path);
    let mut samples = Vec::new();
    while (samples.len() as f64) < seconds * 16_000.0 {
        samples.extend(&jfk);
        samples.resize(samples.len() + 8_000, 0.0);
    }
    let path = dir.join("long.wav");
    cli::write_wav(&path, &samples);
    path
}

/// A server that has transcribed, cancelled and rejected something, so every metric family
/// has a series: the exporter leaves out labelled families until they have one
/// (steno_rejections_total, steno_cancellations_total).
fn exercised_server_metrics() -> String {
    let dir = tempfile::tempdir().unwrap();
    let long = long_wav(dir.path(), 60.0);
    let server = Server::start(&["--max-concurrent-requests", "1"]);
    let jfk = assets::jfk();

    let mut abandoned = server.transcription(&long).spawn();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        abandoned.is_running(),
        "60 s of audio done within a second?"
    );
    server.transcribe(&jfk.path, &[]).expect_status(429);
    abandoned.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    while prometheus::sum(&server.metrics(), "steno_cancellations_total").is_none() {
        assert!(
            Instant::now() < deadline,
            "no cancellation 15 s after the client left"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The cancelled request's slot frees as its handler ends.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = server.transcribe(&jfk.path, &[]);
        if response.status == 200 {
            assert_jfk_json(&response, "after a cancellation");
            break;
        }
        assert!(Instant::now() < deadline, "still {}", response.status);
        std::thread::sleep(Duration::from_millis(250));
    }
    server.metrics()
}

#[test]
fn observability_files_name_only_exported_metrics() {
    let exposition = exercised_server_metrics();
    let declared = declared_metrics(&exposition);
    assert!(declared.len() >= 15, "few metrics declared:\n{exposition}");

    let mut named_anywhere = BTreeSet::new();
    for file in OBSERVABILITY {
        let names = metric_names(&read(file));
        let mut unknown = Vec::new();
        for (name, histogram_series) in &names {
            match declared.get(name) {
                None => unknown.push(name.clone()),
                Some(kind) if *histogram_series => {
                    assert_eq!(kind, "histogram", "{file}: {name}_bucket/_sum/_count")
                }
                Some(_) => {}
            }
            named_anywhere.insert(name.clone());
        }
        assert!(
            unknown.is_empty(),
            "{file} names metrics the server does not export: {unknown:?}\nexported: {:?}",
            declared.keys().collect::<Vec<_>>()
        );
        eprintln!("{file}: {} steno_* metrics, all exported", names.len());
    }

    let dashboard = read(OBSERVABILITY[2]);
    let on_dashboard: BTreeSet<String> = metric_names(&dashboard)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for metric in [
        "steno_requests_total",
        "steno_request_duration_seconds",
        "steno_queue_depth",
        "steno_batch_rows",
        "steno_decoder_steps_total",
        "steno_real_time_factor",
        "steno_audio_seconds_total",
        "steno_cancellations_total",
        "steno_rejections_total",
        "steno_mlx_active_memory_bytes",
        "steno_models_loaded",
    ] {
        assert!(on_dashboard.contains(metric), "no {metric} panel");
    }
    eprintln!(
        "not on any dashboard or alert: {:?}",
        declared
            .keys()
            .filter(|n| !named_anywhere.contains(*n))
            .collect::<Vec<_>>()
    );
}

/// A YAML file as JSON, through Python's PyYAML; `None` (with a note) without PyYAML.
fn yaml(relative: &str) -> Option<Value> {
    let (status, _) = run("python3", &["-c", "import yaml"]).expect("python3");
    if !status.success() {
        eprintln!("note: PyYAML is not installed; {relative} not parsed");
        return None;
    }
    Some(python_json(
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        &repo().join(relative),
    ))
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {value}"))
}

#[test]
fn alert_rules_cover_the_failure_modes() {
    let text = read(OBSERVABILITY[1]);
    let compact: String = text.split_whitespace().collect();
    for expr in [
        "steno_worker_healthy==0",
        "steno_queue_depth",
        "rate(steno_rejections_total",
        "histogram_quantile(0.95",
        "steno_request_duration_seconds_bucket",
        "steno_mlx_active_memory_bytes>",
    ] {
        assert!(compact.contains(expr), "alerts.yml has no {expr:?}");
    }
    let Some(alerts) = yaml(OBSERVABILITY[1]) else {
        return;
    };
    let mut names = BTreeSet::new();
    for group in array(&alerts["groups"], "groups") {
        for rule in array(&group["rules"], "rules") {
            let name = rule["alert"].as_str().unwrap_or_else(|| panic!("{rule}"));
            assert!(names.insert(name.to_string()), "alert {name} twice");
            let expr = rule["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{name}: no expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{name}: unbalanced parentheses in {expr}"
            );
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
        }
    }
    assert!(names.len() >= 4, "{names:?}");
}

/// The `server host:port …;` lines of `upstream steno { … }` in deploy/nginx/steno.conf:
/// (line index, address, parameters).
fn upstream_servers(conf: &str) -> Vec<(usize, String, String)> {
    let mut inside = false;
    let mut servers = Vec::new();
    for (index, line) in conf.lines().enumerate() {
        let line = line.trim();
        if line.starts_with("upstream steno {") {
            inside = true;
        } else if inside && line.starts_with('}') {
            break;
        } else if inside {
            if let Some(rest) = line.strip_prefix("server ") {
                let rest = rest.trim_end_matches(';');
                let (address, parameters) = rest.split_once(' ').unwrap_or((rest, ""));
                servers.push((index, address.to_string(), parameters.to_string()));
            }
        }
    }
    servers
}

#[test]
fn prometheus_scrapes_every_pool_instance_and_loads_the_alerts() {
    let Some(config) = yaml(OBSERVABILITY[0]) else {
        return;
    };
    assert_eq!(config["rule_files"], json!(["alerts.yml"]));
    let jobs = array(&config["scrape_configs"], "scrape_configs");
    let steno = jobs
        .iter()
        .find(|job| job["job_name"] == "steno")
        .unwrap_or_else(|| panic!("no steno job: {config}"));
    assert_eq!(steno["metrics_path"], "/metrics");
    let targets: BTreeSet<String> = array(&steno["static_configs"], "static_configs")
        .iter()
        .flat_map(|c| array(&c["targets"], "targets").clone())
        .map(|t| t.as_str().expect("target").to_string())
        .collect();
    let pool: BTreeSet<String> = upstream_servers(&read(NGINX_CONF))
        .into_iter()
        .map(|(_, address, _)| address)
        .collect();
    assert!(targets.len() >= 2, "{targets:?}");
    assert_eq!(targets, pool, "Prometheus targets vs the nginx upstream");
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dashboard: Value = serde_json::from_str(&read(OBSERVABILITY[2])).expect("JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables: Vec<&str> = array(&dashboard["templating"]["list"], "templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        variables.contains(&"datasource") && variables.contains(&"instance"),
        "{variables:?}"
    );
    let panels = array(&dashboard["panels"], "panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("panel title");
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "{title}: id");
        let targets = array(&panel["targets"], title);
        assert!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("steno_"), "{title}: query {expr:?}");
            assert!(
                expr.contains("$instance"),
                "{title}: {expr} ignores $instance"
            );
        }
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title}: wider than the grid");
        for row in y..y + h {
            for column in x..x + w {
                assert!(
                    cells.insert((row, column)),
                    "{title} overlaps another panel"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// nginx

const NGINX_CONF: &str = "deploy/nginx/steno.conf";

/// deploy/nginx/steno.conf adapted for a test.
struct Site {
    text: String,
    /// The plain-HTTP server's port (it only redirects).
    http_port: u16,
    /// The HTTPS server's port (the proxy).
    https_port: u16,
    /// Its self-signed certificate, which clients trust.
    ca: PathBuf,
}

/// deploy/nginx/steno.conf for a test: the upstream's instances replaced by `instances`
/// (`host:port`, with the file's server parameters), its two servers on free ports of
/// 127.0.0.1, a self-signed certificate and the logs in `dir`.
fn nginx_site(instances: &[&str], dir: &Path) -> Site {
    let conf = read(NGINX_CONF);
    let servers = upstream_servers(&conf);
    let (first, _, parameters) = servers
        .first()
        .unwrap_or_else(|| panic!("no server in `upstream steno` of {NGINX_CONF}"));
    let certificate = nginx::self_signed(dir);
    let http_port = nginx::free_port();
    let https_port = std::iter::repeat_with(nginx::free_port)
        .find(|port| *port != http_port)
        .expect("a second free port");
    let mut text = String::new();
    for (index, line) in conf.lines().enumerate() {
        if index == *first {
            for instance in instances {
                text.push_str(&format!("    server {instance} {parameters};\n"));
            }
            continue;
        }
        if servers.iter().any(|(i, _, _)| *i == index) {
            continue; // the file's other instances
        }
        let adapted = match line.trim() {
            "listen 80;" => format!("    listen 127.0.0.1:{http_port};"),
            "listen 443 ssl;" => format!("    listen 127.0.0.1:{https_port} ssl;"),
            other if other.starts_with("listen ") => panic!("{NGINX_CONF}: unexpected {other}"),
            other if other.starts_with("ssl_certificate ") => {
                format!("    ssl_certificate {};", certificate.certificate.display())
            }
            other if other.starts_with("ssl_certificate_key ") => {
                format!("    ssl_certificate_key {};", certificate.key.display())
            }
            _ => line.replace("/var/log/nginx/", &format!("{}/", dir.display())),
        };
        text.push_str(&adapted);
        text.push('\n');
    }
    Site {
        text,
        http_port,
        https_port,
        ca: certificate.certificate,
    }
}

/// nginx with deploy/nginx/steno.conf in front of `instances` (`host:port`).
fn start_nginx(instances: &[&str]) -> (Nginx, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = nginx_site(instances, dir.path());
    let nginx = Nginx::start(dir, &site.text, site.https_port, &site.ca);
    (nginx, site)
}

/// The pool: nginx with deploy/nginx/steno.conf in front of `servers`, once healthy.
fn pool(servers: &[&Server]) -> Nginx {
    let addresses: Vec<&str> = servers.iter().map(|s| address(s)).collect();
    let (nginx, _) = start_nginx(&addresses);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nginx.get("/health").send().status != 200 {
        assert!(Instant::now() < deadline, "the pool is not healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    nginx
}

/// A server's `host:port`.
fn address(server: &Server) -> &str {
    server.base_url().trim_start_matches("http://")
}

fn nginx_missing() -> bool {
    let missing = nginx::binary().is_none();
    if missing {
        eprintln!("skipped: nginx is not installed (apt-get install nginx; make setup does)");
    }
    missing
}

fn transcription_through(nginx: &Nginx, file: &Path) -> Request {
    nginx
        .post(TRANSCRIPTIONS)
        .file("file", file)
        .field("model", "whisper-1")
}

fn assert_jfk_text(text: &str, what: &str) {
    let reference = assets::jfk().reference;
    let rate = wer::wer(&reference, text);
    assert!(
        rate <= JFK_WER,
        "{what}: WER {:.1} %\n  reference:  {reference:?}\n  hypothesis: {text:?}",
        100.0 * rate
    );
}

fn assert_jfk_json(response: &Response, what: &str) {
    response.expect_status(200);
    let json = response.json();
    let text = json["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no text in {json}"));
    assert_jfk_text(text, what);
}

/// 200s a server counted on the transcription route.
fn transcriptions_served(server: &Server) -> f64 {
    prometheus::samples(&server.metrics(), "steno_requests_total")
        .iter()
        .filter(|s| s.label("route") == Some(TRANSCRIPTIONS) && s.label("status") == Some("200"))
        .map(|s| s.value)
        .sum()
}

/// The value of `directive` in `conf`, which sets it exactly once.
fn nginx_directive<'a>(conf: &'a str, directive: &str) -> &'a str {
    let values: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix(directive)?.strip_prefix(' '))
        .map(|v| v.trim_end_matches(';'))
        .collect();
    assert_eq!(values.len(), 1, "{NGINX_CONF}: `{directive}` {values:?}");
    values[0]
}

#[test]
fn nginx_accepts_the_site_config() {
    if nginx_missing() {
        return;
    }
    let conf = read(NGINX_CONF);
    for directive in [
        "client_max_body_size 26m;",
        "proxy_request_buffering on;",
        "proxy_buffering off;",
        "proxy_read_timeout 3600s;",
        "proxy_send_timeout 3600s;",
        "proxy_set_header X-Request-Id $steno_request_id;",
        "location = /health {",
        "location /v1/realtime {",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $steno_connection;",
        "listen 443 ssl;",
        "return 308 https://$host$request_uri;",
    ] {
        assert!(
            conf.lines().any(|l| l.trim() == directive),
            "{NGINX_CONF} lacks `{directive}`"
        );
    }
    // Retries: a refused connection or a 503, never a timeout, never a POST once sent
    // (no `non_idempotent`): a request that killed or stalled an instance is not replayed.
    assert_eq!(
        nginx_directive(&conf, "proxy_next_upstream"),
        "error http_503"
    );
    let tries: u32 = nginx_directive(&conf, "proxy_next_upstream_tries")
        .parse()
        .expect("a number of tries");
    assert!(
        (2..=3).contains(&tries),
        "proxy_next_upstream_tries {tries}"
    );
    assert_eq!(nginx_directive(&conf, "ssl_protocols"), "TLSv1.2 TLSv1.3");
    let servers = upstream_servers(&conf);
    assert!(servers.len() >= 2, "{servers:?}");
    for (_, address, parameters) in &servers {
        assert!(
            parameters.contains("max_fails=") && parameters.contains("fail_timeout="),
            "{address}: no passive health check parameters"
        );
    }

    // Two instances that are not there.
    let down = [nginx::free_port(), nginx::free_port()].map(|p| format!("127.0.0.1:{p}"));
    let down = down.each_ref().map(String::as_str);
    let dir = tempfile::tempdir().unwrap();
    let site = nginx_site(&down, dir.path());
    let report = nginx::check(dir.path(), &site.text)
        .unwrap_or_else(|report| panic!("nginx -t rejects {NGINX_CONF}:\n{report}\n{}", site.text));
    eprintln!("{}", report.trim());
    // The check is real: a bad value fails it.
    let broken = site
        .text
        .replace("proxy_buffering off;", "proxy_buffering maybe;");
    assert!(nginx::check(dir.path(), &broken).is_err());

    let (nginx, site) = start_nginx(&down);
    // Plain HTTP sends clients to HTTPS and proxies nothing.
    let plain = Request::post(format!(
        "http://127.0.0.1:{}{TRANSCRIPTIONS}",
        site.http_port
    ))
    .field("model", "whisper-1")
    .send();
    assert_eq!(plain.status, 308, "{}", plain.body);
    let location = plain.header("location").unwrap_or_default();
    assert!(
        location.starts_with("https://127.0.0.1/v1/audio/transcriptions"),
        "{location}"
    );
    // HTTPS verifies with the site's certificate, and not without it; with no instance up
    // nginx answers 502 itself.
    assert_eq!(nginx.get("/health").send().status, 502);
    let unverified = Request::get(nginx.url("/health")).spawn().wait_result();
    let error = unverified.expect_err("curl trusted a self-signed certificate");
    assert!(error.contains("certificate"), "{error}");
}

#[test]
fn nginx_streams_limits_uploads_and_carries_request_ids() {
    if nginx_missing() {
        return;
    }
    let server = Server::start(&[]);
    let nginx = pool(&[&server]);
    let jfk = assets::jfk();
    nginx.get("/metrics").send().expect_status(404);

    let named = transcription_through(&nginx, &jfk.path)
        .header("X-Request-Id: deploy-test-42")
        .send();
    assert_jfk_json(&named, "through nginx");
    assert_eq!(named.header("x-request-id"), Some("deploy-test-42"));

    let anonymous = transcription_through(&nginx, &jfk.path).send();
    assert_jfk_json(&anonymous, "through nginx, no request id");
    let id = anonymous.header("x-request-id").unwrap_or_default();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "not nginx's $request_id: {id:?}"
    );
    let needles = ["deploy-test-42", id].map(|id| format!("request_id={id}"));
    let access = nginx.log_with("steno.access.log", &needles.each_ref().map(String::as_str));
    for needle in &needles {
        assert!(
            access.contains(needle),
            "{needle} not in the access log:\n{access}"
        );
    }

    let streamed = transcription_through(&nginx, &jfk.path)
        .field("stream", "true")
        .send();
    streamed.expect_status(200);
    assert_eq!(streamed.content_type(), "text/event-stream");
    let events = streamed.sse_events();
    let done = events.last().expect("SSE events");
    assert_eq!(done["type"], "transcript.text.done", "{}", streamed.body);
    assert!(events.len() >= 2, "no delta before done: {}", streamed.body);
    assert_jfk_text(
        done["text"].as_str().unwrap_or_default(),
        "streamed via nginx",
    );

    // Past 26 MiB nginx answers 413 itself.
    let served = transcriptions_served(&server);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wav");
    std::fs::write(&big, vec![0u8; 27 << 20]).unwrap();
    let too_big = transcription_through(&nginx, &big).send();
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    let requests = prometheus::samples(&server.metrics(), "steno_requests_total");
    assert!(
        !requests.iter().any(|s| s.label("status") == Some("413")),
        "the 27 MiB upload reached Steno"
    );
    assert_eq!(transcriptions_served(&server), served);
}

#[test]
fn nginx_fails_over_a_killed_instance_without_replaying_its_request() {
    if nginx_missing() {
        return;
    }
    const PAIRS: usize = 8;
    const KILL_AT_PAIR: usize = 4;
    let victim = Server::start(&[]);
    let survivor = Server::start(&[]);
    let nginx = pool(&[&victim, &survivor]);
    let jfk = assets::jfk();

    let mut before_kill = (0.0, 0.0);
    let mut answered = 0;
    let mut lost = Vec::new();
    let started = Instant::now();
    for pair in 0..PAIRS {
        if pair == KILL_AT_PAIR {
            before_kill = (
                transcriptions_served(&victim),
                transcriptions_served(&survivor),
            );
        }
        let pending: Vec<_> = (0..2)
            .map(|_| transcription_through(&nginx, &jfk.path).spawn())
            .collect();
        if pair == KILL_AT_PAIR {
            // One of the two is on the victim (least_conn): kill it mid-transcription.
            std::thread::sleep(Duration::from_millis(500));
            let pid = victim.pid().to_string();
            let (status, output) = run("kill", &["-9", &pid]).expect("kill");
            assert!(status.success(), "kill -9 {pid}: {output}");
        }
        for (i, request) in pending.into_iter().enumerate() {
            let response = request.wait();
            let what = format!("pair {pair}, request {i}");
            if pair == KILL_AT_PAIR && response.status == 502 {
                lost.push(what);
                continue;
            }
            assert_jfk_json(&response, &what);
            answered += 1;
        }
    }
    eprintln!(
        "{answered} transcriptions through nginx in {:.1} s, all correct; 502: {lost:?}",
        started.elapsed().as_secs_f64()
    );
    // Only the request the victim died under may fail (unless it answered within the
    // 500 ms before the kill): nginx does not replay a POST it had sent.
    assert!(lost.len() <= 1, "{lost:?}");
    assert_eq!(answered + lost.len(), 2 * PAIRS);

    let (victim_before, survivor_before) = before_kill;
    assert!(
        victim_before > 0.0 && survivor_before > 0.0,
        "before the kill both instances served: {before_kill:?}"
    );
    // From the kill on the survivor served all but the victim's request, which was
    // answered by the victim or lost, not replayed onto the survivor.
    let after = transcriptions_served(&survivor) - survivor_before;
    let remaining = (2 * (PAIRS - KILL_AT_PAIR)) as f64;
    assert_eq!(
        after,
        remaining - 1.0,
        "the survivor served {after} of the last {remaining}"
    );
    // A request that found the victim gone (connection refused: nothing sent) moved on:
    // nginx logs the victim, then the survivor.
    let retried = format!("upstream=\"{}, {}\"", address(&victim), address(&survivor));
    let access = nginx.log_with("steno.access.log", &[&retried]);
    let retries: Vec<&str> = access.lines().filter(|l| l.contains(&retried)).collect();
    assert!(
        !retries.is_empty(),
        "no request moved off the killed instance ({retried}):\n{access}"
    );
    eprintln!("moved to the survivor:\n{}", retries.join("\n"));
}

// ---------------------------------------------------------------------------------------
// nginx: live sessions (WebSocket)

const REALTIME: &str = "/v1/realtime?intent=transcription";
/// How soon a client must learn that its instance died: nginx closes its connection when
/// the instance's goes, not after proxy_read_timeout.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Reads wait this long at most, so one thread can watch several sessions.
const POLL: Duration = Duration::from_millis(100);
/// Appends of this much audio.
const CHUNK_MS: usize = 100;

/// What one read of a live session brought.
enum Heard {
    /// A server event (kept in [`LiveSession::events`]).
    Event,
    /// The connection ended: a close frame (its code) or the stream's end.
    Ended(String),
    Nothing,
}

/// A Realtime transcription session through nginx (wss://, the key-less subprotocol).
struct LiveSession {
    socket: TlsWebSocket,
    /// Every server event so far.
    events: Vec<Value>,
}

impl LiveSession {
    /// Opens a session and configures it (OpenAI's current shape, server VAD, English).
    fn open(nginx: &Nginx) -> LiveSession {
        let socket = nginx
            .websocket(REALTIME, &["realtime"], POLL)
            .unwrap_or_else(|e| panic!("no live session through nginx: {e}"));
        let mut session = LiveSession {
            socket,
            events: Vec::new(),
        };
        session
            .send(&SessionOptions::default().event())
            .expect("send session.update");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !session.saw("session.updated") {
            assert!(
                Instant::now() < deadline,
                "no session.updated: {:?}",
                session.events
            );
            if let Heard::Ended(why) = session.poll() {
                panic!("the session ended before it was configured: {why}");
            }
        }
        session
    }

    fn send(&mut self, event: &Value) -> Result<(), String> {
        self.socket
            .send(tungstenite::Message::text(event.to_string()))
            .map_err(|e| e.to_string())
    }

    /// Appends `pcm` (24 kHz PCM16) in [`CHUNK_MS`] pieces, as fast as the socket takes
    /// them; the server's VAD reads the audio's own clock, not the wall clock.
    fn append(&mut self, pcm: &[u8]) -> Result<(), String> {
        let chunk = pcm24::BYTES_PER_SECOND * CHUNK_MS / 1000;
        for piece in pcm.chunks(chunk) {
            let audio = base64::engine::general_purpose::STANDARD.encode(piece);
            self.send(&json!({"type": "input_audio_buffer.append", "audio": audio}))?;
        }
        Ok(())
    }

    /// One read, waiting at most [`POLL`].
    fn poll(&mut self) -> Heard {
        match self.socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let event: Value = serde_json::from_str(&text).expect("events are JSON");
                self.events.push(event);
                Heard::Event
            }
            Ok(tungstenite::Message::Close(frame)) => {
                Heard::Ended(format!("close frame {frame:?}"))
            }
            Ok(_) => Heard::Nothing,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Heard::Nothing
            }
            Err(e) => Heard::Ended(e.to_string()),
        }
    }

    fn saw(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e["type"] == kind)
    }

    fn count(&self, kind: &str) -> usize {
        self.events.iter().filter(|e| e["type"] == kind).count()
    }

    /// Waits until every turn the server's VAD started has its transcript (at most
    /// `timeout`); returns the transcripts joined in order.
    fn transcript(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let completed = "conversation.item.input_audio_transcription.completed";
        loop {
            let started = self.count("input_audio_buffer.speech_started");
            if started > 0 && self.count(completed) >= started {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "turns not transcribed within {timeout:?}: {:?}",
                self.events
            );
            if let Heard::Ended(why) = self.poll() {
                panic!("the session ended: {why}; events {:?}", self.events);
            }
        }
        // In the order the turns were spoken: a short turn may complete before a longer
        // one before it.
        let transcript = |item: &Value| {
            self.events
                .iter()
                .find(|e| e["type"] == completed && e["item_id"] == *item)
                .and_then(|e| e["transcript"].as_str())
                .unwrap_or_default()
        };
        let texts: Vec<&str> = self
            .events
            .iter()
            .filter(|e| e["type"] == "input_audio_buffer.speech_started")
            .map(|e| transcript(&e["item_id"]))
            .collect();
        texts.join(" ")
    }
}

/// Which of `sessions` end within `within`: their indexes, when (since the call) and why,
/// reading them in turn.
fn ended_sessions(
    sessions: &mut [&mut LiveSession],
    within: Duration,
) -> Vec<(usize, Duration, String)> {
    let started = Instant::now();
    let mut ended: Vec<(usize, Duration, String)> = Vec::new();
    while started.elapsed() < within {
        for (index, session) in sessions.iter_mut().enumerate() {
            if ended.iter().any(|(i, _, _)| *i == index) {
                continue;
            }
            if let Heard::Ended(why) = session.poll() {
                ended.push((index, started.elapsed(), why));
            }
        }
    }
    ended
}

/// Word error rate allowed on JFK streamed live: the VAD cuts it into turns at its pauses,
/// and tiny.en reads a 1-second turn with less context than the whole clip.
const LIVE_JFK_WER: f64 = 0.25;

/// The transcript of JFK streamed live: within [`LIVE_JFK_WER`], with its famous phrase.
fn assert_live_jfk(text: &str, what: &str) {
    let reference = assets::jfk().reference;
    let rate = wer::wer(&reference, text);
    eprintln!("{what}: {text:?} (WER {:.1} %)", 100.0 * rate);
    assert!(
        rate <= LIVE_JFK_WER,
        "{what}: WER {:.1} %: {text:?}",
        100.0 * rate
    );
    let words = wer::normalize(text).join(" ");
    assert!(
        words.contains("ask not what your country can do for you"),
        "{what}: {text:?}"
    );
}

/// 1.5 s of digital silence at 24 kHz: ends the last turn (server VAD).
fn silence() -> Vec<u8> {
    vec![0; pcm24::BYTES_PER_SECOND * 3 / 2]
}

#[test]
fn nginx_carries_live_sessions_and_closes_those_of_a_killed_instance() {
    if nginx_missing() {
        return;
    }
    let victim = Server::start(&[]);
    let survivor = Server::start(&[]);
    let nginx = pool(&[&victim, &survivor]);
    let speech = pcm24::from_file(&assets::jfk().path);
    let (head, tail) = speech.split_at(4 * pcm24::BYTES_PER_SECOND);

    // Two sessions at once: least_conn puts one on each instance.
    let mut first = LiveSession::open(&nginx);
    let mut second = LiveSession::open(&nginx);
    for session in [&mut first, &mut second] {
        session.append(head).expect("append the first 4 s");
    }
    let pid = victim.pid().to_string();
    let (status, output) = run("kill", &["-9", &pid]).expect("kill");
    assert!(status.success(), "kill -9 {pid}: {output}");

    // The victim's session ends at once, with a close or the connection's end (no hang);
    // the survivor's goes on.
    let ended = ended_sessions(&mut [&mut first, &mut second], CLOSE_WITHIN);
    assert_eq!(
        ended.len(),
        1,
        "sessions ended within {CLOSE_WITHIN:?} of the kill: {ended:?}"
    );
    let (cut, after, why) = &ended[0];
    eprintln!(
        "session {cut} ended {:.2} s after its instance was killed: {why}",
        after.as_secs_f64()
    );
    let kept = if *cut == 0 { &mut second } else { &mut first };
    kept.append(tail).expect("append the rest");
    kept.append(&silence()).expect("append silence");
    assert_live_jfk(
        &kept.transcript(Duration::from_secs(30)),
        "the surviving session",
    );

    // The client reconnects through the same address and is served by the survivor.
    let reconnected = Instant::now();
    let mut again = LiveSession::open(&nginx);
    eprintln!(
        "reconnected in {:.2} s",
        reconnected.elapsed().as_secs_f64()
    );
    again.append(&speech).expect("append the speech");
    again.append(&silence()).expect("append silence");
    assert_live_jfk(
        &again.transcript(Duration::from_secs(30)),
        "the new session",
    );
    // nginx logs a session when it ends: the new one was upgraded by the survivor (after
    // the victim refused it, when nginx tried that first).
    let _ = again.socket.close(None);
    let closing = Instant::now();
    while !matches!(again.poll(), Heard::Ended(_)) {
        assert!(
            closing.elapsed() < CLOSE_WITHIN,
            "the session did not close"
        );
    }
    let upgraded = format!("{}\" upstream_status=", address(&survivor));
    let access = nginx.log_with("steno.access.log", &[&upgraded]);
    let last = access
        .lines()
        .rfind(|l| l.contains("GET /v1/realtime"))
        .unwrap_or_default();
    assert!(
        last.contains(" 101 ") && last.contains(&upgraded),
        "the new session's access line: {last}"
    );
    eprintln!("{last}");
}
