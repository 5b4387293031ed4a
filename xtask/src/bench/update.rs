//! `cargo xtask bench update`: what an update costs and how fast it lands. The peer is the
//! single-root layout of the last commit before A/B updates, built from git in a worktree in
//! the same run (image size), and a reflash (bytes: the whole .img.zst goes to the box). Ours:
//! the demo built twice on one cached base with only the profile changed (through the build
//! library, into target/bench/update/), the second build's update, and the time from publishing
//! it to the box serving the new version under QEMU (TCG, the one VM type), with the update
//! server (mirror-server) and the MQTT broker on the host.

use std::path::Path;
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
    // That commit's own xtask (the peer's pipeline), built in its worktree and run as a program.
    let sh = cmd::shell()?;
    sh.change_dir(&tree);
    let target = tree.join("target");
    cmd::run(cmd::cargo(&sh).args(["build", "--release", "-q", "-p", "xtask", "--target-dir"]).arg(&target))?;
    let status = Command::new(target.join("release/xtask"))
        .current_dir(&tree)
        .args(["image", "--site", "demo"])
        .env("CARGO_TARGET_DIR", &target)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("building {BEFORE_AB}'s image failed");
    }
    built(&tree.join("target/images/demo"))
}

/// The listing of the guest's / as text, if it answers.
fn listing(port: u16) -> Option<String> {
    testkit::http(port, "GET", "/", &[]).ok().map(|(_, _, body)| String::from_utf8_lossy(&body).into_owned())
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
fn publish_to_serving(v1_image: &Path, v2: &build::Request, work: &Path) -> Result<f64> {
    let served = work.join("served");
    fs_err::create_dir_all(&served)?;
    let server_port = testkit::free_port();
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
    let (broker, mqtt_port) = testkit::peers::mosquitto(work);
    let disk = work.join("disk.img");
    vm::disk_copy(v1_image, &disk, 64 << 30)?;
    let site = build::load::load(&v2.profiles, "demo")?;
    let mut config = vm::Config::new(&disk, vm::Network::for_site(&site)?, vm::Serial::File(work.join("serial.log")));
    config.reboot = true;
    config.fresh_vars = true;
    config.guestfwd = vec![
        format!("tcp:192.0.2.2:8080-cmd:socat - TCP:127.0.0.1:{server_port}"),
        format!("tcp:192.0.2.2:1883-cmd:socat - TCP:127.0.0.1:{mqtt_port}"),
    ];
    let mut guest = vm::Vm::start(&config)?;
    let http = guest.port(80);
    guest.wait_for_line("MICROMIRROR-BOOT", Duration::from_secs(600))?;
    wait(Duration::from_secs(60), "v1 serving", || listing(http).is_some_and(|l| l.contains("Example Networks")))?;
    let start = Instant::now();
    build::publish::publish(&build::publish::Publication {
        site: &site,
        built: &v2.out.join("update"),
        to: &served,
        keep: 2,
        epoch: v2.epoch,
        signing_home: v2.signing_home.as_deref(),
    })?;
    testkit::peers::publish(mqtt_port, "micromirror/updates/demo");
    wait(Duration::from_secs(900), "v2 serving", || {
        listing(http).is_some_and(|l| l.contains("Example Networks (bench v2)"))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    drop((guest, broker, server));
    Ok(seconds)
}

pub fn run() -> Result<Vec<Row>> {
    let work = paths::target().join("bench/update");
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(&work)?;
    let peer = before_ab()?;
    let epoch = paths::build_epoch();
    let demo = testkit::images::demo_profile();
    let v2_text = demo.replace("Example Networks", "Example Networks (bench v2)");
    let profiles_v1 = testkit::images::scratch_profiles(&work.join("profiles-v1"), &[("demo", demo)]);
    let profiles_v2 = testkit::images::scratch_profiles(&work.join("profiles-v2"), &[("demo", v2_text)]);
    eprintln!("[bench] building v1 and v2 of demo (only the profile differs)");
    let mut v1 = testkit::images::request(&work.join("v1"), &profiles_v1, "demo");
    v1.epoch = epoch;
    v1.compress = true;
    let v1_image = testkit::images::build(&v1);
    let mut v2 = testkit::images::request(&work.join("v2"), &profiles_v2, "demo");
    v2.epoch = epoch + 60;
    v2.compress = true;
    testkit::images::build(&v2);
    let (v1_sizes, v2_sizes) = (built(&v1.out)?, built(&v2.out)?);
    eprintln!("[bench] booting v1 under TCG, publishing v2");
    let serving = publish_to_serving(&v1_image, &v2, &work)?;
    let (v1, v2) = (v1_sizes, v2_sizes);
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
