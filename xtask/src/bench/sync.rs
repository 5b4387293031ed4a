//! `cargo xtask bench sync`: wall time of `mirror-sync run` against a bare rsync with exactly the
//! options mirror-sync plans (first sync and a no-change sync), on the same upstream tree behind
//! a loopback rsync daemon, interleaved; and the daemon's idle RSS.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::peers;
use super::{median, status_kib, Row};
use crate::cmd::{self, cmd};
use crate::paths;

fn upstream_tree(dir: &Path) -> Result<()> {
    if dir.join(".complete").exists() {
        return Ok(());
    }
    for i in 0..2000u32 {
        let sub = dir.join(format!("Packages/{}", i % 26));
        fs_err::create_dir_all(&sub)?;
        let size = 1000 + (i as usize * 7919) % 200_000;
        fs_err::write(sub.join(format!("pkg-{i}.rpm")), vec![(i % 251) as u8; size])?;
    }
    fs_err::create_dir_all(dir.join("repodata"))?;
    fs_err::write(dir.join("repodata/repomd.xml"), b"<repomd/>")?;
    fs_err::write(dir.join(".complete"), b"")?;
    Ok(())
}

fn timed(c: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let status = c.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{c:?} failed");
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(rounds: usize) -> Result<Vec<Row>> {
    let work = paths::target().join("bench/sync");
    let up = work.join("upstream/fixture-rpm");
    fs_err::create_dir_all(&up)?;
    upstream_tree(&up)?;
    let (_rsyncd, port) = peers::rsync_daemon(&work, "fixture-rpm", &up)?;
    let etc = work.join("etc");
    fs_err::create_dir_all(etc.join("projects"))?;
    fs_err::copy(paths::catalog().join("fixture-rpm.toml"), etc.join("projects/fixture-rpm.toml"))?;
    fs_err::write(etc.join("site.toml"), format!("[site]\nname = \"bench\"\nhostname = \"bench.example.net\"\nsponsor_name = \"B\"\nsponsor_url = \"https://example.net/\"\nlocation = {{ city = \"here\", country = \"ZZ\" }}\ntest = true\n\n[network]\nipv4 = \"192.0.2.10/24\"\nipv4_gateway = \"192.0.2.1\"\ndns = [\"192.0.2.53\"]\n\n[access]\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt b\"]\n\n[mirror]\nupstream = \"127.0.0.1:{port}\"\nbwlimit_mbit = 100000\nprojects = [\"fixture-rpm\"]\nmin_free_mb = 0\n"))?;
    let bin = paths::target().join("release/mirror-sync");
    let (mut first_rsync, mut first_ours, mut again_rsync, mut again_ours) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = work.join("bare");
        let b = work.join("ours");
        for d in [&a, &b, &work.join("state"), &work.join("logs")] {
            let _ = fs_err::remove_dir_all(d);
        }
        let bare_line = planned_command(&bin, &etc, &a)?;
        fs_err::create_dir_all(bare_line.last().context("an rsync destination")?)?;
        let bare = |c: &mut Vec<f64>| -> Result<()> {
            c.push(timed(Command::new(&bare_line[0]).args(&bare_line[1..]))?);
            Ok(())
        };
        let ours_cmd = || {
            let mut c = Command::new(&bin);
            c.arg("--config")
                .arg(etc.join("site.toml"))
                .arg("--mirror-root")
                .arg(&b)
                .arg("--state-dir")
                .arg(work.join("state"))
                .arg("--log-dir")
                .arg(work.join("logs"))
                .args(["run", "fixture-rpm"]);
            c
        };
        // Alternate who goes first, so page-cache and disk effects fall on both sides.
        if round % 2 == 0 {
            bare(&mut first_rsync)?;
            first_ours.push(timed(&mut ours_cmd())?);
            bare(&mut again_rsync)?;
            again_ours.push(timed(&mut ours_cmd())?);
        } else {
            first_ours.push(timed(&mut ours_cmd())?);
            bare(&mut first_rsync)?;
            again_ours.push(timed(&mut ours_cmd())?);
            bare(&mut again_rsync)?;
        }
        eprintln!(
            "[bench] round {}: first {:.2}s rsync / {:.2}s mirror-sync; no-change {:.3}s / {:.3}s",
            round + 1,
            first_rsync[round],
            first_ours[round],
            again_rsync[round],
            again_ours[round]
        );
    }
    let idle = idle_rss(&bin, &etc, &work)?;
    Ok(vec![
        Row {
            workload: "first sync (2000 files, ~200 MB), wall time".into(),
            peer: median(first_rsync),
            ours: median(first_ours),
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "no-change sync, wall time".into(),
            peer: median(again_rsync),
            ours: median(again_ours),
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "daemon idle RSS".into(),
            peer: f64::NAN,
            ours: idle as f64 / 1024.0,
            unit: "MiB".into(),
            higher_is_better: false,
        },
    ])
}

/// The command line mirror-sync plans for fixture-rpm's one pass into `root`, as `mirror-sync
/// check --json` prints it: the bare rsync runs exactly that.
fn planned_command(bin: &Path, etc: &Path, root: &Path) -> Result<Vec<String>> {
    let (sh, profile) = (cmd::shell()?, etc.join("site.toml"));
    let out = cmd::run(cmd!(sh, "{bin} --config {profile} --mirror-root {root} check --json"))?;
    let plans: serde_json::Value = serde_json::from_str(&out).context("reading `mirror-sync check --json`")?;
    let line = plans[0]["passes"][0]["command"].as_array().context("no planned pass for fixture-rpm")?;
    Ok(line.iter().filter_map(|a| a.as_str().map(str::to_string)).collect())
}

fn idle_rss(bin: &Path, etc: &Path, work: &Path) -> Result<u64> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(etc.join("site.toml"))
        .arg("--mirror-root")
        .arg(work.join("ours"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--log-dir")
        .arg(work.join("logs"))
        .args(["daemon", "--interval-hours", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(5));
    let kib = status_kib(child.id() as i32, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    Ok(kib)
}
