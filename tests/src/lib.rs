//! Helpers for the end-to-end tests: build a site's image through `cargo xtask`, boot it under
//! QEMU through `cargo xtask boot`, and look at it from outside (serial console, forwarded
//! ports, the disk's partition table). Every wait is bounded; a failure prints the console.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod peers;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// Runs `cargo xtask ARGS` from the workspace; fails with its output.
pub fn xtask(args: &[&str]) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .output()
        .context("running cargo xtask")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("cargo xtask {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

/// Builds (or rebuilds from the cached base) a site's image; returns its path.
pub fn build_image(site: &str) -> Result<PathBuf> {
    xtask(&["image", "--site", site, "--no-compress"])?;
    Ok(target().join("images").join(site).join(format!("{site}.img")))
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
        let _ = std::fs::remove_file(serial);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.current_dir(workspace())
            .args(["run", "--quiet", "--package", "xtask", "--", "boot", "--site", site, "--no-reboot"])
            .arg("--disk")
            .arg(disk)
            .arg("--serial-log")
            .arg(serial)
            .arg("--port-base")
            .arg(port_base.to_string());
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

    /// Stops QEMU (the guest loses nothing the kernel has written; XFS and ext4 recover).
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

use std::os::unix::process::CommandExt;

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.1 request; returns (status, headers, body). Short timeouts: QEMU accepts a
/// forwarded connection before the guest listens, so "reset" or "empty" mean "not yet".
pub fn http(port: u16, method: &str, path: &str, extra: &[(&str, &str)]) -> Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse()?, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no complete response")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, head, raw[split + 4..].to_vec()))
}

/// Retries `http` until it answers or `limit` passes.
pub fn http_when_ready(port: u16, path: &str, limit: Duration) -> Result<(u16, String, Vec<u8>)> {
    let start = Instant::now();
    loop {
        match http(port, "GET", path, &[]) {
            Ok(r) => return Ok(r),
            Err(e) if start.elapsed() > limit => {
                return Err(e.context(format!("no HTTP answer on port {port} within {limit:?}")))
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

/// A binary of the workspace, built (debug) if needed: `mirror-sync`, `mirror-server`.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--quiet", "-p", "mirror-server", "--bins"])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "building mirror-server's binaries failed");
    });
    target().join("debug").join(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
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

/// A real peer (rsync daemon, mosquitto) in its own process group, killed on drop.
pub struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Waits until `what` (a peer's name, for the failure message) accepts on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn spawn_peer(cmd: &mut Command) -> Peer {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn a peer");
    Peer { child }
}

/// An rsync daemon on 127.0.0.1 serving `modules` (name, folder) read-only; returns its port.
pub fn rsync_daemon(dir: &Path, modules: &[(&str, PathBuf)]) -> (Peer, u16) {
    let port = free_port();
    let list: String =
        modules.iter().map(|(m, p)| format!("[{m}]\n  path = {}\n  read only = yes\n", p.display())).collect();
    let conf = dir.join(format!("rsyncd-{port}.conf"));
    let pid = dir.join(format!("rsyncd-{port}.pid"));
    std::fs::write(
        &conf,
        format!(
            "port = {port}\naddress = 127.0.0.1\nuse chroot = no\nnumeric ids = yes\npid file = {}\n{list}",
            pid.display()
        ),
    )
    .expect("rsyncd.conf");
    let peer = spawn_peer(
        Command::new("rsync").arg("--daemon").arg("--no-detach").arg(format!("--config={}", conf.display())),
    );
    wait_listening(port, "the rsync daemon");
    (peer, port)
}

/// A mosquitto broker on 127.0.0.1; returns its port.
pub fn mosquitto(dir: &Path) -> (Peer, u16) {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
        .expect("mosquitto.conf");
    let peer = spawn_peer(Command::new("mosquitto").arg("-c").arg(&conf));
    wait_listening(port, "mosquitto");
    (peer, port)
}

/// Publishes one MQTT message with the real client.
pub fn publish(port: u16, topic: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", "updated", "-q", "1"])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// Publishes version `version` of a Debian-style repository in `up`: one package of `size`
/// bytes in the pool and the index naming it; the previous version's package is removed.
/// Each publication is stamped ten minutes after the last, as a real archive's would be
/// (rsync's quick check compares size and mtime).
pub fn publish_debian(up: &Path, version: u32, size: usize) {
    let name = format!("pool/main/h/hello/hello_{version}_all.deb");
    write_file(&up.join(&name), &bytes(size, u64::from(version)));
    let packages = format!("Package: hello\nVersion: {version}\nFilename: {name}\nSize: {size}\n\n");
    write_file(&up.join("dists/stable/main/binary-amd64/Packages"), packages.as_bytes());
    write_file(&up.join("dists/stable/Release"), format!("Suite: stable\nVersion: {version}\n").as_bytes());
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(version) * 600);
    for f in ["dists/stable/Release", "dists/stable/main/binary-amd64/Packages"] {
        std::fs::File::options().write(true).open(up.join(f)).and_then(|f| f.set_modified(when)).expect("set mtime");
    }
    if version > 1 {
        let _ = std::fs::remove_file(up.join(format!("pool/main/h/hello/hello_{}_all.deb", version - 1)));
    }
}

/// Where a test keeps its serial console logs: target/e2e-logs/NAME (kept after the test, so
/// a failure can be read).
pub fn console_log(name: &str) -> PathBuf {
    let dir = target().join("e2e-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
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
