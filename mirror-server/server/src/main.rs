//! mirror-server: the micro mirror's static file server. On the appliance it reads the site
//! profile; by hand: `mirror-server --root DIR --listen 127.0.0.1:8080`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use mirror_server::{acme::AcmeConfig, metrics, report, CertSource, Config, TlsConfig};
use schema::paths::Paths;
use schema::site_config;

#[derive(Parser, Clone)]
#[command(name = "mirror-server", version, about = "Static file server for a micro mirror")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Site profile (the appliance's is /etc/micromirror/site.toml)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Serve this folder (overrides the profile's /srv/mirror)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Address to listen on; repeat for several
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Prometheus metrics listener (never the public port)
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Access log file, or "-" for stdout
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// Folder with favicon.ico, robots.txt, listing.css and 404.html
    #[arg(long)]
    assets: Vec<PathBuf>,
    /// Folder of mirror-sync's status files (bytes on disk per project)
    #[arg(long, global = true)]
    status_dir: Option<PathBuf>,
    /// Host name shown in listings (development mode)
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Do not mark packets DSCP CS1
    #[arg(long)]
    no_scavenger: bool,
    /// Seconds an idle keep-alive connection stays open
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Seconds a client may take to send a request head
    #[arg(long)]
    header_timeout: Option<u64>,
    /// Seconds to let transfers finish after SIGTERM
    #[arg(long)]
    shutdown_grace: Option<u64>,
    /// Open connections at most (HTTP and HTTPS together); more are closed at once
    #[arg(long)]
    max_connections: Option<usize>,
    /// Worker threads (default: one per core)
    #[arg(long)]
    threads: Option<usize>,
    /// HTTPS listener address; repeat for several
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS, watched and reloaded when it changes
    #[arg(long, requires = "tls_key", conflicts_with = "acme_directory")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// ACME directory URL: obtain and renew the certificate over HTTP-01
    #[arg(long, requires = "acme_name")]
    acme_directory: Option<String>,
    /// Name for the ACME certificate; repeat for several
    #[arg(long)]
    acme_name: Vec<String>,
    /// CA (PEM) that the ACME server's HTTPS uses, when it is not a public one
    #[arg(long)]
    acme_ca: Option<PathBuf>,
    /// Folder for state kept across restarts: acme/, telemetry/ spill, server/counters.json
    /// (the appliance's is /var/lib/micromirror)
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone)]
enum Command {
    /// Print today's counters per project: bytes served, bytes on disk, CDN efficiency
    Report,
    /// Is this box hosting too much? Utilisation, dispersion, per-project shares and a verdict,
    /// from the access log (this box's, or any nginx log in the combined format or the fleet's)
    Capacity(mirror_server::capacity::CapacityArgs),
}

fn report(args: &Args) -> Result<()> {
    let mut paths = Paths::appliance();
    if let Some(dir) = &args.state_dir {
        paths.state = dir.clone();
    }
    let status = args.status_dir.clone().unwrap_or_else(|| paths.sync_status());
    let file = paths.counters_file();
    if !file.exists() {
        anyhow::bail!(
            "{} does not exist: mirror-server has not saved counters there yet (it does every minute); \
             pass --state-dir if it runs with another one",
            file.display()
        );
    }
    print!("{}", report::render(&metrics::load_counters(&file), &schema::status::disk_usage(&status)));
    Ok(())
}

fn config(args: &Args) -> Result<Config> {
    let mut c = match &args.config {
        Some(path) => {
            let site = site_config::load(path)?;
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            Config::from_profile(&site.profile, &site.projects, dir, &Paths::appliance())
        }
        None => {
            let root = args.root.clone().context("give --config PROFILE or --root DIR")?;
            let dev = Paths::under(&std::env::temp_dir().join("mirror-server-dev"));
            let mut c = Config::from_profile(&dev_profile(&args.hostname), &[], std::path::Path::new("."), &dev);
            c.root = root;
            c.listen = vec!["127.0.0.1:8080".parse()?];
            c.metrics_listen = None;
            c.access_log = Some(PathBuf::from("-"));
            c.assets = vec![];
            c
        }
    };
    if let Some(r) = &args.root {
        c.root = r.clone();
    }
    if !args.listen.is_empty() {
        c.listen = args.listen.clone();
    }
    if args.metrics_listen.is_some() {
        c.metrics_listen = args.metrics_listen;
    }
    if let Some(l) = &args.access_log {
        c.access_log = Some(l.clone());
    }
    if !args.assets.is_empty() {
        c.assets = args.assets.clone();
    }
    if let Some(d) = &args.status_dir {
        c.status_dir = d.clone();
    }
    if let Some(d) = &args.state_dir {
        c.set_state_dir(d);
    }
    if args.no_scavenger {
        c.scavenger = false;
    }
    if let Some(s) = args.idle_timeout {
        c.limits.idle_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = args.header_timeout {
        c.limits.header_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = args.shutdown_grace {
        c.limits.shutdown_grace = std::time::Duration::from_secs(s);
    }
    if let Some(n) = args.max_connections {
        c.limits.max_connections = n;
    }
    apply_tls_args(args, &mut c)?;
    Ok(c)
}

fn apply_tls_args(args: &Args, c: &mut Config) -> Result<()> {
    let source = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(CertSource::Files { cert: cert.clone(), key: key.clone() })
    } else {
        args.acme_directory.as_ref().map(|directory| {
            CertSource::Acme(AcmeConfig {
                directory: directory.clone(),
                contact: None,
                ca_file: args.acme_ca.clone(),
                names: args.acme_name.clone(),
                state_dir: c.state.acme(),
            })
        })
    };
    if let Some(source) = source {
        let listen = c.tls.as_ref().map(|t| t.listen.clone()).unwrap_or_default();
        c.tls = Some(TlsConfig { listen, source });
    }
    if !args.tls_listen.is_empty() {
        let t = c
            .tls
            .as_mut()
            .context("--tls-listen needs a certificate: --tls-cert and --tls-key, or --acme-directory")?;
        t.listen = args.tls_listen.clone();
    }
    Ok(())
}

/// A profile for development runs without a site: only what the server shows.
fn dev_profile(hostname: &str) -> schema::profile::Profile {
    use schema::profile::*;
    Profile {
        site: Site {
            name: "dev".into(),
            hostname: hostname.into(),
            sponsor_name: "development".into(),
            sponsor_url: "https://example.net/".into(),
            location: Location::default(),
            timezone: "UTC".into(),
            test: true,
            hardware: None,
            disk_gb: Some(100),
        },
        base: Base::default(),
        network: Network::default(),
        access: Access {
            admin_user: "mirror".into(),
            ssh_keys: vec![],
            ssh_key_urls: vec![],
            ssh_port: 22,
            admin_prefixes: vec![],
        },
        mirror: Mirror {
            upstream: "localhost".into(),
            bwlimit_mbit: 200,
            sync_interval_hours: 24,
            sync_at: None,
            projects: Default::default(),
            push: None,
            max_delete_percent: 10,
            min_free_mb: 2048,
        },
        server: Server::default(),
        tls: None,
        telemetry: None,
        update: None,
    }
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    match &args.command {
        Some(Command::Report) => return report(&args),
        Some(Command::Capacity(c)) => {
            return mirror_server::capacity::run(c, args.config.as_deref(), args.status_dir.as_deref())
        }
        None => {}
    }
    let initial = config(&args)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let reload_args = args.clone();
    mirror_server::run(initial, threads, move || config(&reload_args))
}

/// RUST_LOG-style filter (default info), to stderr: the journal on the box.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
