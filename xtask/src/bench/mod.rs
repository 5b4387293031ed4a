//! `cargo xtask bench server|image|sync|fleet-sync|update|fleet|capacity`: speed and memory, always beside a peer run in the
//! same session (nginx, a bare rsync, the reference image builder's published figures), as
//! ratios. Benchmarks are not tests: they print, they do not pass or fail.

pub mod capacity;
pub mod fleet;
pub mod fleet_sync;
pub mod image;
pub mod parent;
pub mod peers;
pub mod server;
pub mod sync;
pub mod update;

use anyhow::Result;
use clap::Subcommand;

use crate::host;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// mirror-server against nginx (fleet configuration), wrk and a 4 MiB-read client
    Server {
        /// Seconds per run
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Interleaved rounds per workload (medians are reported)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only the workloads whose name contains this (e.g. "HTTPS")
        #[arg(long)]
        only: Option<String>,
    },
    /// Cold and warm image builds, sizes, and boot time to the first HTTP 200
    Image,
    /// mirror-sync against a bare rsync with the same options, and the daemon's idle RSS
    Sync {
        /// Interleaved rounds of each side (medians are reported)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Updates against the read-write ext4 layout of the parent commit: root slot and image
    /// sizes, bytes a profile-only update downloads, publish to serving it under QEMU
    Update,
    /// `mirror-server capacity` on a 10-million-line log against awk reading it; the live
    /// accounting's cost on the 4 KiB workload
    Capacity {
        /// Lines of the generated fleet log
        #[arg(long, default_value_t = 10_000_000)]
        lines: u64,
        /// Seconds per run of the 4 KiB workload (accounting on, then off)
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Interleaved rounds of the 4 KiB workload (medians are reported)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One change reaching N simulated boxes: every box from the upstream (today) beside the
    /// fan-out (three from the upstream, the rest from the fleet): upstream bytes and time
    FleetSync {
        /// Fleet sizes, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "6,20,44")]
        boxes: Vec<usize>,
    },
    /// Many sites from one cached base (`image --sites`) against one site built alone, as one
    /// after another would cost
    Fleet {
        /// How many sites
        #[arg(long, default_value_t = 44)]
        sites: usize,
    },
}

pub struct Row {
    pub workload: String,
    pub peer: f64,
    pub ours: f64,
    pub unit: String,
    pub higher_is_better: bool,
}

pub fn run(command: BenchCommand) -> Result<()> {
    let (title, peer, rows) = match command {
        BenchCommand::Server { seconds, rounds, only } => {
            host::ensure(&[host::BENCH])?;
            build::binaries::cargo_build_release(&crate::paths::target())?;
            ("mirror-server vs nginx", "nginx", server::run(&server::Options { seconds, rounds, only })?)
        }
        BenchCommand::Image => {
            host::ensure(&[host::IMAGE_DEBIAN, host::BOOT])?;
            ("image pipeline", "mkosi 14 (reference)", image::run()?)
        }
        BenchCommand::Update => {
            host::ensure(&[host::IMAGE_DEBIAN, host::BOOT, host::BENCH])?;
            ("updates", "ext4 slots (parent)", update::run()?)
        }
        BenchCommand::Capacity { lines, seconds, rounds } => {
            host::ensure(&[host::BENCH])?;
            build::binaries::cargo_build_release(&crate::paths::target())?;
            ("capacity", "awk / off", capacity::run(lines, seconds, rounds)?)
        }
        BenchCommand::Fleet { sites } => {
            host::ensure(&[host::IMAGE_DEBIAN])?;
            ("many sites", "one by one", fleet::run(sites)?)
        }
        BenchCommand::FleetSync { boxes } => {
            host::ensure(&[host::TESTS])?;
            build::binaries::cargo_build_release(&crate::paths::target())?;
            ("fleet sync, one change", "all from upstream", fleet_sync::run(&boxes)?)
        }
        BenchCommand::Sync { rounds } => {
            host::ensure(&[host::TESTS])?;
            build::binaries::cargo_build_release(&crate::paths::target())?;
            ("mirror-sync vs bare rsync", "rsync", sync::run(rounds)?)
        }
    };
    print_table(title, peer, &rows);
    Ok(())
}

pub fn print_table(title: &str, peer: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("{:<48} {:>14} {:>14} {:>8}  ratio", "workload", peer, "ours", "unit");
    for r in rows {
        // "ratio" is always ours relative to the peer, > 1 meaning we are better.
        let ratio = if r.higher_is_better { r.ours / r.peer } else { r.peer / r.ours };
        let shown = if ratio.is_finite() { format!("{ratio:.2}×") } else { "-".into() };
        println!("{:<48} {:>14.2} {:>14.2} {:>8}  {shown}", r.workload, r.peer, r.ours, r.unit);
    }
    println!("(ratio > 1: mirror-server/ours better; spread between runs is ±5-10 %, so within 0.1 of 1.0 is a tie)");
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// utime + stime of the given processes, in seconds.
pub fn proc_cpu_seconds(pids: &[i32]) -> f64 {
    let ticks = 100.0;
    pids.iter()
        .filter_map(|p| fs_err::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let rest: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let u: f64 = rest.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let k: f64 = rest.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (u + k) / ticks
        })
        .sum()
}

/// Sum of VmHWM (peak resident set) of the given processes, in bytes.
pub fn proc_peak_rss(pids: &[i32]) -> u64 {
    pids.iter().map(|p| status_kib(*p, "VmHWM:") * 1024).sum()
}

pub fn status_kib(pid: i32, key: &str) -> u64 {
    fs_err::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
