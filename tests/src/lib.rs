//! Helpers for the end-to-end tests: build a site's image through `cargo xtask`, boot it under
//! QEMU through `cargo xtask boot`, and look at it from outside (serial console, forwarded
//! ports, the disk's partition table). Every wait is bounded; a failure prints the console.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

pub use testkit::{fixtures, http, peers, tail, target, workspace};

/// Runs `cargo xtask ARGS` from the workspace; fails with its output.
pub fn xtask(args: &[&str]) -> Result<String> {
    xtask_with(args, &[])
}

/// Runs `cargo xtask ARGS` with more variables (a profiles folder, a build time).
pub fn xtask_with(args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    let mut c = testkit::cargo();
    c.current_dir(workspace()).args(["run", "--quiet", "--package", "xtask", "--"]).args(args);
    c.env("GNUPGHOME", signing_home()?);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().context("running cargo xtask")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("cargo xtask {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

/// Builds (or rebuilds from the cached base) a site's image; returns its path. The update it
/// makes is signed with the demo's test key.
pub fn build_image(site: &str) -> Result<PathBuf> {
    xtask_with(&["image", "--site", site, "--no-compress"], &[])?;
    Ok(target().join("images").join(site).join(format!("{site}.img")))
}

/// The site whose image the boot and appliance tests run (`cargo xtask test --site NAME` sets
/// MICROMIRROR_TEST_SITE; the demo otherwise).
pub fn test_site() -> String {
    std::env::var("MICROMIRROR_TEST_SITE").unwrap_or_else(|_| "demo".into())
}

/// The image the boot and appliance tests boot, named "demo": the demo itself, or, for another
/// site, the demo's test network, upstream and certificates on that site's base (distro,
/// mirror, keys) and hardware class — what its image runs, under the conditions QEMU offers.
pub fn build_test_image() -> Result<PathBuf> {
    let site = test_site();
    if site == "demo" {
        return build_image("demo");
    }
    let own = std::fs::read_to_string(workspace().join("profiles").join(format!("{site}.toml")))
        .with_context(|| format!("MICROMIRROR_TEST_SITE={site}: no profiles/{site}.toml"))?;
    let own: toml_edit::DocumentMut = own.parse().with_context(|| format!("profiles/{site}.toml"))?;
    let mut demo: toml_edit::DocumentMut =
        std::fs::read_to_string(workspace().join("profiles/demo.toml"))?.parse().context("profiles/demo.toml")?;
    if let Some(base) = own.get("base") {
        demo["base"] = base.clone();
    }
    if let Some(hw) = own.get("site").and_then(|s| s.get("hardware")) {
        demo["site"]["hardware"] = hw.clone();
    }
    let profiles = target().join("tmp").join(format!("test-site-{site}"));
    let _ = std::fs::remove_dir_all(&profiles);
    std::fs::create_dir_all(&profiles)?;
    for sub in ["projects", "certs", "keys"] {
        let status =
            Command::new("cp").arg("-r").arg(workspace().join("profiles").join(sub)).arg(&profiles).status()?;
        if !status.success() {
            bail!("copying profiles/{sub}");
        }
    }
    std::fs::write(profiles.join("demo.toml"), demo.to_string())?;
    xtask_with(&["image", "--site", "demo", "--no-compress"], &[("MICROMIRROR_PROFILES", &profiles)])?;
    Ok(target().join("images/demo/demo.img"))
}

/// A GnuPG home holding the demo's test signing key (tests/fixtures/demo-updates.secret.asc),
/// made once under target/; the operator's own keyring is never touched.
pub fn signing_home() -> Result<PathBuf> {
    let home = target().join("tmp/gnupg-demo-updates");
    if !home.join("imported").exists() {
        std::fs::create_dir_all(&home)?;
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let secret = workspace().join("tests/fixtures/demo-updates.secret.asc");
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--quiet", "--import"])
            .arg(&secret)
            .output()?;
        if !out.status.success() {
            bail!("importing {}: {}", secret.display(), String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(home.join("imported"), b"")?;
    }
    Ok(home)
}

/// A sparse copy of `image` grown to `size` bytes, for a VM to boot and keep.
pub fn disk_copy(image: &Path, dest: &Path, size: u64) -> Result<()> {
    let status = Command::new("cp").arg("--sparse=always").arg(image).arg(dest).status()?;
    if !status.success() {
        bail!("copying {} failed", image.display());
    }
    std::fs::OpenOptions::new().write(true).open(dest)?.set_len(size)?;
    Ok(())
}

/// A base port such that base+22, +80, +443 and +873 are free on 127.0.0.1 right now.
pub fn free_port_base() -> u16 {
    let seed = std::process::id() as u16;
    for i in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(i * 37) % 400) * 100;
        if [22u16, 80, 443, 873].iter().all(|p| TcpListener::bind(("127.0.0.1", base + p)).is_ok()) {
            return base;
        }
    }
    30_000
}

/// A booted VM; killed (and its console kept) when dropped.
pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    pub port_base: u16,
}

impl Vm {
    pub fn boot(site: &str, disk: &Path, serial: &Path, guestfwd: &[String]) -> Result<Vm> {
        Vm::boot_on(site, disk, serial, guestfwd, free_port_base())
    }

    /// Boots with the host ports at `port_base` + 22/80/443/873 (see `free_port_base`), for
    /// peers that must know them before the guest starts (an ACME CA validating port 80).
    pub fn boot_on(site: &str, disk: &Path, serial: &Path, guestfwd: &[String], port_base: u16) -> Result<Vm> {
        Vm::start(site, disk, serial, guestfwd, port_base, false)
    }

    /// Boots and lets the guest reboot itself (QEMU stays up; the console log goes on).
    pub fn boot_rebooting(site: &str, disk: &Path, serial: &Path, guestfwd: &[String], port_base: u16) -> Result<Vm> {
        Vm::start(site, disk, serial, guestfwd, port_base, true)
    }

    fn start(site: &str, disk: &Path, serial: &Path, guestfwd: &[String], port_base: u16, reboots: bool) -> Result<Vm> {
        let _ = std::fs::remove_file(serial);
        let mut c = testkit::cargo();
        c.current_dir(workspace()).args(["run", "--quiet", "--package", "xtask", "--", "boot", "--site", site]);
        if !reboots {
            c.arg("--no-reboot");
        }
        c.arg("--disk").arg(disk).arg("--serial-log").arg(serial).arg("--port-base").arg(port_base.to_string());
        for g in guestfwd {
            c.arg("--guestfwd").arg(g);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting cargo xtask boot")?;
        Ok(Vm { child, serial: serial.to_path_buf(), port_base })
    }

    pub fn console(&self) -> String {
        std::fs::read(&self.serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits for a console line starting with `prefix`; returns it.
    pub fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(line) =
                self.console().lines().find_map(|l| l.find(prefix).map(|i| l[i..].trim_end().to_string()))
            {
                return Ok(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("QEMU exited ({status}) before `{prefix}` appeared; console:\n{}", tail(&self.console(), 80));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("no `{prefix}` on the console within {limit:?}; console:\n{}", tail(&self.console(), 80))
    }

    pub fn port(&self, guest: u16) -> u16 {
        self.port_base + guest
    }

    /// Waits for `ok`, failing with the console's tail after `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < limit,
                "{what} did not happen within {limit:?}; console:\n{}",
                tail(&self.console(), 60)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `command` over SSH as the demo's admin with `key`.
    pub fn ssh(&self, key: &Path, extra: &[&str], command: &str) -> std::process::Output {
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

    /// GET over HTTPS from the forwarded 443 as `host`, verifying against `ca`.
    pub fn https_get(&self, ca: &Path, host: &str, path: &str) -> Option<Vec<u8>> {
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

    /// Stops QEMU (the guest loses nothing the kernel has written; XFS and ext4 recover).
    pub fn stop(&mut self) {
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

use std::os::unix::process::CommandExt;

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
