//! mirror-server started by hand on loopback for the tests that talk to it: plain HTTP on
//! 127.0.0.1:PORT, its access log and its stderr in files beside the served root. Killed when
//! the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::{bin, free_port, http, wait_listening};

pub struct MirrorServer {
    child: Child,
    pub port: u16,
    /// The access log (`root/../access-PORT.log`).
    pub log: PathBuf,
    /// What the server wrote to stderr (`root/../server-PORT.err`).
    pub errors: PathBuf,
}

impl MirrorServer {
    /// Starts mirror-server on `root` with extra arguments; waits until it accepts.
    pub fn start(root: &Path, extra: &[&str]) -> MirrorServer {
        MirrorServer::start_on(root, free_port(), extra)
    }

    /// Starts mirror-server with its plain HTTP listener on `port`.
    pub fn start_on(root: &Path, port: u16, extra: &[&str]) -> MirrorServer {
        MirrorServer::start_with(root, port, extra, &[])
    }

    /// Starts mirror-server on `port` with more variables in its environment (e.g. a clock).
    pub fn start_with(root: &Path, port: u16, extra: &[&str], env: &[(&str, String)]) -> MirrorServer {
        let beside = root.parent().unwrap_or(root);
        let log = beside.join(format!("access-{port}.log"));
        let errors = beside.join(format!("server-{port}.err"));
        let child = Command::new(bin("mirror-server"))
            .arg("--root")
            .arg(root)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--access-log"])
            .arg(&log)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).expect("server error log"))
            .spawn()
            .expect("mirror-server starts");
        wait_listening(port, "mirror-server");
        MirrorServer { child, port, log, errors }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_child(&self.child)
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill_process(self.pid(), sig);
    }

    /// Waits for the process to exit; `None` if it still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
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

impl Drop for MirrorServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs Debian's `promtool check metrics` over a metrics listener's exposition: it must find
/// no problem (every family with HELP and TYPE, well-formed names and labels). Returns the text.
pub fn promtool_checked(port: u16) -> String {
    use std::io::Write;
    let (status, _, body) = http(port, "GET", "/metrics", &[]).expect("the metrics listener answers");
    assert_eq!(status, 200);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    child.stdin.take().expect("promtool's stdin").write_all(&body).expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics found problems:\n{}{}\nin:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of a metric (a line `NAME VALUE`) from a metrics listener.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, _, body) = http(port, "GET", "/metrics", &[]).ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
