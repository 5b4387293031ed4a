//! Starting the real binaries on loopback for the client tests, and small helpers. Every wait
//! is bounded and every child process is killed when its guard drops.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct Server {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts mirror-server on `root` with extra arguments; waits until it accepts.
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Server::start_on(root, free_port(), extra)
    }

    /// Starts mirror-server with its plain HTTP listener on `port`.
    pub fn start_on(root: &Path, port: u16, extra: &[&str]) -> Server {
        let log = root.parent().unwrap_or(root).join(format!("access-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_mirror-server"))
            .arg("--root")
            .arg(root)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--access-log")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mirror-server starts");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "mirror-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes, reads until the server closes or `limit` passes.
pub fn raw(port: u16, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
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

/// Runs a client command; panics with its output when it fails.
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

/// Deterministic pseudo-random bytes (xorshift), so large fixtures need no RNG crate.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The access log once it holds `needle` (lines are flushed every half second), or what it
/// holds after `limit`.
pub fn log_with(path: &Path, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > limit {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mirror-sync status file saying `project` takes `size_bytes` on disk (the real type, so the
/// test follows the format).
pub fn write_status(dir: &Path, project: &str, size_bytes: u64) {
    use mirror_server::sync::status::{self, Outcome, Status};
    let st = Status { state: Outcome::Success, size_bytes, ..Status::running(project, project, 0) };
    status::write(dir, &st).expect("status file written");
}
