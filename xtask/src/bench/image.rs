//! `cargo xtask bench image`: a cold build (base included), a warm build of a second site on
//! the cached base, the image's allocated and compressed sizes, and the time from QEMU's start
//! to the first HTTP 200 under TCG. The peer is mkosi 14 building a comparable minimal Debian 12
//! UEFI image on this machine class (figures from ../shared/reference/boot-notes.md: it needs
//! workarounds to run here at all, so it is not rerun).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::Row;
use crate::paths;

fn xtask(args: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new(std::env::current_exe()?).args(args).stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("cargo xtask {} failed", args.join(" "));
    }
    Ok(start.elapsed().as_secs_f64())
}

fn boot_to_http(site: &str) -> Result<f64> {
    let port_base = 23_000u16;
    let log = paths::target().join("bench/boot-serial.log");
    fs_err::create_dir_all(paths::target().join("bench"))?;
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["boot", "--site", site, "--no-reboot", "--port-base", &port_base.to_string(), "--serial-log"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut result = None;
    while start.elapsed() < Duration::from_secs(180) {
        let ok = std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", port_base + 80).parse()?,
            Duration::from_millis(500),
        )
        .ok()
        .and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).ok()?;
            Some(buf[..n].starts_with(b"HTTP/1.0 200"))
        })
        .unwrap_or(false);
        if ok {
            result = Some(start.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new("pkill").args(["-f", &format!("hostfwd=tcp:127.0.0.1:{}", port_base + 80)]).status();
    result.ok_or_else(|| anyhow::anyhow!("no HTTP 200 within 180 s; see {}", log.display()))
}

pub fn run() -> Result<Vec<Row>> {
    eprintln!("[bench] cold build of demo (base from the network)");
    let cold = xtask(&["image", "--site", "demo", "--refresh-base"])?;
    eprintln!("[bench] warm build of lab6 (another site, cached base)");
    let warm = xtask(&["image", "--site", "lab6"])?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs_err::read(paths::images("demo").join("manifest.json"))?)?;
    let allocated = manifest["artifacts"][0]["allocated"].as_f64().unwrap_or(0.0) / 1048576.0;
    let zst = manifest["artifacts"][1]["size"].as_f64().unwrap_or(0.0) / 1048576.0;
    eprintln!("[bench] booting demo under TCG");
    let boots: Vec<f64> = (0..3).map(|_| boot_to_http("demo")).collect::<Result<_>>()?;
    Ok(vec![
        Row {
            workload: "cold build (base included)".into(),
            peer: 111.0,
            ours: cold,
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "warm build, another site on the cached base".into(),
            peer: 70.0,
            ours: warm,
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "image allocated".into(),
            peer: 1.1 * 1024.0,
            ours: allocated,
            unit: "MiB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "image compressed (.zst)".into(),
            peer: f64::NAN,
            ours: zst,
            unit: "MiB".into(),
            higher_is_better: false,
        },
        Row {
            workload: "QEMU start to first HTTP 200 (TCG, median of 3)".into(),
            peer: 39.5,
            ours: super::median(boots),
            unit: "s".into(),
            higher_is_better: false,
        },
    ])
}
