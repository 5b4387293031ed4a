//! mirror-sync: keeps the hosted projects in step with the upstream mirror. `daemon` is what the
//! systemd unit runs; `run`, `status` and `check` are for the operator at the console.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mirror_sync::schedule::{self, Policy};
use mirror_sync::status_table::{self, Shown};
use mirror_sync::{daemon, runner};
use schema::paths::Paths;
use schema::site_config;
use schema::status;

#[derive(Parser)]
#[command(name = "mirror-sync", version, about = "Sync a micro mirror's projects from its upstream")]
struct Args {
    /// Site profile (default /etc/micromirror/site.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mirror root (default /srv/mirror)
    #[arg(long)]
    mirror_root: Option<PathBuf>,
    /// Where status files and locks live (default /var/lib/micromirror/sync)
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where each run's rsync output is kept (default /var/log/micromirror/sync)
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Upstream host[:port] instead of the profile's
    #[arg(long)]
    upstream: Option<String>,
    /// MQTT broker host:port instead of the profile's
    #[arg(long)]
    broker: Option<String>,
    /// Seconds before the first retry of a network error (doubles each time)
    #[arg(long)]
    retry_base: Option<u64>,
    /// A box of the fleet to fetch PROJECT from before the upstream, when it holds the
    /// upstream's state (repeat; tried in order)
    #[arg(long, value_name = "PROJECT=HOST[:PORT]")]
    peer: Vec<String>,
    /// Seconds a run waits for a peer to hold the upstream's state before it takes the upstream
    /// (default 1800)
    #[arg(long)]
    peer_wait: Option<u64>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sync one project now, waiting for a running sync of it to finish first
    Run {
        project: String,
        /// Print rsync's output as it goes
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show each project's state, last success and its age, last error, size
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Validate the site profile and catalog; print each project's rsync command lines and
    /// push topics
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Run the schedule and the MQTT push listener (what the systemd unit runs)
    Daemon {
        /// Hours between scheduled runs (default: the profile's)
        #[arg(long)]
        interval_hours: Option<f64>,
        /// Seconds before a failed project is tried again (default 300; doubles per failure in
        /// a row, up to six hours or the interval)
        #[arg(long)]
        retry_after: Option<u64>,
    },
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let paths = Paths::appliance();
    let profile_path = args.config.clone().unwrap_or_else(|| paths.site_profile());
    let site = site_config::load(&profile_path)?;
    let mut env = mirror_sync::env_from_profile(&site, &paths);
    // The fleet's peers, beside the profile (written at build time from the fleet's topology).
    let peers_file = profile_path.with_file_name(schema::paths::SYNC_PEERS_FILE);
    if let Ok(text) = std::fs::read_to_string(&peers_file) {
        env.peers = serde_json::from_str(&text).with_context(|| format!("reading {}", peers_file.display()))?;
    }
    if let Some(p) = &args.mirror_root {
        env.ends.mirror_root = p.clone();
    }
    if let Some(p) = &args.state_dir {
        env.state_dir = p.clone();
    }
    if let Some(p) = &args.log_dir {
        env.log_dir = p.clone();
    }
    if let Some(u) = &args.upstream {
        env.ends.upstream = u.clone();
    }
    for p in &args.peer {
        let (project, host) = p.split_once('=').with_context(|| format!("--peer {p}: write PROJECT=HOST[:PORT]"))?;
        env.peers.entry(project.to_string()).or_default().push(host.to_string());
    }
    if let Some(s) = args.peer_wait {
        env.peer_wait = Duration::from_secs(s);
    }
    if let Some(s) = args.retry_base {
        env.retry_base = Duration::from_secs(s);
    }
    match args.command {
        Cmd::Check { json } => {
            let prefix = mirror_sync::push_from_profile(&site).map(|(_, _, prefix)| prefix);
            let plans = mirror_sync::check::plans(&site.projects, &env, prefix.as_deref());
            if json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
                return Ok(());
            }
            println!("{}: ok ({} projects: {})", profile_path.display(), site.projects.len(), hosted(&site));
            for w in &site.warnings {
                println!("{w}");
            }
            print!("{}", mirror_sync::check::render(&plans));
            Ok(())
        }
        Cmd::Run { project, verbose } => {
            let p = site
                .projects
                .iter()
                .find(|p| p.name == project)
                .with_context(|| format!("`{project}` is not hosted here; hosted: {}", hosted(&site)))?;
            env.echo = verbose;
            match runner::run_project(&env, p, runner::LockMode::Wait)? {
                runner::RunResult::Done(st) => {
                    let seen = checker_view(p, &env, st.last_success);
                    print!(
                        "{}",
                        status_table::render(&[Shown::of(&p.name, Some(*st.clone())).seen_as(seen)], runner::now())
                    );
                    if st.state != status::Outcome::Success {
                        bail!("{project}: {}", st.error.unwrap_or_default());
                    }
                    Ok(())
                }
                runner::RunResult::SkippedLocked => bail!("{project} is locked"),
            }
        }
        Cmd::Status { json } => {
            let rows: Vec<Shown> = site
                .projects
                .iter()
                .map(|p| {
                    let st = status::read(&env.state_dir, &p.name);
                    let seen = checker_view(p, &env, st.as_ref().and_then(|s| s.last_success));
                    Shown::of(&p.name, st).seen_as(seen)
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", status_table::render(&rows, runner::now()));
            }
            Ok(())
        }
        Cmd::Daemon { interval_hours, retry_after } => {
            let mut push = mirror_sync::push_from_profile(&site);
            if let (Some(b), Some(p)) = (&args.broker, push.as_mut()) {
                let (h, port) = b.rsplit_once(':').context("--broker wants host:port")?;
                p.0 = h.to_string();
                p.1 = port.parse().context("--broker port")?;
            }
            let hours = interval_hours.unwrap_or(f64::from(site.profile.mirror.sync_interval_hours));
            let mut policy = Policy::for_interval(Duration::from_secs_f64(hours * 3600.0));
            if let (Some((hour, minute)), None) = (site.profile.mirror.daily_time(), interval_hours) {
                let tz = &site.profile.site.timezone;
                let zone = jiff::tz::TimeZone::get(tz)
                    .with_context(|| format!("site.timezone {tz}: not in the box's time zone database"))?;
                policy.daily = Some(schedule::Daily { hour: hour as i8, minute: minute as i8, zone });
            }
            if let Some(s) = retry_after {
                policy.retry_after = Duration::from_secs(s);
            }
            let config = daemon::DaemonConfig { env, projects: site.projects.clone(), policy, parallel: 2, push };
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(daemon::run(config))
        }
    }
}

/// How fresh `project` looks to its distribution's checker, from its tree on this box.
fn checker_view(
    project: &schema::catalog::Project,
    env: &runner::SyncEnv,
    last_success: Option<i64>,
) -> Option<schema::freshness::Seen> {
    let f = project.freshness.as_ref()?;
    schema::freshness::read(f, &env.ends.mirror_root.join(&project.path), last_success, runner::now())
}

fn hosted(site: &schema::profile::LoadedProfile) -> String {
    site.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// RUST_LOG-style filter (default info), to stderr: the journal on the box.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
