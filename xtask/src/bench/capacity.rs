//! `cargo xtask bench capacity`: `mirror-server capacity` on a 10-million-line access log in the
//! fleet's format (wall time and peak memory) beside the peer, awk summing the same log's bytes
//! (the least any analysis must do: read every line once); and what the live capacity
//! accounting costs on the 4 KiB workload of `bench server` (requests per second with it on and
//! off, interleaved).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::Row;
use crate::paths;

/// Writes `lines` lines of a day of traffic (Poisson-ish arrivals, a few projects, sizes from
/// index files to ISOs), once: a later run reuses the file.
fn make_log(path: &Path, lines: u64) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::with_capacity(1 << 20, fs_err::File::create(&tmp)?);
    let mut rng = fastrand::Rng::with_seed(7);
    let projects = ["fedora", "epel", "ubuntu-releases", "archlinux", "almalinux", "manjaro", "videolan", "gimp"];
    let start = 1_790_000_000i64;
    for i in 0..lines {
        let t = start + (i * 86_400 / lines) as i64;
        let when = jiff::Timestamp::from_second(t).map_err(anyhow::Error::msg)?.strftime("%d/%b/%Y:%H:%M:%S +0000");
        let p = projects[rng.usize(..projects.len())];
        let bytes = match rng.u32(..100) {
            0 => rng.u64(1 << 30..4 << 30),
            1..=30 => rng.u64(5 << 20..20 << 20),
            _ => rng.u64(1 << 10..200 << 10),
        };
        let secs = bytes as f64 / 50e6;
        writeln!(
            out,
            "198.51.100.{} - - [{when}] \"GET /{p}/pool/f{i}.rpm HTTP/1.1\" 200 {bytes} \"-\" \"libdnf (Fedora 41)\" {secs:.3} TLSv1.3",
            rng.u8(1..250)
        )?;
    }
    out.flush()?;
    drop(out);
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// Peak RSS of `program args` in MiB and its wall time, through GNU time in a fresh process.
fn timed(program: &str, args: &[&str]) -> Result<(f64, f64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .context("running /usr/bin/time")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    let mut it = last.split_whitespace();
    let wall: f64 = it.next().and_then(|v| v.parse().ok()).with_context(|| format!("GNU time said: {err}"))?;
    let kib: f64 = it.next().and_then(|v| v.parse().ok()).with_context(|| format!("GNU time said: {err}"))?;
    if !out.status.success() {
        bail!("{program} failed: {err}");
    }
    Ok((wall, kib / 1024.0))
}

pub fn run(lines: u64, seconds: u64, rounds: usize) -> Result<Vec<Row>> {
    let dir = paths::target().join("bench/capacity");
    fs_err::create_dir_all(&dir)?;
    let log = dir.join(format!("access-{lines}.log"));
    eprintln!("[bench] writing {lines} log lines to {} (once)", log.display());
    make_log(&log, lines)?;
    let server = paths::target().join("release/mirror-server");
    let log_s = log.to_str().context("a UTF-8 path")?;
    // Warm the page cache: both read the same cached bytes.
    let _ = Command::new("cat").arg(&log).stdout(Stdio::null()).status();
    let (ours_s, ours_mib) = timed(server.to_str().context("a UTF-8 path")?, &["capacity", "--from", log_s, "--json"])?;
    let (awk_s, awk_mib) = timed("awk", &["{ s += $10 } END { print s }", log_s])?;
    eprintln!("[bench] mirror-server capacity: {ours_s:.1} s, {ours_mib:.0} MiB; awk: {awk_s:.1} s, {awk_mib:.0} MiB");
    let (on, off) = super::server::accounting_cost(seconds, rounds)?;
    eprintln!("[bench] 4 KiB requests/s: accounting on {on:.0}, off {off:.0} ({:+.2} %)", (on / off - 1.0) * 100.0);
    Ok(vec![
        Row {
            workload: format!("{}M-line log: wall time", lines / 1_000_000),
            peer: awk_s,
            ours: ours_s,
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: format!("{}M-line log: peak memory", lines / 1_000_000),
            peer: awk_mib,
            ours: ours_mib,
            unit: "MiB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "4 KiB requests/s, accounting off (peer) / on".into(),
            peer: off,
            ours: on,
            unit: "req/s".into(),
            higher_is_better: true,
        },
    ])
}
