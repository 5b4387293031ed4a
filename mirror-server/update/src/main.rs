//! The `mirror-update` command: the daemon the unit runs, one-off checks and installs for an
//! operator, the status, and the health check and rollback that boot-complete.target runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use image::version::Version;
use mirror_update::machine::Machine;
use mirror_update::{daemon, health, install, report, settings, state};
use schema::paths::Paths;

#[derive(Parser)]
#[command(name = "mirror-update", about = "Signed A/B image updates for a micro mirror")]
struct Cli {
    /// The installed site profile (default: the appliance's, /etc/micromirror/site.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// The disk holding the root slots (default: the disk the box booted from)
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Where the ESP is mounted
    #[arg(long)]
    esp: Option<PathBuf>,
    /// The updater's state folder
    #[arg(long)]
    state: Option<PathBuf>,
    /// A file with the kernel command line naming the running version
    #[arg(long)]
    cmdline: Option<PathBuf>,
    /// The OpenPGP keyring update signatures must verify against
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Never reboot (print what would reboot instead)
    #[arg(long)]
    no_reboot: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check on a timer and on push, install, reboot in the maintenance window (the unit's job)
    Daemon,
    /// Check the update server now and install the newest version (no reboot)
    Check,
    /// Install one version from the update server into the other slot (no reboot)
    Install {
        #[arg(long)]
        version: String,
        /// Allow an older version; the running one is then marked failed so the older boots
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Show the running version, the other slot, the newest available, the last check and error
    Status {
        #[arg(long)]
        json: bool,
        /// One line of key=value fields (the boot report and the login banner)
        #[arg(long, conflicts_with = "json")]
        fields: bool,
    },
    /// Is this boot a working mirror? (boot-complete.target requires it)
    Health {
        /// Give up after this many seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// A unit failed for this long ends the wait at once
        #[arg(long, default_value_t = 20)]
        grace: u64,
        /// While wan0 has no link the wait is held (the surroundings, not this version), up to
        /// this many seconds
        #[arg(long, default_value_t = 6 * 3600)]
        link_wait: u64,
        #[arg(long, default_value = "http://127.0.0.1/")]
        url: String,
        /// The data partition's mount point (default: the appliance's, /srv/mirror)
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// After a failed health check: reboot into the previous version if this boot is on trial
    Rollback,
    /// On an adopted box that passed its trial: make the new system permanent (run by `cargo
    /// xtask adopt`)
    AdoptCommit {
        /// Where the adopted data file system is mounted
        #[arg(long, default_value = mirror_update::adopted::DATA_ROOT)]
        data_root: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("mirror-update: {e:#}");
        std::process::exit(1);
    }
}

fn machine(cli: &Cli) -> Result<Machine> {
    let mut m = Machine::appliance(cli.disk.clone())?;
    m.site_config = cli.config.clone().unwrap_or_else(|| Paths::appliance().site_profile());
    if let Some(p) = &cli.esp {
        m.esp = p.clone();
    }
    if let Some(p) = &cli.state {
        m.state = p.clone();
    }
    if let Some(p) = &cli.cmdline {
        m.cmdline = p.clone();
    }
    if let Some(p) = &cli.keyring {
        m.keyring = p.clone();
    }
    if cli.no_reboot {
        m.reboot = vec!["echo".into(), "mirror-update: would reboot now (--no-reboot)".into()];
    }
    Ok(m)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Cmd::Status { json, fields } => {
            let m = machine(&cli)?;
            let enabled = settings::load(&m.site_config)?.is_some();
            let mut status = state::load(&m);
            // What cannot be read is said, never guessed: without the ESP or the disk the
            // running version's standing (blessed or on trial) is unknown.
            let look = state::look(&m, &status).with_context(|| {
                let who = if rustix::process::geteuid().is_root() {
                    ""
                } else {
                    " (run it as root: sudo mirror-update status)"
                };
                format!("cannot read this box's boot entries and slots{who}")
            })?;
            state::apply(&mut status, &look);
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else if *fields {
                println!("{}", report::fields(&status));
            } else {
                print!("{}", report::table(&status, jiff::Timestamp::now().as_second(), enabled));
            }
            Ok(())
        }
        Cmd::Health { timeout, grace, link_wait, url, data } => {
            let m = machine(&cli)?;
            let site = schema::site_config::load(&m.site_config)?;
            let data = data.clone().unwrap_or_else(|| Paths::appliance().mirror_root);
            let data = data.to_string_lossy();
            let version = m.running().map(|v| v.to_string()).unwrap_or_else(|_| "unknown".into());
            let (ok, checks) = health::wait_for_verdict(
                health::Bounds {
                    limit: Duration::from_secs(*timeout),
                    grace: Duration::from_secs(*grace),
                    link_wait: Duration::from_secs(*link_wait),
                },
                || health::checks(&site, &data, url),
            );
            health::say(&health::verdict_line(&version, ok, &checks));
            // Kept for the updater's judgement of a failed trial (`plan::judge`).
            if let Ok(running) = m.running() {
                let failed = checks.iter().filter(|c| !c.ok).map(|c| c.name.to_string()).collect();
                if let Err(e) = mirror_update::state::record_trial(&m.state, &running, failed) {
                    tracing::warn!(error = %e, "cannot record this boot's health verdict");
                }
            }
            if !ok {
                bail!("this boot is not a working mirror");
            }
            // The USB installer's adoption: nobody outside runs adopt-commit, this boot does.
            if mirror_update::adopted::commits_itself(&m) {
                let _lock = mirror_update::lock::take(&m.state, "adopt-commit")?;
                if let Err(e) = mirror_update::adopted::commit(&m, Path::new(mirror_update::adopted::DATA_ROOT)) {
                    // Healthy all the same: the next healthy boot tries again.
                    health::say(&format!("MICROMIRROR-ADOPT the commit stopped: {e:#}"));
                }
            }
            Ok(())
        }
        Cmd::Rollback => {
            let m = machine(&cli)?;
            let _lock = mirror_update::lock::take(&m.state, "rollback")?;
            health::rollback(&m).map(|_| ())
        }
        Cmd::AdoptCommit { data_root } => {
            let m = machine(&cli)?;
            let _lock = mirror_update::lock::take(&m.state, "adopt-commit")?;
            mirror_update::adopted::commit(&m, data_root)
        }
        Cmd::Daemon | Cmd::Check | Cmd::Install { .. } => {
            let m = machine(&cli)?;
            let Some(s) = settings::load(&m.site_config)? else {
                println!("updates are off: {} has no [update] section", m.site_config.display());
                return Ok(());
            };
            match &cli.command {
                Cmd::Daemon => {
                    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(daemon::run(m, s))
                }
                Cmd::Check => {
                    let _lock = mirror_update::lock::take(&m.state, "check")?;
                    let mut status = state::load(&m);
                    let result = install::check(&m, &s, &mut status);
                    if let Err(e) = &result {
                        status.last_error = Some(format!("{e:#}"));
                    }
                    status.activity = None;
                    state::save(&m, &status);
                    println!("{:?}", result?);
                    Ok(())
                }
                Cmd::Install { version, allow_downgrade } => {
                    let v = Version::parse(version).with_context(|| format!("`{version}` is not a version"))?;
                    let _lock = mirror_update::lock::take(&m.state, "install")?;
                    let mut status = state::load(&m);
                    let look = state::look(&m, &status)?;
                    let offers = install::offers(&m, &s)?;
                    let offer = offers
                        .iter()
                        .find(|o| o.version == v)
                        .with_context(|| format!("the update server does not offer {v}"))?;
                    install::install(&m, &s, &look, offer, *allow_downgrade, &mut status)?;
                    println!("installed {v}; it boots at the next reboot");
                    Ok(())
                }
                _ => unreachable!(),
            }
        }
    }
}
