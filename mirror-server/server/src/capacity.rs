//! `mirror-server capacity`: reads an access log (this box's by default; any nginx log in the
//! combined format or the fleet's, gzip accepted), folds it into mirror-capacity's tally line by
//! line, and prints the verdict, the utilisation, the dispersion and each project's share, as a
//! table or `--json`. The numbers themselves live in mirror-capacity (pure).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mirror_capacity::{analyse, log, Inputs, Tally};
use schema::paths::Paths;

#[derive(clap::Args, Clone, Debug)]
pub struct CapacityArgs {
    /// Access log to read (".gz" read as gzip); default: this box's access log
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// The link's capacity in Mbit/s; default: the profile's hardware class (1000 without one)
    #[arg(long)]
    pub link_mbit: Option<f64>,
    /// Bytes on disk of a project, PROJECT=GB (repeat); default: the sync status files
    #[arg(long, value_name = "PROJECT=GB")]
    pub disk: Vec<String>,
    /// Every figure as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &CapacityArgs, config: Option<&Path>, status_dir: Option<&Path>) -> Result<()> {
    let paths = Paths::appliance();
    let site = config.map(schema::site_config::load).transpose()?;
    let link =
        args.link_mbit.unwrap_or_else(|| site.as_ref().map_or(1000.0, |s| f64::from(s.profile.site.link_mbit())));
    let from = args.from.clone().unwrap_or_else(|| paths.access_log());
    let (tally, bad) = read_log(&from, link)?;
    if tally.projects.is_empty() {
        bail!(
            "{}: no request lines ({bad} lines not in the combined format)\n  fix: point --from at an access log in nginx's combined format (or the fleet's)",
            from.display()
        );
    }
    let mut disk =
        schema::status::disk_usage(&status_dir.map(Path::to_path_buf).unwrap_or_else(|| paths.sync_status()));
    for d in &args.disk {
        let (name, gb) = d.split_once('=').context(format!("--disk {d}: write PROJECT=GB, e.g. fedora=700"))?;
        let gb: f64 = gb.parse().with_context(|| format!("--disk {d}: {gb} is not a number of GB"))?;
        disk.insert(name.to_string(), (gb * 1e9) as u64);
    }
    let report = analyse(&Inputs { tally: &tally, link_mbit: link, disk_bytes: &disk });
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
        if bad > 0 {
            println!("({bad} lines were not in the combined format and were skipped)");
        }
    }
    Ok(())
}

/// Folds every line of the log into a tally for a link of `link_mbit`; returns it and how many
/// lines were not readable.
pub fn read_log(path: &Path, link_mbit: f64) -> Result<(Tally, u64)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tally = Tally::new(link_mbit);
    let mut bad = 0u64;
    let mut lines = BufReader::with_capacity(1 << 20, reader);
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        match log::parse_line(line.trim_end()) {
            Ok(r) => tally.add(&r),
            Err(_) => bad += 1,
        }
    }
    Ok((tally, bad))
}
