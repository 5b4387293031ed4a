//! The world mirror-sync's tests run in: an upstream tree behind a real rsync daemon (started
//! with the world, or later to play an upstream that is down), a lab site profile pointing at
//! it, the local mirror root, state and log folders, and the daemon under test with its log.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid};
use testkit::fixtures::LabProfile;
use testkit::peers::{rsync_daemon_on, Peer};
use testkit::Signal;

pub const PROJECTS: &[&str] = &["fixture-debian", "fixture-rpm", "fixture-arch"];

pub struct World {
    pub dir: tempfile::TempDir,
    pub port: u16,
    rsyncd: Option<Peer>,
}

impl World {
    pub fn new() -> World {
        World::with(|_| {})
    }

    /// A world whose profile gets more `[mirror]` keys from `extra_mirror`.
    pub fn with(extra_mirror: impl Fn(&mut String)) -> World {
        let mut w = World::with_upstream_down(extra_mirror);
        w.start_upstream();
        w
    }

    /// A world whose upstream is not running yet: its port is reserved, nothing listens.
    pub fn with_upstream_down(extra_mirror: impl Fn(&mut String)) -> World {
        let dir = tempfile::tempdir().unwrap();
        for p in PROJECTS {
            std::fs::create_dir_all(dir.path().join("upstream").join(p)).unwrap();
        }
        let port = testkit::free_port();
        let mut mirror = String::from("min_free_mb = 0\n");
        extra_mirror(&mut mirror);
        LabProfile::with_catalog_projects(PROJECTS)
            .upstream(&format!("127.0.0.1:{port}"))
            .mirror_extra(&mirror)
            .write(&dir.path().join("etc"));
        World { dir, port, rsyncd: None }
    }

    pub fn start_upstream(&mut self) {
        let modules: Vec<(&str, PathBuf)> = PROJECTS.iter().map(|p| (*p, self.upstream(p))).collect();
        self.rsyncd = Some(rsync_daemon_on(self.dir.path(), self.port, &modules));
    }

    /// The upstream goes away (its daemon killed, connections cut).
    pub fn stop_upstream(&mut self) {
        self.rsyncd = None;
    }

    pub fn upstream(&self, project: &str) -> PathBuf {
        self.dir.path().join("upstream").join(project)
    }

    pub fn local(&self, project: &str) -> PathBuf {
        self.mirror_root().join(project)
    }

    pub fn mirror_root(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn sync_cmd(&self) -> Command {
        let mut c = Command::new(testkit::bin("mirror-sync"));
        c.arg("--config").arg(self.dir.path().join("etc/site.toml"));
        c.arg("--mirror-root").arg(self.mirror_root());
        c.arg("--state-dir").arg(self.state());
        c.arg("--log-dir").arg(self.dir.path().join("logs"));
        c.args(["--retry-base", "1"]);
        c
    }

    pub fn run(&self, project: &str) -> (bool, String) {
        let out = self.sync_cmd().args(["run", project]).stdin(Stdio::null()).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// `mirror-sync status --json`, as an operator's script would read it.
    pub fn status_json(&self) -> Vec<serde_json::Value> {
        let out = self.sync_cmd().args(["status", "--json"]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "mirror-sync status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self, project: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state().join(format!("{project}.json"))).unwrap()).unwrap()
    }

    /// The status file's field once `ok` holds for it (the file may not exist yet).
    pub fn wait_status(
        &self,
        project: &str,
        limit: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let file = self.state().join(format!("{project}.json"));
        testkit::wait_for(limit, &format!("{project}: {what}"), || {
            let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok()?;
            ok(&st).then_some(st)
        })
    }

    pub fn runs_logged(&self, project: &str) -> usize {
        std::fs::read_dir(self.dir.path().join("logs"))
            .map(|rd| {
                rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{project}-"))).count()
            })
            .unwrap_or(0)
    }

    /// `mirror-sync daemon` with `extra` arguments and its log in the world.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        self.daemon_with(extra, &[])
    }

    /// The daemon with more variables in its environment (e.g. a stepped clock).
    pub fn daemon_with(&self, extra: &[&str], env: &[(&str, String)]) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", testkit::free_port()));
        let mut c = self.sync_cmd();
        c.arg("daemon").args(extra).env("RUST_LOG", "info").envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
}

/// The daemon under test; killed with its rsync children when dropped.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` at least `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        while self.text().matches(needle).count() < count {
            assert!(start.elapsed() < limit, "waited {limit:?} for {count}× `{needle}`:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the daemon's own process only (not its rsync children).
    pub fn signal(&self, signal: Signal) {
        rustix::process::kill_process(Pid::from_child(&self.child), signal).unwrap();
    }

    pub fn kill(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
