//! `cargo xtask bench fleet [--sites N]`: the wall time to build N sites from one cached base
//! (`image --sites`, two at a time on this machine) beside the peer, one site built alone, and
//! the time each extra site costs. The sites are copies of the demo profile under new names
//! (each a distinct image with its own signed update), so the figure holds for any fleet whose
//! sites share a base.

use std::path::Path;
use std::time::Instant;

use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use super::Row;
use crate::paths;

/// A profiles folder with `n` sites made from the demo profile, named fleet01, fleet02, ….
fn fleet_profiles(dir: &Path, n: usize) -> Vec<String> {
    let demo = testkit::images::demo_profile();
    let sites: Vec<(String, String)> = (1..=n)
        .map(|i| {
            let name = format!("fleet{i:02}");
            let text = demo
                .replace("name = \"demo\"", &format!("name = \"{name}\""))
                .replace("demo.mm.example.net", &format!("{name}.mm.example.net"));
            (name, text)
        })
        .collect();
    let named: Vec<(&str, String)> = sites.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    testkit::images::scratch_profiles(dir, &named);
    sites.into_iter().map(|(n, _)| n).collect()
}

/// The `cargo xtask image` command itself (this program), on the fleet's profiles folder, signed
/// with the demo's test key: the many-sites build is a command-line feature.
fn image_command(profiles: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::current_exe()?)
        .arg("image")
        .args(args)
        .env("MICROMIRROR_PROFILES", profiles)
        .env("GNUPGHOME", testkit::images::demo_signing_home())
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cargo xtask image {} failed", args.join(" "));
    }
    Ok(())
}

pub fn run(n: usize) -> Result<Vec<Row>> {
    let n = n.max(2);
    let dir = paths::target().join("bench/fleet/profiles");
    let sites = fleet_profiles(&dir, n);
    // Warm: the base cache and the release binaries exist before either measurement.
    image_command(&dir, &["--site", &sites[0], "--no-compress"])?;

    let t = Instant::now();
    image_command(&dir, &["--site", &sites[0]])?;
    let one = t.elapsed().as_secs_f64();

    let t = Instant::now();
    image_command(&dir, &["--sites", &sites.join(",")])?;
    let all = t.elapsed().as_secs_f64();
    let extra = (all - one) / (n - 1) as f64;
    let projected_44 = one + 43.0 * extra;
    println!(
        "{n} sites in {all:.0} s; one alone {one:.0} s; each extra site {extra:.1} s; 44 sites projected {:.1} min",
        projected_44 / 60.0
    );
    Ok(vec![
        Row {
            workload: format!("{n} sites, wall time"),
            peer: one * n as f64,
            ours: all,
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "time per extra site".into(),
            peer: one,
            ours: extra,
            unit: "s".into(),
            higher_is_better: false,
        },
        Row {
            workload: "44 sites (projected from the above)".into(),
            peer: one * 44.0 / 60.0,
            ours: projected_44 / 60.0,
            unit: "min".into(),
            higher_is_better: false,
        },
    ])
}
