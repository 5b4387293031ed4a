//! `cargo xtask fleet prometheus --out DIR` (the fleet on Prometheus and Grafana, written from
//! the profiles) and `cargo xtask fleet status` (one table of every box, read from each box's
//! metrics with a short timeout), and `cargo xtask fleet topology` (which box feeds which).
//! `targets` says where each site's metrics are.

pub(crate) mod exposition;
mod prometheus;
pub(crate) mod status;
mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use schema::profile::LoadedProfile;

use build::load;

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Write prometheus.yml, file_sd targets, recording and alerting rules and a Grafana
    /// dashboard for every site in the profiles folder (test sites left out)
    Prometheus {
        /// The folder the configuration is written to (made if missing)
        #[arg(long)]
        out: PathBuf,
        /// Scrape SITE at HOST[:PORT] instead of its host name on 9100 (repeat)
        #[arg(long, value_name = "SITE=HOST[:PORT]")]
        address: Vec<String>,
        #[command(flatten)]
        which: Which,
    },
    /// One table of every site: reachable, sync ages, bytes today, p95 utilisation, verdict,
    /// certificate days left, running version
    Status {
        /// Milliseconds each box may take, all of its answer included
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Read SITE at HOST[:PORT] instead of its host name on 9100 (repeat)
        #[arg(long, value_name = "SITE=HOST[:PORT]")]
        address: Vec<String>,
        #[command(flatten)]
        which: Which,
    },
    /// Which box fetches each project from which (the upstream for a few, a box that holds the
    /// change for the rest), derived from the profiles and profiles/fleet.toml
    Topology {
        /// One project only
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        which: Which,
    },
}

/// Which profiles a fleet command takes.
#[derive(clap::Args)]
pub struct Which {
    /// The profiles folder (default: profiles/, or MICROMIRROR_PROFILES)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Take the test sites too (`test = true`: the demo and the labs), which production
    /// watching leaves out
    #[arg(long)]
    include_test: bool,
}

pub fn run(command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Prometheus { out, address, which } => {
            let sites = sites(&which)?;
            prometheus::write(&out, &targets(&sites, &address)?)
        }
        FleetCommand::Topology { project, which } => {
            let sites = sites(&which)?;
            print!("{}", topology::render(&sites, topology::fanout(&which.folder())?, project.as_deref())?);
            Ok(())
        }
        FleetCommand::Status { timeout_ms, address, which } => {
            let sites = sites(&which)?;
            let rows = status::collect(&targets(&sites, &address)?, std::time::Duration::from_millis(timeout_ms));
            print!("{}", status::table(&rows, now()));
            let down = rows.iter().filter(|r| r.metrics.is_err()).count();
            if down > 0 {
                // A script or a timer reads the exit status: every box answering is success.
                bail!("{down} of {} boxes did not answer", rows.len());
            }
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

/// Every profile of the folder that loads (placeholders and all: watching needs no addresses),
/// test sites only when asked for.
pub(crate) fn sites(which: &Which) -> Result<Vec<LoadedProfile>> {
    sites_in(&which.folder(), which.include_test)
}

impl Which {
    /// The profiles folder it names.
    pub fn folder(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(crate::paths::profiles)
    }
}

fn sites_in(dir: &Path, include_test: bool) -> Result<Vec<LoadedProfile>> {
    if !dir.is_dir() {
        bail!("{} is not a profiles folder\n  fix: give --dir the folder holding SITE.toml files", dir.display());
    }
    let catalog = load::load_catalog(dir)?;
    let mut out = Vec::new();
    for site in load::sites_in(dir) {
        match schema::profile::check(&dir.join(format!("{site}.toml")), &catalog) {
            Ok(p) if p.profile.site.test && !include_test => {}
            Ok(p) => out.push(p),
            Err(e) => eprintln!("{site}: skipped, the profile is not usable:\n{e}"),
        }
    }
    Ok(out)
}

/// The metrics port of a box, when an address names none.
const METRICS_PORT: u16 = 9100;

pub fn targets(sites: &[LoadedProfile], overrides: &[String]) -> Result<Vec<Target>> {
    let mut by_site: BTreeMap<&str, String> = BTreeMap::new();
    for o in overrides {
        let (site, addr) = o.split_once('=').with_context(|| format!("--address {o}: write SITE=HOST[:PORT]"))?;
        if !sites.iter().any(|s| s.profile.site.name == site) {
            let known: Vec<&str> = sites.iter().map(|s| s.profile.site.name.as_str()).collect();
            bail!(
                "--address {o}: there is no site `{site}` here (sites: {})\n  fix: name a site of the profiles folder{}",
                known.join(", "),
                " (test sites need --include-test)"
            );
        }
        by_site.insert(site, with_port(addr));
    }
    Ok(sites
        .iter()
        .map(|s| {
            let site = &s.profile.site;
            Target {
                site: site.name.clone(),
                address: by_site
                    .get(site.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| format!("{}:{METRICS_PORT}", site.hostname)),
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

/// `host` or `host:port` (IPv6 in brackets) with the metrics port when none is given.
fn with_port(addr: &str) -> String {
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    };
    if has_port {
        addr.to_string()
    } else if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]:{METRICS_PORT}")
    } else {
        format!("{addr}:{METRICS_PORT}")
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_metrics_port_when_they_name_none() {
        assert_eq!(with_port("192.0.2.10"), "192.0.2.10:9100");
        assert_eq!(with_port("box.example.net:9200"), "box.example.net:9200");
        assert_eq!(with_port("2001:db8::10"), "[2001:db8::10]:9100");
        assert_eq!(with_port("[2001:db8::10]:9200"), "[2001:db8::10]:9200");
    }

    #[test]
    fn test_sites_are_left_out_unless_asked_and_an_address_for_no_site_is_refused() {
        let profiles = crate::paths::workspace().join("profiles");
        let production = sites_in(&profiles, false).unwrap();
        assert!(production.iter().all(|s| !s.profile.site.test), "test sites in production watching");
        assert!(!production.iter().any(|s| s.profile.site.name == "demo"));
        let all = sites_in(&profiles, true).unwrap();
        assert!(all.iter().any(|s| s.profile.site.name == "demo"));
        let err = targets(&production, &["demo=127.0.0.1:9100".into()]).unwrap_err().to_string();
        assert!(err.contains("no site `demo`") && err.contains("--include-test"), "{err}");
        let t = targets(&all, &["demo=127.0.0.1".into()]).unwrap();
        assert_eq!(t.iter().find(|t| t.site == "demo").unwrap().address, "127.0.0.1:9100");
        let err = sites_in(&profiles.join("demo.toml"), false).unwrap_err().to_string();
        assert!(err.contains("is not a profiles folder"), "{err}");
    }
}
