//! mirror-sync: keeps the hosted projects in step with the upstream mirror. `daemon` is what the
//! systemd unit runs; `run`, `status` and `check` are for the operator at the console.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
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
    },
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let paths = Paths::appliance();
    let profile_path = args.config.clone().unwrap_or_else(|| paths.site_profile());
    let site = site_config::load(&profile_path)?;
    let mut env = mirror_sync::env_from_profile(&site, &paths);
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
                    print_table(std::slice::from_ref(&st));
                    if st.state != status::Outcome::Success {
                        bail!("{project}: {}", st.error.unwrap_or_default());
                    }
                    Ok(())
                }
                runner::RunResult::SkippedLocked => bail!("{project} is locked"),
            }
        }
        Cmd::Status { json } => {
            let all: Vec<status::Status> = site
                .projects
                .iter()
                .map(|p| status::read(&env.state_dir, &p.name).unwrap_or_else(|| never_synced(p)))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all);
            }
            Ok(())
        }
        Cmd::Daemon { interval_hours } => {
            let mut push = mirror_sync::push_from_profile(&site);
            if let (Some(b), Some(p)) = (&args.broker, push.as_mut()) {
                let (h, port) = b.rsplit_once(':').context("--broker wants host:port")?;
                p.0 = h.to_string();
                p.1 = port.parse().context("--broker port")?;
            }
            let hours = interval_hours.unwrap_or(f64::from(site.profile.mirror.sync_interval_hours));
            let config = daemon::DaemonConfig {
                env,
                projects: site.projects.clone(),
                interval: Duration::from_secs_f64(hours * 3600.0),
                parallel: 2,
                push,
            };
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(daemon::run(config))
        }
    }
}

fn hosted(site: &schema::profile::LoadedProfile) -> String {
    site.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn never_synced(p: &schema::catalog::Project) -> status::Status {
    status::Status {
        project: p.name.clone(),
        project_path: p.path.clone(),
        state: status::Outcome::Failed,
        started: 0,
        ended: None,
        last_success: None,
        error: Some("never synced".into()),
        stats: status::Stats::default(),
        size_bytes: 0,
        log_file: None,
    }
}

fn print_table(rows: &[status::Status]) {
    let now = runner::now();
    println!("{:<18} {:<8} {:<22} {:<9} {:>10}  LAST ERROR", "PROJECT", "STATE", "LAST SUCCESS (UTC)", "AGE", "SIZE");
    for s in rows {
        let state = match s.state {
            status::Outcome::Success => "ok",
            status::Outcome::Failed => "FAILED",
            status::Outcome::Refused => "REFUSED",
            status::Outcome::Running => "running",
        };
        let (when, age) = match s.last_success {
            Some(t) => (schema::human::format_time(t), schema::human::age(now - t)),
            None => ("never".into(), "-".into()),
        };
        let err = if s.state == status::Outcome::Success { String::new() } else { s.error.clone().unwrap_or_default() };
        println!(
            "{:<18} {:<8} {:<22} {:<9} {:>10}  {}",
            s.project,
            state,
            when,
            age,
            schema::human::human_bytes(s.size_bytes),
            err
        );
    }
}

/// RUST_LOG-style filter (default info), to stderr: the journal on the box.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
