//! Driving `cargo xtask release` from a test: the command in the background with its output in
//! a file (killed if the test ends first), and a canned canary: mirror-server's own metrics
//! exporter reading an update status file the test writes, as mirror-update writes it on a box.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use schema::update_status::{OtherSlot, UpdateStatus};
use testkit::server::MirrorServer;
use testkit::{bin, free_port, wait_listening};

/// `cargo xtask release ARGS…` running, signing with the demo's test key.
pub struct ReleaseRun {
    child: Child,
    pub log: PathBuf,
}

impl ReleaseRun {
    pub fn start(args: &[String], log: &Path) -> ReleaseRun {
        let child = Command::new(bin("xtask"))
            .arg("release")
            .args(args)
            .env("GNUPGHOME", testkit::images::demo_signing_home())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).expect("the release's log"))
            .stderr(std::fs::File::options().append(true).open(log).expect("the release's log"))
            .spawn()
            .expect("cargo xtask release starts");
        ReleaseRun { child, log: log.to_path_buf() }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `ok` holds; panics with the release's output if it ends first or `limit` passes.
    pub fn wait_until(&mut self, limit: Duration, what: &str, mut ok: impl FnMut(&str) -> bool) {
        let start = Instant::now();
        loop {
            let out = self.output();
            if ok(&out) {
                return;
            }
            assert!(self.running(), "the release ended before {what}:\n{out}");
            assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}; the release said:\n{out}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits for the end: (whether it succeeded, what it printed).
    pub fn finish(mut self, limit: Duration) -> (bool, String) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.success(), self.output());
            }
            assert!(start.elapsed() < limit, "the release still runs after {limit:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for ReleaseRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A canary that is no box: its metrics listener says what `report` last wrote.
pub struct CannedCanary {
    _server: MirrorServer,
    update_dir: PathBuf,
    /// HOST:PORT of its metrics, for `--address SITE=…`.
    pub metrics: String,
}

impl CannedCanary {
    /// Starts it in `dir`, running `version`, blessed.
    pub fn start(dir: &Path, version: &str) -> CannedCanary {
        let (root, state) = (dir.join("canned-root"), dir.join("canned-state"));
        std::fs::create_dir_all(&root).expect("the canned canary's root");
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let state_arg = state.display().to_string();
        let server = MirrorServer::start(&root, &["--metrics-listen", &metrics, "--state-dir", &state_arg]);
        wait_listening(port, "the canned canary's metrics");
        let canary = CannedCanary { _server: server, update_dir: state.join("update"), metrics };
        canary.report(version, true, None);
        canary
    }

    /// What mirror-update would have written: running `version` (blessed or not), and the other
    /// slot, e.g. `Some((v, OtherSlot::Failed))` after a rollback.
    pub fn report(&self, version: &str, blessed: bool, other: Option<(&str, OtherSlot)>) {
        let mut status = UpdateStatus::fresh(version);
        status.running_blessed = blessed;
        if let Some((v, slot)) = other {
            status.other_version = Some(v.to_string());
            status.other_slot = slot;
        }
        schema::update_status::write(&self.update_dir, &status).expect("writing the canned update status");
    }
}

/// The newest version `served/SITE/` offers, as text.
pub fn offered(served: &Path, site: &str) -> Option<String> {
    build::publish::offered(served, site).expect("reading a published tree").map(|v| v.to_string())
}

/// The version a build's output folder (images/SITE) holds, as text.
pub fn built(images: &Path, site: &str) -> String {
    build::publish::built_version(&images.join(site).join("update")).expect("a built update").to_string()
}
