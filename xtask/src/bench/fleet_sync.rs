//! `cargo xtask bench fleet-sync --boxes N`: one change of a project reaching N simulated boxes
//! (each a `mirror-sync run` with its own tree, and for the fan-out its own rsync daemon), today's
//! way (every box from the upstream) beside the fan-out (`schema::topology`: three boxes from
//! the upstream, the rest from the fleet), in the same session: the bytes the upstream sends for
//! the change and the time until every box serves it; and what a no-change check costs the
//! upstream against a full walk. Every box is rate-limited (8 Mbit/s) so a run takes seconds.
//! The fan-out runs twice: all boxes with 1 GbE links, then three of them with 10 GbE, as the
//! fleet's few T740s and R220s have (the topology lets those fetch first and feed more).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use schema::topology::{self, Carrier, Fanout, Source};

use super::peers::rsync_daemon_logged;
use super::Row;
use crate::paths;

/// The change every box fetches: this many new files of this size (7.2 MB, 7 s at 8 Mbit/s).
/// A distribution's push moves hundreds of MB to GBs, so a run's fixed costs (starting rsync,
/// the marker reads, asking the peers) weigh far less on a real box than on a 2 s change.
const NEW_FILES: usize = 6;
const NEW_FILE_BYTES: usize = 1_200_000;

/// Bytes the daemon sent, from its log's "sent N bytes" lines after `from` bytes of it.
fn sent_since(log: &Path, from: usize) -> u64 {
    let text = fs_err::read_to_string(log).unwrap_or_default();
    text.get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" sent ").and_then(|(_, r)| r.split_whitespace().next()?.parse::<u64>().ok()))
        .sum()
}

fn log_len(log: &Path) -> usize {
    fs_err::metadata(log).map(|m| m.len() as usize).unwrap_or(0)
}

fn site_toml(etc: &Path, upstream_port: u16) -> Result<()> {
    fs_err::create_dir_all(etc.join("projects"))?;
    fs_err::copy(paths::catalog().join("fixture-arch.toml"), etc.join("projects/fixture-arch.toml"))?;
    fs_err::write(
        etc.join("site.toml"),
        format!(
            "[site]\nname = \"bench\"\nhostname = \"bench.example.net\"\nsponsor_name = \"B\"\n\
             sponsor_url = \"https://example.net/\"\nlocation = {{ city = \"here\", country = \"ZZ\" }}\ntest = true\n\n\
             [network]\nipv4 = \"192.0.2.10/24\"\nipv4_gateway = \"192.0.2.1\"\ndns = [\"192.0.2.53\"]\n\n\
             [access]\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt b\"]\n\n\
             [mirror]\nupstream = \"127.0.0.1:{upstream_port}\"\nbwlimit_mbit = 8\nprojects = [\"fixture-arch\"]\nmin_free_mb = 0\n"
        ),
    )?;
    Ok(())
}

