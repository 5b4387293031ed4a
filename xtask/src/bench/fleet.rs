//! `cargo xtask bench fleet [--sites N]`: the wall time to build N sites from one cached base
//! (`image --sites`, two at a time on this machine) beside the peer, one site built alone, and
//! the time each extra site costs. The sites are copies of the demo profile under new names
//! (each a distinct image with its own signed update), so the figure holds for any fleet whose
//! sites share a base.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::Row;
use crate::paths;

/// A profiles folder with `n` sites made from the demo profile, named fleet01, fleet02, ….
fn fleet_profiles(dir: &Path, n: usize) -> Result<Vec<String>> {
    let _ = fs_err::remove_dir_all(dir);
    fs_err::create_dir_all(dir)?;
    let src = paths::profiles();
    for side in ["projects", "certs", "keys"] {
        let sh = crate::cmd::shell()?;
        let (from, to) = (src.join(side), dir.join(side));
        crate::cmd::run(crate::cmd::cmd!(sh, "cp -r {from} {to}"))?;
    }
    let demo = fs_err::read_to_string(src.join("demo.toml"))?;
    let mut sites = Vec::new();
    for i in 1..=n {
        let name = format!("fleet{i:02}");
        let text = demo
            .replace("name = \"demo\"", &format!("name = \"{name}\""))
            .replace("demo.mm.example.net", &format!("{name}.mm.example.net"));
        fs_err::write(dir.join(format!("{name}.toml")), text)?;
        sites.push(name);
    }
    Ok(sites)
}

pub fn run(n: usize) -> Result<Vec<Row>> {
    let n = n.max(2);
    let dir = paths::target().join("bench/fleet/profiles");
    let sites = fleet_profiles(&dir, n)?;
    let env: [(&str, &Path); 1] = [("MICROMIRROR_PROFILES", &dir)];
    // Warm: the base cache and the release binaries exist before either measurement.
    super::update::xtask(&["image", "--site", &sites[0], "--no-compress"], &env)?;

    let t = Instant::now();
    super::update::xtask(&["image", "--site", &sites[0]], &env)?;
    let one = t.elapsed().as_secs_f64();

    let t = Instant::now();
    super::update::xtask(&["image", "--sites", &sites.join(",")], &env)?;
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
