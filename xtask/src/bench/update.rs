//! `cargo xtask bench update`: what an update costs and how fast it lands. The peer is the
//! single-root layout of the last commit before A/B updates, built from git in a worktree in
//! the same run (image size), and a reflash (bytes: the whole .img.zst goes to the box). Ours:
//! the demo built twice on one cached base with only the profile changed, the second build's
//! update, and the time from `cargo xtask publish` to the box serving the new version under
//! QEMU (TCG), with the update server (mirror-server) and the MQTT broker on the host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Row;
use crate::{cmd, paths};

/// The last commit with the single-root layout (before the `[update]` schema).
const BEFORE_AB: &str = "1de0b5c";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs our own xtask with the demo's test signing key (tests/fixtures: the demo is a test site).
pub(super) fn xtask(args: &[&str], env: &[(&str, &Path)]) -> Result<()> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args(args).stdout(Stdio::null()).env("GNUPGHOME", signing_home()?);
    for (k, v) in env {
        c.env(k, v);
    }
    if !c.status()?.success() {
        bail!("cargo xtask {} failed", args.join(" "));
    }
    Ok(())
}

pub(super) fn signing_home() -> Result<PathBuf> {
    let home = paths::target().join("bench/gnupg-demo");
    if !home.join("pubring.kbx").exists() {
        fs_err::create_dir_all(&home)?;
        fs_err::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let secret = paths::workspace().join("tests/fixtures/demo-updates.secret.asc");
        let sh = cmd::shell()?;
        cmd::run(cmd::cmd!(sh, "gpg --batch --quiet --import {secret}").env("GNUPGHOME", &home))?;
    }
    Ok(home)
}

struct Built {
    allocated: f64,
    zst: f64,
    update: f64,
}

fn built(site_dir: &Path) -> Result<Built> {
    let m: serde_json::Value = serde_json::from_slice(&fs_err::read(site_dir.join("manifest.json"))?)?;
    let size = |f: &str| {
        m["artifacts"].as_array().and_then(|a| a.iter().find(|x| x["file"].as_str().is_some_and(|n| n.ends_with(f))))
    };
    let update: f64 =
        m["update"]["files"].as_array().map_or(0.0, |f| f.iter().filter_map(|x| x["size"].as_f64()).sum());
    Ok(Built {
        allocated: size(".img").and_then(|a| a["allocated"].as_f64()).unwrap_or(0.0),
        zst: size(".img.zst").and_then(|a| a["size"].as_f64()).unwrap_or(0.0),
        update,
    })
}

