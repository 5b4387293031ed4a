//! `cargo xtask fleet prometheus --out DIR` (the fleet on Prometheus and Grafana, written from
//! the profiles) and `cargo xtask fleet status` (one table of every box, read from each box's
//! metrics with a short timeout). `targets` says where each site's metrics are.

mod exposition;
mod prometheus;
mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use schema::profile::LoadedProfile;

use build::load;

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Write prometheus.yml, file_sd targets, recording and alerting rules and a Grafana
    /// dashboard for every site in profiles/
    Prometheus {
        #[arg(long)]
        out: PathBuf,
        /// Scrape SITE at HOST:PORT instead of its host name on 9100 (repeat)
        #[arg(long, value_name = "SITE=HOST:PORT")]
        address: Vec<String>,
    },
    /// One table of every site: reachable, sync ages, bytes today, p95 utilisation, verdict,
    /// certificate days left, running version
    Status {
        /// Milliseconds to wait for each box (connect and read)
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Read SITE at HOST:PORT instead of its host name on 9100 (repeat)
        #[arg(long, value_name = "SITE=HOST:PORT")]
        address: Vec<String>,
    },
}

pub fn run(command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Prometheus { out, address } => {
            let sites = sites()?;
            prometheus::write(&out, &targets(&sites, &address)?)
        }
        FleetCommand::Status { timeout_ms, address } => {
            let sites = sites()?;
            let rows = status::collect(&targets(&sites, &address)?, std::time::Duration::from_millis(timeout_ms));
            print!("{}", status::table(&rows, now()));
            Ok(())
        }
    }
}

/// One box to watch: its metrics address and the labels Prometheus gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub site: String,
    pub address: String,
    pub sponsor: String,
    pub hardware: String,
    pub projects: Vec<String>,
}

/// Every profile that loads (placeholders and all: watching needs no addresses).
fn sites() -> Result<Vec<LoadedProfile>> {
    let catalog = load::load_catalog(&crate::paths::profiles())?;
    let mut out = Vec::new();
    for site in crate::paths::known_sites() {
        match schema::profile::check(&crate::paths::profile(&site), &catalog) {
            Ok(p) => out.push(p),
            Err(e) => eprintln!("{site}: skipped, the profile is not usable:\n{e}"),
        }
    }
    Ok(out)
}

pub fn targets(sites: &[LoadedProfile], overrides: &[String]) -> Result<Vec<Target>> {
    let mut by_site: BTreeMap<&str, &str> = BTreeMap::new();
    for o in overrides {
        let (site, addr) = o.split_once('=').with_context(|| format!("--address {o}: write SITE=HOST:PORT"))?;
        by_site.insert(site, addr);
    }
    Ok(sites
        .iter()
        .map(|s| {
            let site = &s.profile.site;
            Target {
                site: site.name.clone(),
                address: by_site
                    .get(site.name.as_str())
                    .map_or_else(|| format!("{}:9100", site.hostname), |a| a.to_string()),
                sponsor: site.sponsor_name.clone(),
                hardware: site
                    .hardware
                    .clone()
                    .filter(|h| !h.starts_with(schema::profile::PLACEHOLDER))
                    .unwrap_or_else(|| "none".into()),
                projects: s.projects.iter().map(|p| p.path.clone()).collect(),
            }
        })
        .collect())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
