//! Runs the real nginx in front of test servers (the load-balancer tests of
//! `deploy/nginx/steno.conf`).
//!
//! A site configuration (directives for nginx's `http {}` block) is wrapped in a main
//! `nginx.conf` of a single foreground process (`master_process off`, `daemon off`) whose
//! pid file, logs and temporary files all live in one directory. [`check`] runs `nginx -t`
//! on it; [`Nginx::start`] runs it until the [`Nginx`] is dropped. Clients reach it over
//! HTTPS with a certificate from [`self_signed`], and live sessions over `wss://`
//! ([`Nginx::websocket`]).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use crate::server::Request;

/// How long nginx may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx executable (`nginx` on `PATH`, or Debian's `/usr/sbin/nginx`); `None` when it
/// is not installed.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// Writes `dir/site.conf` (`site`) and `dir/nginx.conf` (the main file including it);
/// returns the main file's path.
fn write_config(dir: &Path, site: &str) -> PathBuf {
    let site_path = dir.join("site.conf");
    std::fs::write(&site_path, site).expect("write site.conf");
    let d = dir.display();
    let site_path = site_path.display();
    // One foreground process (no workers to orphan when the test kills it).
    let main = format!(
        "master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log {d}/access.log;
    include {site_path};
}}
"
    );
    let main_path = dir.join("nginx.conf");
    std::fs::write(&main_path, main).expect("write nginx.conf");
    main_path
}

/// nginx's arguments for the main file `conf` in `dir`: prefix, startup error log, file.
fn args(dir: &Path, conf: &Path) -> Vec<PathBuf> {
    vec![
        "-p".into(),
        dir.into(),
        "-e".into(),
        dir.join("error.log"),
        "-c".into(),
        conf.into(),
    ]
}

/// `nginx -t` on `site` wrapped as described in the module documentation, in `dir`:
/// `Ok` with nginx's report when it accepts the configuration, `Err` with it otherwise.
/// Panics when nginx is not installed.
pub fn check(dir: &Path, site: &str) -> Result<String, String> {
    let conf = write_config(dir, site);
    let output = Command::new(binary().expect("nginx is not installed"))
        .arg("-t")
        .args(args(dir, &conf))
        .output()
        .expect("run nginx -t");
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// A certificate and its private key (PEM files).
pub struct Certificate {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A self-signed certificate for 127.0.0.1 and localhost (an ECDSA P-256 key: fast to
/// generate), written into `dir` by `openssl req -x509`. Clients trust it as its own
/// anchor.
pub fn self_signed(dir: &Path) -> Certificate {
    let certificate = Certificate {
        certificate: dir.join("test-certificate.pem"),
        key: dir.join("test-key.pem"),
    };
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A server certificate, not a CA (openssl's default): rustls refuses a CA
        // certificate as a server's own; curl trusts either.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&certificate.key)
        .arg("-out")
        .arg(&certificate.certificate)
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        output.status.success(),
        "openssl req -x509: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    certificate
}

/// A WebSocket over TLS to nginx (see [`Nginx::websocket`]).
pub type TlsWebSocket =
    tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A TLS client that trusts only the certificate in the PEM file `ca`.
fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certificate =
        CertificateDer::from_pem_file(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    roots.add(certificate).expect("a usable CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A running nginx; killed on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// The certificate the clients trust.
    ca: PathBuf,
}

impl Nginx {
    /// Starts nginx with `site`, which must serve HTTPS on 127.0.0.1:`port` with a
    /// certificate that `ca` verifies (a [`self_signed`] one) and may keep its logs in `dir`
    /// (which the [`Nginx`] then owns), and waits until it accepts connections.
    pub fn start(dir: tempfile::TempDir, site: &str, port: u16, ca: &Path) -> Nginx {
        let conf = write_config(dir.path(), site);
        let child = Command::new(binary().expect("nginx is not installed"))
            .args(args(dir.path(), &conf))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            child,
            dir,
            port,
            ca: ca.to_path_buf(),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.log("error.log"));
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "nginx not listening on {port} after {STARTUP_TIMEOUT:?}:\n{}",
                nginx.log("error.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// `https://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A GET of `path` that verifies nginx's certificate.
    pub fn get(&self, path: &str) -> Request {
        Request::get(self.url(path)).arg("--cacert").arg(&self.ca)
    }

    /// A POST to `path` that verifies nginx's certificate.
    pub fn post(&self, path: &str) -> Request {
        Request::post(self.url(path)).arg("--cacert").arg(&self.ca)
    }

    /// A WebSocket to `path` through nginx (`wss://`, verifying its certificate), offering
    /// `protocols` (`Sec-WebSocket-Protocol`); reads block for at most `read_timeout`.
    /// `Err` with the reason when the connection or the handshake fails.
    pub fn websocket(
        &self,
        path: &str,
        protocols: &[&str],
        read_timeout: Duration,
    ) -> Result<TlsWebSocket, String> {
        let mut request = format!("wss://127.0.0.1:{}{path}", self.port)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        if !protocols.is_empty() {
            let offered =
                HeaderValue::from_str(&protocols.join(", ")).map_err(|e| e.to_string())?;
            request
                .headers_mut()
                .insert("sec-websocket-protocol", offered);
        }
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(read_timeout))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").expect("an IP address");
        let tls =
            rustls::ClientConnection::new(tls_config(&self.ca), name).map_err(|e| e.to_string())?;
        let stream = rustls::StreamOwned::new(tls, tcp);
        let (socket, _) = tungstenite::client::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e.to_string(),
            tungstenite::HandshakeError::Interrupted(_) => "handshake timed out".to_string(),
        })?;
        Ok(socket)
    }

    /// The log file `name` in [`Nginx::dir`] (empty when absent).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The log file `name` once every one of `needles` is in it, or as it is after 5 s:
    /// nginx writes a request's access line after the client has its response.
    pub fn log_with(&self, name: &str, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = self.log(name);
            if needles.iter().all(|n| log.contains(n)) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The main error log and whatever logs the site keeps here.
            let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            for path in logs {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- nginx {}, last lines ---\n{}\n---",
                    path.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }
}