/// The demo image of the commit before A/B, built in a worktree with its own target folder.
fn before_ab() -> Result<Built> {
    let tree = paths::target().join("bench/before-ab");
    if !tree.join("Cargo.toml").exists() {
        let sh = cmd::shell()?;
        let dest = tree.display().to_string();
        cmd::run(cmd::cmd!(sh, "git worktree add --force --detach {dest} {BEFORE_AB}"))
            .context("checking out the single-root commit")?;
    }
    eprintln!("[bench] building the single-root demo of {BEFORE_AB} (its own target folder)");
    let status = Command::new("cargo")
        .current_dir(&tree)
        .args(["run", "--release", "-q", "-p", "xtask", "--", "image", "--site", "demo"])
        .env("CARGO_TARGET_DIR", tree.join("target"))
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("building {BEFORE_AB}'s image failed");
    }
    built(&tree.join("target/images/demo"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The listing of the guest's / as text, if it answers.
fn listing(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().ok()?, Duration::from_secs(2))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<f64> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Boots v1, publishes v2 and pushes; seconds until the guest serves v2's listing.
fn publish_to_serving(v1_image: &Path, profiles_v2: &Path, work: &Path) -> Result<f64> {
    let served = work.join("served");
    fs_err::create_dir_all(&served)?;
    let server_port = free_port()?;
    let server = Killed(
        Command::new(paths::target().join("release/mirror-server"))
            .arg("--root")
            .arg(&served)
            .args(["--listen", &format!("127.0.0.1:{server_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mirror-server (built by the image builds)")?,
    );
    let mqtt_port = free_port()?;
    let conf = work.join("mosquitto.conf");
    fs_err::write(&conf, format!("listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n"))?;
    let broker = Killed(Command::new("mosquitto").arg("-c").arg(&conf).stderr(Stdio::null()).spawn()?);
    let disk = work.join("disk.img");
    crate::boot::fresh_disk(v1_image, &disk, "64G")?;
    let port_base = 24_000u16;
    let log = work.join("serial.log");
    let vm = Killed(
        Command::new(std::env::current_exe()?)
            .args(["boot", "--site", "demo", "--port-base", &port_base.to_string(), "--disk"])
            .arg(&disk)
            .arg("--serial-log")
            .arg(&log)
            .args(["--guestfwd", &format!("tcp:192.0.2.2:8080-cmd:socat - TCP:127.0.0.1:{server_port}")])
            .args(["--guestfwd", &format!("tcp:192.0.2.2:1883-cmd:socat - TCP:127.0.0.1:{mqtt_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let http = port_base + 80;
    let console = || fs_err::read(&log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    wait(Duration::from_secs(600), "v1 booted", || console().contains("MICROMIRROR-BOOT"))?;
    wait(Duration::from_secs(60), "v1 serving", || listing(http).is_some_and(|l| l.contains("Example Networks")))?;
    let start = Instant::now();
    xtask(
        &["publish", "--site", "demo", "--to", &served.display().to_string()],
        &[("MICROMIRROR_PROFILES", profiles_v2)],
    )?;
    let sh = cmd::shell()?;
    let port = mqtt_port.to_string();
    cmd::run(cmd::cmd!(sh, "mosquitto_pub -h 127.0.0.1 -p {port} -t micromirror/updates/demo -m new"))?;
    wait(Duration::from_secs(900), "v2 serving", || {
        listing(http).is_some_and(|l| l.contains("Example Networks (bench v2)"))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    drop((vm, broker, server));
    Ok(seconds)
}

pub fn run() -> Result<Vec<Row>> {
    let work = paths::target().join("bench/update");
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(&work)?;
    let peer = before_ab()?;
    let epoch = crate::pipeline::outputs::build_epoch();
    let profiles_v2 = copy_profiles(&work, |t| t.replace("Example Networks", "Example Networks (bench v2)"))?;
    eprintln!("[bench] building v1 and v2 of demo (only the profile differs)");
    let at = |e: i64| PathBuf::from(e.to_string());
    xtask(&["image", "--site", "demo"], &[("SOURCE_DATE_EPOCH", &at(epoch))])?;
    let v1 = built(&paths::images("demo"))?;
    let v1_image = work.join("v1.img");
    let sh = cmd::shell()?;
    let (src, dest) = (paths::images("demo").join("demo.img"), v1_image.clone());
    cmd::run(cmd::cmd!(sh, "cp --sparse=always {src} {dest}"))?;
    xtask(
        &["image", "--site", "demo"],
        &[("SOURCE_DATE_EPOCH", &at(epoch + 60)), ("MICROMIRROR_PROFILES", &profiles_v2)],
    )?;
    let v2 = built(&paths::images("demo"))?;
    eprintln!("[bench] booting v1 under TCG, publishing v2");
    let serving = publish_to_serving(&v1_image, &profiles_v2, &work)?;
    let mb = |b: f64| b / 1e6;
    Ok(vec![
        Row {
            workload: "image allocated (single root → A/B)".into(),
            peer: mb(peer.allocated),
            ours: mb(v1.allocated),
            unit: "MB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "image compressed .zst (single root → A/B)".into(),
            peer: mb(peer.zst),
            ours: mb(v1.zst),
            unit: "MB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "download: reflash (.img.zst) vs profile-only update".into(),
            peer: mb(v2.zst),
            ours: mb(v2.update),
            unit: "MB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "publish to serving v2, TCG (goal: under 300)".into(),
            peer: 300.0,
            ours: serving,
            unit: "s".into(),
            higher_is_better: false,
        },
    ])
}

/// A copy of profiles/ with demo.toml changed, for a build that differs only there.
fn copy_profiles(work: &Path, change: impl Fn(String) -> String) -> Result<PathBuf> {
    let dest = work.join("profiles-v2");
    let sh = cmd::shell()?;
    let src = paths::profiles();
    cmd::run(cmd::cmd!(sh, "cp -r {src} {dest}"))?;
    let demo = dest.join("demo.toml");
    fs_err::write(&demo, change(fs_err::read_to_string(&demo)?))?;
    Ok(dest)
}
