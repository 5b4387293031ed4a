//! `cargo xtask bench update`: what an update costs and how fast it lands, against the
//! layout before the read-only root (`parent::PARENT`: ext4 root slots) built from git in the
//! same run. Each side: the demo built twice, only the profile changed (ours through the build
//! library into target/bench/update/, the parent through its own xtask), the second build's
//! update, and the time from publishing it to the box serving the new version under QEMU (TCG,
//! the one VM type), with the update server (mirror-server) and the MQTT broker on the host.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{parent, Row};
use crate::paths;

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
    /// What root slot A holds: the ext4 file system (parent) or the EROFS image and its hash
    /// tree (ours).
    root: f64,
}

fn built(site_dir: &Path) -> Result<Built> {
    let m: serde_json::Value = serde_json::from_slice(&fs_err::read(site_dir.join("manifest.json"))?)?;
    let size = |f: &str| {
        m["artifacts"].as_array().and_then(|a| a.iter().find(|x| x["file"].as_str().is_some_and(|n| n.ends_with(f))))
    };
    let update: f64 =
        m["update"]["files"].as_array().map_or(0.0, |f| f.iter().filter_map(|x| x["size"].as_f64()).sum());
    let slot = &m["layout"]["root_a"];
    Ok(Built {
        root: slot["image"].as_f64().or(slot["filesystem"].as_f64()).unwrap_or(0.0),
        allocated: size(".img").and_then(|a| a["allocated"].as_f64()).unwrap_or(0.0),
        zst: size(".img.zst").and_then(|a| a["size"].as_f64()).unwrap_or(0.0),
        update,
    })
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

/// Boots `v1_image`, publishes v2 (the update folder `v2_update`, of the site in `profiles`) and
/// pushes; seconds until the guest serves v2's listing.
fn publish_to_serving(v1_image: &Path, profiles: &Path, v2_update: &Path, work: &Path) -> Result<f64> {
    fs_err::create_dir_all(work)?;
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
    let site = build::load::load(profiles, "demo")?;
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
        built: v2_update,
        to: &served,
        keep: 2,
        epoch: paths::build_epoch() + 60,
        signing_home: Some(&testkit::images::demo_signing_home()),
    })?;
    testkit::peers::publish(mqtt_port, "micromirror/updates/demo");
    wait(Duration::from_secs(900), "v2 serving", || {
        listing(http).is_some_and(|l| l.contains("Example Networks (bench v2)"))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    drop((guest, broker, server));
    Ok(seconds)
}

const V2_SPONSOR: &str = "Example Networks (bench v2)";

/// A copy of the profiles folder `from` whose demo names the v2 sponsor.
fn v2_profiles(from: &Path, to: &Path) -> Result<()> {
    let _ = fs_err::remove_dir_all(to);
    let ok = Command::new("cp").arg("-r").arg(from).arg(to).status()?.success();
    if !ok {
        bail!("copying {} to {}", from.display(), to.display());
    }
    let demo = to.join("demo.toml");
    let text = fs_err::read_to_string(&demo)?.replace("Example Networks", V2_SPONSOR);
    fs_err::write(&demo, text)?;
    Ok(())
}

pub fn run() -> Result<Vec<Row>> {
    let work = paths::target().join("bench/update");
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(&work)?;
    let epoch = paths::build_epoch();

    let parent_v2_profiles = work.join("parent-profiles-v2");
    v2_profiles(&parent::profiles()?, &parent_v2_profiles)?;
    let (parent_v1, parent_v2) = (work.join("parent-v1"), work.join("parent-v2"));
    parent::build("demo", None, epoch, &parent_v1)?;
    parent::build("demo", Some(&parent_v2_profiles), epoch + 60, &parent_v2)?;

    let demo = testkit::images::demo_profile();
    let v2_text = demo.replace("Example Networks", V2_SPONSOR);
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

    eprintln!("[bench] the parent: booting v1 under TCG, publishing v2");
    let parent_serving = publish_to_serving(
        &parent_v1.join("demo.img"),
        &parent_v2_profiles,
        &parent_v2.join("update"),
        &work.join("parent-run"),
    )?;
    eprintln!("[bench] ours: booting v1 under TCG, publishing v2");
    let serving = publish_to_serving(&v1_image, &profiles_v2, &v2.out.join("update"), &work.join("our-run"))?;
    let (peer_v1, peer_v2) = (built(&parent_v1)?, built(&parent_v2)?);
    let (v1, v2) = (built(&v1.out)?, built(&v2.out)?);
    let mb = |b: f64| b / 1e6;
    let row = |workload: &str, peer: f64, ours: f64, unit: &str| Row {
        workload: workload.into(),
        peer,
        ours,
        unit: unit.into(),
        higher_is_better: false,
    };
    Ok(vec![
        row("root slot content (ext4 → EROFS+verity)", mb(peer_v1.root), mb(v1.root), "MB"),
        row("image allocated", mb(peer_v1.allocated), mb(v1.allocated), "MB"),
        row("image compressed .zst", mb(peer_v1.zst), mb(v1.zst), "MB"),
        row("download of a profile-only update", mb(peer_v2.update), mb(v2.update), "MB"),
        row("publish to serving v2, TCG", parent_serving, serving, "s"),
    ])
}
