//! The end-to-end tests' harness: the image a test binary boots (built once per binary through
//! the build library, into that binary's own folder under target/e2e/), QEMU through the one VM
//! type (`vm`), serialised among the tests of a binary, and looking at a guest from outside
//! (SSH, HTTPS, the serial console's report lines, the disk's partition table). Every wait is
//! bounded; a failure prints the console.

pub mod release;
pub mod standin;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vm::{Config, Network, Serial, Vm};

pub use testkit::images::{own_folder, scratch_profiles};
pub use testkit::{fixtures, http, peers, tail, target, workspace};

/// The site whose image the appliance test runs (`cargo xtask test --site NAME` sets
/// MICROMIRROR_TEST_SITE; the demo otherwise).
pub fn test_site() -> String {
    std::env::var("MICROMIRROR_TEST_SITE").unwrap_or_else(|_| "demo".into())
}

/// The profile the boot tests build, named "demo": the demo itself, or, for another site, the
/// demo's test network, upstream and certificates on that site's base (distro, mirror, keys)
/// and hardware class — what its image runs, under the conditions QEMU offers.
fn test_profile() -> Result<String> {
    let site = test_site();
    let demo = testkit::images::demo_profile();
    if site == "demo" {
        return Ok(demo);
    }
    let path = testkit::images::profiles().join(format!("{site}.toml"));
    let own =
        std::fs::read_to_string(&path).with_context(|| format!("MICROMIRROR_TEST_SITE={site}: {}", path.display()))?;
    let own: toml_edit::DocumentMut = own.parse().with_context(|| format!("{}", path.display()))?;
    let mut demo: toml_edit::DocumentMut = demo.parse().context("profiles/demo.toml")?;
    if let Some(base) = own.get("base") {
        demo["base"] = base.clone();
    }
    if let Some(hw) = own.get("site").and_then(|s| s.get("hardware")) {
        demo["site"]["hardware"] = hw.clone();
    }
    Ok(demo.to_string())
}

/// The folder of the demo image this test binary boots: target/e2e/BINARY, or, within one
/// `cargo xtask test` run (MICROMIRROR_TEST_RUN), one folder the run's binaries share, so the
/// demo (the same profile, the same build time: the same bytes) is built once per run, not
/// once per binary. It holds `profiles/` and `images/demo/`.
pub fn demo_folder(binary: &str) -> PathBuf {
    match std::env::var("MICROMIRROR_TEST_RUN") {
        Ok(run) => target().join("e2e").join(format!("run-{run}")),
        Err(_) => own_folder(binary),
    }
}

/// The demo image this test binary boots, built once (whichever test, or within a run whichever
/// binary, asks first; the others wait on a lock and take it) into `demo_folder`/images/demo.
/// Only a run's own folder is ever reused: a binary's folder holds the last run's image, built
/// from sources that may have changed since.
pub fn demo_image(binary: &str) -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let own = demo_folder(binary);
            std::fs::create_dir_all(&own).expect("the demo's folder");
            let lock = std::fs::File::create(own.join(".building")).expect("the demo's lock file");
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("locking the demo's build");
            let image = own.join("images/demo/demo.img");
            if std::env::var_os("MICROMIRROR_TEST_RUN").is_some() && image.exists() {
                return image;
            }
            let profiles = scratch_profiles(&own.join("profiles"), &[("demo", test_profile().unwrap())]);
            testkit::images::build(&testkit::images::request(&own, &profiles, "demo"))
        })
        .clone()
}

/// Held by a test while its guest runs: one QEMU at a time per test binary (TCG wants both
/// cores), while the binary's other tests go on.
pub fn qemu_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The demo's network under QEMU.
pub fn demo_network() -> Network {
    let profiles = testkit::images::profiles();
    let site = build::load::load(&profiles, "demo").expect("profiles/demo.toml loads");
    Network::for_site(&site).expect("the demo's network suits QEMU")
}

