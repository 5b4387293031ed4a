//! The one test kit, shared by mirror-server's, mirror-sync's and the end-to-end tests: real
//! peers on loopback (`peers`), the mirror-server launcher (`server`), lab site profiles and
//! fixture trees (`fixtures`), a wall clock tests can step (`clock`), and the small waits and runners every test needs (here).
//!
//! Every wait is bounded and names what it waited for; every child process is killed when its
//! guard drops. Nothing here is a stand-in: peers are the real programs.

pub mod clock;
pub mod fixtures;
pub mod images;
pub mod peers;
pub mod server;

pub use rustix::process::Signal;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    // The kit's manifest dir is <workspace>/tests/kit.
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default()
}

pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A program of the workspace (debug build), built once per test process if needed:
/// `mirror-server`, `mirror-sync`, `mirror-update`, `xtask` (`cargo xtask` itself).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = cargo()
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "-p",
                "mirror-server",
                "-p",
                "mirror-sync",
                "-p",
                "mirror-update",
                "-p",
                "xtask",
                "--bins",
            ])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "building the workspace's programs failed");
    });
    target().join("debug").join(name)
}

/// A nested `cargo` as a developer would type it, without the variables cargo set for this
/// process (`build::cmd::set_by_cargo` says which, for every nested cargo of the workspace).
pub fn cargo() -> Command {
    let mut c = Command::new(build::cmd::cargo_program());
    for name in build::cmd::set_by_cargo() {
        c.env_remove(name);
    }
    c
}

/// The SHA-256 of a file's bytes, as hex.
pub fn sha256_file(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    image::digest::sha256_hex(file).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits until `what` (a peer's name, for the failure message) accepts on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) {
    wait_for(Duration::from_secs(20), &format!("{what} to listen on {port}"), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Polls `probe` until it gives a value; panics naming `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file's text once it holds `needle`, or what it holds after `limit` (for a later assert
/// to show).
pub fn file_with(path: &Path, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > limit {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns (status, head, body). Short connect
/// timeout: QEMU accepts a forwarded connection before the guest listens, so a reset or an
/// empty reply means "not yet".
pub fn http(port: u16, method: &str, path: &str, extra: &[(&str, &str)]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "no complete response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((status, head, raw[split + 4..].to_vec()))
}

/// Sends raw bytes to 127.0.0.1:`port`, reads until the server closes or `limit` passes.
pub fn raw(port: u16, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(limit)).expect("read timeout");
    s.write_all(request).expect("send the request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The body of a raw response: everything after the head.
pub fn body_of(response: &[u8]) -> &[u8] {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    &response[head_end + 4..]
}

pub fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
