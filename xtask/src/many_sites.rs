//! `cargo xtask image --sites a,b,c` and `--all`: many images from one cached base. Each
//! distro's base is prepared once first (so parallel builds never race to make it); then the
//! sites build as child processes of this xtask, `--jobs` at a time, each logging to
//! target/build-logs/SITE.log. One site's failure never stops the others; the run ends with
//! one table and a non-zero exit status if any site failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{paths, progress};

/// How one site's build went.
#[derive(Debug, Clone)]
pub struct Row {
    pub site: String,
    /// Bytes the raw image takes on disk (it is sparse), when it was built.
    pub image_bytes: Option<u64>,
    pub seconds: f64,
    /// `None`: built; else the reason it was not.
    pub failure: Option<String>,
}

pub struct Plan {
    pub sites: Vec<String>,
    pub jobs: usize,
    pub no_compress: bool,
    pub refresh_base: bool,
}

/// Builds every site of the plan and prints the table; an error when any site failed.
pub fn run(plan: Plan) -> Result<Vec<Row>> {
    if plan.sites.is_empty() {
        bail!(
            "no site to build\n  fix: name sites with --sites a,b,c, or add profiles to {}",
            paths::profiles().display()
        );
    }
    let started = Instant::now();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut by_distro: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for site in &plan.sites {
        match paths::load(site) {
            Ok(loaded) => by_distro.entry(loaded.profile.base.distro.as_str()).or_default().push(site.clone()),
            Err(e) => {
                let first =
                    format!("{e:#}").lines().find(|l| l.starts_with("error")).unwrap_or("invalid profile").to_string();
                rows.insert(
                    site.clone(),
                    Row { site: site.clone(), image_bytes: None, seconds: 0.0, failure: Some(first) },
                );
            }
        }
    }
    // One base per distro, made before any parallel build needs it.
    let mut buildable = Vec::new();
    for (distro, sites) in &by_distro {
        let t = Instant::now();
        let mut args = vec!["image", "--site", sites[0].as_str(), "--until", "base"];
        if plan.refresh_base {
            args.push("--refresh-base");
        }
        match child(&args, &format!("base-{distro}.log")) {
            Ok(()) => buildable.extend(sites.iter().cloned()),
            Err(e) => {
                for s in sites {
                    let why = format!("the {distro} base could not be made: {e}");
                    rows.insert(
                        s.clone(),
                        Row {
                            site: s.clone(),
                            image_bytes: None,
                            seconds: t.elapsed().as_secs_f64(),
                            failure: Some(why),
                        },
                    );
                }
            }
        }
    }
    let queue = Mutex::new(buildable.into_iter());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.max(1) {
            scope.spawn(|| {
                while let Some(site) = queue.lock().ok().and_then(|mut q| q.next()) {
                    let row = build_one(&site, plan.no_compress);
                    eprintln!("{}: {}", row.site, row.failure.as_deref().unwrap_or("built"));
                    if let Ok(mut d) = done.lock() {
                        d.push(row);
                    }
                }
            });
        }
    });
    for row in done.into_inner().unwrap_or_default() {
        rows.insert(row.site.clone(), row);
    }
    let rows: Vec<Row> = plan.sites.iter().filter_map(|s| rows.remove(s)).collect();
    print!("{}", table(&rows));
    let failed = rows.iter().filter(|r| r.failure.is_some()).count();
    eprintln!("{} site(s) in {:.0} s, {failed} failed", rows.len(), started.elapsed().as_secs_f64());
    if failed > 0 {
        bail!("{failed} of {} site(s) failed (logs: target/build-logs/SITE.log)", rows.len());
    }
    Ok(rows)
}

fn build_one(site: &str, no_compress: bool) -> Row {
    let t = Instant::now();
    let mut args = vec!["image", "--site", site];
    if no_compress {
        args.push("--no-compress");
    }
    let result = child(&args, &format!("{site}.log"));
    let image = paths::images(site).join(format!("{site}.img"));
    let image_bytes = result.is_ok().then(|| allocated(&image)).flatten();
    Row {
        site: site.to_string(),
        image_bytes,
        seconds: t.elapsed().as_secs_f64(),
        failure: result.err().map(|e| e.to_string()),
    }
}

/// Runs this xtask again with `args`, its output in target/build-logs/LOG (the image folder is
/// replaced whole when a build ends); the error is the log's last error line.
fn child(args: &[&str], log: &str) -> Result<()> {
    let dir = paths::target().join("build-logs");
    fs_err::create_dir_all(&dir)?;
    let log_path: PathBuf = dir.join(log);
    let file = fs_err::File::create(&log_path)?.into_parts().0;
    let err = file.try_clone().context("duplicating the log file")?;
    let exe = std::env::current_exe().context("finding this xtask's own executable")?;
    let status = Command::new(exe).args(args).stdin(Stdio::null()).stdout(file).stderr(err).status()?;
    if status.success() {
        return Ok(());
    }
    let text = fs_err::read_to_string(&log_path).unwrap_or_default();
    let last = text.lines().rev().find(|l| l.starts_with("error")).unwrap_or("failed").to_string();
    bail!("{last} (see {})", log_path.display())
}

fn allocated(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

/// The table for people: site, image size, seconds, result.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.site.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<width$}  {:>10}  {:>7}  result\n", "site", "image", "seconds");
    for r in rows {
        let size = r.image_bytes.map_or("-".to_string(), progress::human_bytes);
        let result = r.failure.as_deref().unwrap_or("ok");
        out.push_str(&format!("{:<width$}  {size:>10}  {:>7.0}  {result}\n", r.site, r.seconds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_site_its_size_time_and_result() {
        let rows = vec![
            Row { site: "demo".into(), image_bytes: Some(800 << 20), seconds: 74.2, failure: None },
            Row { site: "fmt2".into(), image_bytes: None, seconds: 3.0, failure: Some("error: no repository".into()) },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("site") && lines[0].ends_with("result"), "{t}");
        assert!(lines[1].starts_with("demo") && lines[1].contains("74") && lines[1].ends_with("ok"), "{t}");
        assert!(lines[2].contains(" - ") && lines[2].ends_with("error: no repository"), "{t}");
    }
}