/// `mirror-sync run fixture-arch` for the box in `dir`, with its peers.
fn run_box(bin: &Path, etc: &Path, dir: &Path, peers: &[String]) -> Result<Child> {
    let mut c = Command::new(bin);
    c.arg("--config").arg(etc.join("site.toml"));
    c.arg("--mirror-root").arg(dir.join("mirror")).arg("--state-dir").arg(dir.join("state"));
    // A wait of 20 s asks the peers every half second: the runs here take seconds, not minutes.
    c.arg("--log-dir").arg(dir.join("logs")).args(["--peer-wait", "20"]);
    for p in peers {
        c.arg(format!("--peer=fixture-arch={p}"));
    }
    Ok(c.args(["run", "fixture-arch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
}

fn wait_all(children: Vec<Child>) -> Result<()> {
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("a box's run failed ({status})");
        }
    }
    Ok(())
}

/// Copies the seeded box (v1, its marker in place) to `dir`, state and all.
fn seed(template: &Path, dir: &Path) -> Result<()> {
    let _ = fs_err::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let status = Command::new("cp").arg("-a").arg(template).arg(dir).status()?;
    if !status.success() {
        bail!("copying {} to {}", template.display(), dir.display());
    }
    Ok(())
}

/// What one way of syncing cost for one change: the upstream's bytes, and the time until every
/// box had it.
struct Outcome {
    upstream_bytes: u64,
    seconds: f64,
}

pub fn run(boxes: &[usize]) -> Result<Vec<Row>> {
    let work = paths::target().join("bench/fleet-sync");
    let _ = fs_err::remove_dir_all(&work);
    let up = work.join("upstream/fixture-arch");
    // A tree of many small files, as a distribution's is: a full walk's file list has weight.
    for i in 0..3000 {
        write(&up.join(format!("core/os/x86_64/{}/old-{i}.pkg.tar.zst", i % 50)), 300, (i % 251) as u8)?;
    }
    write_text(&up.join("lastsync"), "1700000000\n")?;
    write_text(&up.join("lastupdate"), "1700000000\n")?;
    let (_upstream, port, upstream_log) = rsync_daemon_logged(&work, "fixture-arch", &up)?;
    let etc = work.join("etc");
    site_toml(&etc, port)?;
    let bin = paths::target().join("release/mirror-sync");
    let template = work.join("template");
    wait_all(vec![run_box(&bin, &etc, &template, &[])?]).context("seeding the first box")?;

    // The change: new files and a new marker.
    for i in 0..NEW_FILES {
        write(&up.join(format!("core/os/x86_64/new-{i}.pkg.tar.zst")), NEW_FILE_BYTES, 100 + i as u8)?;
    }
    write_text(&up.join("lastupdate"), "1700000600\n")?;

    // One box alone: its time and its bytes are the unit of the goals (the median of three).
    let alone = work.join("alone");
    let mut singles = Vec::new();
    for _ in 0..3 {
        seed(&template, &alone)?;
        let (from, start) = (log_len(&upstream_log), Instant::now());
        wait_all(vec![run_box(&bin, &etc, &alone, &[])?])?;
        singles
            .push(Outcome { upstream_bytes: sent_since(&upstream_log, from), seconds: start.elapsed().as_secs_f64() });
    }
    let times: Vec<String> = singles.iter().map(|o| format!("{:.1}", o.seconds)).collect();
    singles.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let single = singles.swap_remove(1);
    println!(
        "one box alone: {:.1} s (median of {} s), the upstream sent {} bytes",
        single.seconds,
        times.join(", "),
        single.upstream_bytes
    );

    let mut rows = Vec::new();
    for &n in boxes {
        let today = fleet(&work, &bin, &etc, &template, &upstream_log, n, None)?;
        let fanout = fleet(&work, &bin, &etc, &template, &upstream_log, n, Some(0))?;
        let fast = fleet(&work, &bin, &etc, &template, &upstream_log, n, Some(FAST_BOXES))?;
        let times = |o: &Outcome| o.seconds / single.seconds;
        let load = |o: &Outcome| o.upstream_bytes as f64 / single.upstream_bytes as f64;
        println!(
            "N={n}: today {:.1} s ({:.1}× one box) and {} bytes from the upstream; fan-out {:.1} s ({:.2}× one box, \
             {:.2}× today) and {} bytes ({:.1}× one box); with {FAST_BOXES} boxes on 10 GbE {:.1} s ({:.2}× one box) and \
             {} bytes ({:.1}× one box)",
            today.seconds,
            times(&today),
            today.upstream_bytes,
            fanout.seconds,
            times(&fanout),
            fanout.seconds / today.seconds,
            fanout.upstream_bytes,
            load(&fanout),
            fast.seconds,
            times(&fast),
            fast.upstream_bytes,
            load(&fast),
        );
        let mb = |b: u64| b as f64 / 1e6;
        for (label, o) in [("", &fanout), (", 3 on 10 GbE", &fast)] {
            rows.push(Row {
                workload: format!("N={n}{label}: upstream MB per change"),
                peer: mb(today.upstream_bytes),
                ours: mb(o.upstream_bytes),
                unit: "MB".into(),
                higher_is_better: false,
            });
            rows.push(Row {
                workload: format!("N={n}{label}: s until every box serves it"),
                peer: today.seconds,
                ours: o.seconds,
                unit: "s".into(),
                higher_is_better: false,
            });
        }
    }

    // A no-change check against a full walk of the same unchanged tree.
    let from = log_len(&upstream_log);
    wait_all(vec![run_box(&bin, &etc, &alone, &[])?])?;
    let check = sent_since(&upstream_log, from);
    let _ = fs_err::remove_file(alone.join("state/fixture-arch.json"));
    let from = log_len(&upstream_log);
    wait_all(vec![run_box(&bin, &etc, &alone, &[])?])?;
    let walk = sent_since(&upstream_log, from);
    rows.push(Row {
        workload: "no change: upstream bytes, walk vs marker".into(),
        peer: walk as f64,
        ours: check as f64,
        unit: "bytes".into(),
        higher_is_better: false,
    });
    println!(
        "no-change check: {check} bytes against a full walk's {walk} ({:.2} %)",
        100.0 * check as f64 / walk as f64
    );
    Ok(rows)
}

/// Boxes of the fleet with a 10 GbE link in the second fan-out.
const FAST_BOXES: usize = 3;

/// N boxes holding v1 fetch the change at once: all from the upstream (`fast` None), or by the
/// fleet's topology with `fast` of them on 10 GbE, each box serving its tree from its own rsync
/// daemon.
fn fleet(
    work: &Path,
    bin: &Path,
    etc: &Path,
    template: &Path,
    upstream_log: &Path,
    n: usize,
    fast: Option<usize>,
) -> Result<Outcome> {
    let fan_out = fast.is_some();
    let names: Vec<String> = (0..n).map(|i| format!("box{i:02}")).collect();
    let dirs: Vec<PathBuf> =
        names.iter().map(|b| work.join(if fan_out { "fanout" } else { "today" }).join(b)).collect();
    let mut daemons = Vec::new();
    let mut ports = Vec::new();
    for d in &dirs {
        seed(template, d)?;
        if fan_out {
            let (daemon, port, _) = rsync_daemon_logged(d, "fixture-arch", &d.join("mirror/fixture-arch"))?;
            daemons.push(daemon);
            ports.push(port);
        }
    }
    let carriers: Vec<Carrier> =
        names
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i < fast.unwrap_or(0) {
                    Carrier { site: b.clone(), link_mbit: 10_000 }
                } else {
                    Carrier::gigabit(b)
                }
            })
            .collect();
    let feeds = topology::plan("fixture-arch", &carriers, Fanout::default());
    let (from, start) = (log_len(upstream_log), Instant::now());
    let mut children = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let peers: Vec<String> = if fan_out {
            let feed = feeds.iter().find(|f| f.site == names[i]).context("every box has its place")?;
            feed.sources
                .iter()
                .filter_map(|s| match s {
                    Source::Peer(p) => names.iter().position(|x| x == p).map(|j| format!("127.0.0.1:{}", ports[j])),
                    Source::Upstream => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        children.push(run_box(bin, etc, d, &peers)?);
    }
    wait_all(children)?;
    let seconds = start.elapsed().as_secs_f64();
    // The daemon logs a connection's bytes when it ends: all have ended once every run has.
    Ok(Outcome { upstream_bytes: sent_since(upstream_log, from), seconds })
}

fn write(path: &Path, size: usize, seed: u8) -> Result<()> {
    if let Some(d) = path.parent() {
        fs_err::create_dir_all(d)?;
    }
    // Distinct bytes per file (rsync's --fuzzy would otherwise send a new file as a delta of an
    // old one): a small xorshift stream seeded by the file.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Ok(fs_err::write(path, bytes)?)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        fs_err::create_dir_all(d)?;
    }
    Ok(fs_err::write(path, text)?)
}