/// Boots `disk` with the serial console in `serial`, ports at `port_base` (see
/// `vm::free_port_base`) and `guestfwd` rules; `reboot` lets the guest reboot itself.
pub fn boot(disk: &Path, serial: &Path, guestfwd: &[String], port_base: u16, reboot: bool) -> Vm {
    let mut config = Config::new(disk, demo_network(), Serial::File(serial.to_path_buf()));
    config.port_base = port_base;
    config.guestfwd = guestfwd.to_vec();
    config.reboot = reboot;
    Vm::start(&config).unwrap_or_else(|e| panic!("booting {}: {e:#}", disk.display()))
}

/// Looking at a booted demo from outside.
pub trait Guest {
    /// Runs `command` over SSH as the demo's admin with `key`.
    fn ssh(&self, key: &Path, extra: &[&str], command: &str) -> std::process::Output;
    /// GET over HTTPS from the forwarded 443 as `host`, verifying against `ca`.
    fn https_get(&self, ca: &Path, host: &str, path: &str) -> Option<Vec<u8>>;
}

impl Guest for Vm {
    fn ssh(&self, key: &Path, extra: &[&str], command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(key)
            .args(extra)
            .arg("-p")
            .arg(self.port(22).to_string())
            .arg("mirror@127.0.0.1")
            .arg(command)
            .output()
            .expect("ssh runs")
    }

    fn https_get(&self, ca: &Path, host: &str, path: &str) -> Option<Vec<u8>> {
        let port = self.port(443);
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg(format!("https://{host}:{port}{path}"))
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }
}

/// The demo's admin key, copied with the mode ssh demands.
pub fn admin_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    std::fs::copy(workspace().join("tests/fixtures/demo_ed25519"), &key).expect("the demo's key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    key
}

/// What the guest's sync service says about itself, for a test whose wait for a sync ran out:
/// `mirror-sync status` and the service's last journal lines, read over SSH.
pub fn sync_report(vm: &Vm, key: &Path) -> String {
    let out = vm.ssh(key, &[], "sudo mirror-sync status; sudo journalctl -u mirror-sync --no-pager -n 40");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Retries `http` until it answers or `limit` passes.
pub fn http_when_ready(port: u16, path: &str, limit: Duration) -> Result<(u16, String, Vec<u8>)> {
    let start = Instant::now();
    loop {
        match http(port, "GET", path, &[]) {
            Ok(r) => return Ok(r),
            Err(e) if start.elapsed() > limit => {
                return Err(anyhow::Error::new(e).context(format!("no HTTP answer on port {port} within {limit:?}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The partition table as sfdisk sees it: (label, start sector, size in sectors) each.
pub fn partitions(disk: &Path) -> Result<Vec<(String, u64, u64)>> {
    let out = Command::new("sfdisk").arg("--json").arg(disk).output().context("running sfdisk")?;
    if !out.status.success() {
        bail!("sfdisk --json {}: {}", disk.display(), String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let parts = v["partitiontable"]["partitions"].as_array().context("no partitions")?;
    Ok(parts
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["start"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Runs `sgdisk -v` and returns its report.
pub fn sgdisk_verify(disk: &Path) -> Result<String> {
    let out = Command::new("sgdisk").arg("-v").arg(disk).output().context("running sgdisk")?;
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Parses `key=value` fields of a console line such as MICROMIRROR-BOOT.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Where a test keeps its serial console logs: target/e2e-logs/NAME (kept after the test, so
/// a failure can be read).
pub fn console_log(name: &str) -> PathBuf {
    let dir = target().join("e2e-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Prints a step of a long test with its elapsed time, and keeps it in
/// target/e2e-logs/steps/TEST.log, where `cargo xtask test` reads every QEMU test's steps for
/// its closing table (a passing test's output is not shown).
pub fn step(test: &str, started: Instant, what: &str) {
    use std::io::Write;
    let line = format!("[{:>4} s] {what}", started.elapsed().as_secs());
    println!("{line}");
    let dir = target().join("e2e-logs/steps");
    let _ = std::fs::create_dir_all(&dir);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{test}.log")));
    if let Ok(mut log) = log {
        let _ = writeln!(log, "{line}");
    }
}

/// Starts a test's step log afresh.
pub fn steps_begin(test: &str) -> Instant {
    let _ = std::fs::remove_file(target().join("e2e-logs/steps").join(format!("{test}.log")));
    Instant::now()
}
