//! The state connections read: `Shared` is rebuilt on every reload and swapped in whole (a
//! connection keeps the one it started with); `Lasting` is what outlives reloads — counters,
//! the access-log writer, the shutdown signal, certificates, the telemetry stream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use mirror_telemetry::Telemetry;
use schema::release::ReleaseRules;
use tokio::sync::watch;

use crate::config::{Config, Limits};
use crate::{accesslog, acme, cache, filecache, files, listing, metrics, ratelimit, tls};

/// State every connection reads.
pub struct Shared {
    /// The mirror root and the open files kept from earlier requests.
    pub files: filecache::FileCache,
    pub assets: HashMap<String, Arc<[u8]>>,
    pub listings: cache::ListingCache,
    pub hostname: String,
    pub sponsor_name: String,
    pub sponsor_url: String,
    pub limits: Limits,
    pub limiter: ratelimit::Limiter,
    pub metrics: Arc<metrics::Metrics>,
    pub access_log: accesslog::AccessLog,
    pub shutdown: watch::Sender<bool>,
    pub challenges: Arc<acme::Challenges>,
    pub releases: ReleaseRules,
    pub telemetry: Option<Telemetry>,
    /// What the front page lists, and where their sync status files are.
    pub front: Vec<crate::front::Hosted>,
    pub status_dir: PathBuf,
}

/// The current `Shared`, replaced whole by a reload.
pub type SharedCell = Arc<RwLock<Arc<Shared>>>;

impl Shared {
    pub fn site_view(&self) -> listing::Site<'_> {
        listing::Site { hostname: &self.hostname, sponsor_name: &self.sponsor_name, sponsor_url: &self.sponsor_url }
    }
}

/// The assets every listing and error page needs, built in so a server started without any
/// asset folder still links a stylesheet that exists.
const BUILT_IN_ASSETS: [(&str, &[u8]); 4] = [
    ("favicon.ico", include_bytes!("../assets/favicon.ico")),
    ("robots.txt", include_bytes!("../assets/robots.txt")),
    ("listing.css", include_bytes!("../assets/listing.css")),
    ("404.html", include_bytes!("../assets/404.html")),
];

/// The asset files (favicon.ico, robots.txt, listing.css, 404.html) in memory: each from the
/// first folder of `dirs` that has it, else the built-in one.
pub fn load_assets(dirs: &[PathBuf]) -> HashMap<String, Arc<[u8]>> {
    BUILT_IN_ASSETS
        .iter()
        .map(|(name, built_in)| {
            let data = dirs.iter().find_map(|d| std::fs::read(d.join(name)).ok()).unwrap_or_else(|| built_in.to_vec());
            (name.to_string(), Arc::from(data))
        })
        .collect()
}

/// What outlives a reload: counters, log writer, shutdown signal, certificate state.
#[derive(Clone)]
pub struct Lasting {
    pub metrics: Arc<metrics::Metrics>,
    pub access_log: accesslog::AccessLog,
    pub shutdown: watch::Sender<bool>,
    pub challenges: Arc<acme::Challenges>,
    pub certs: Arc<tls::CertStore>,
    pub acme_stats: Arc<acme::AcmeStats>,
    pub telemetry: Option<Telemetry>,
    /// Open files the cache may keep: half the descriptor limit in force at start.
    pub open_files_cap: usize,
    /// The per-minute traffic history and the capacity figures made from it.
    pub capacity: Arc<crate::live_capacity::LiveCapacity>,
}

impl Lasting {
    /// Starts what lives as long as the process: the access-log writer, the telemetry stream,
    /// today's counters resumed from the last run.
    pub fn start(config: &Config, open_file_limit: u64) -> Result<Lasting> {
        let log_target = match &config.access_log {
            Some(p) if p.as_os_str() == "-" => accesslog::Target::Stdout,
            Some(p) => accesslog::Target::File(p.clone()),
            None => accesslog::Target::Off,
        };
        let lasting = Lasting {
            metrics: Arc::new(metrics::Metrics::default()),
            access_log: accesslog::AccessLog::start(log_target),
            shutdown: watch::channel(false).0,
            challenges: Arc::default(),
            certs: Arc::default(),
            acme_stats: Arc::default(),
            telemetry: match &config.telemetry {
                Some(t) => Some(Telemetry::start(t.clone())?),
                None => None,
            },
            open_files_cap: open_file_limit as usize / 2,
            capacity: Arc::new(crate::live_capacity::LiveCapacity::load(
                &config.state.capacity_file(),
                config.link_mbit,
            )),
        };
        lasting.metrics.host(&config.projects);
        lasting.metrics.resume_today(metrics::load_counters(&config.state.counters_file()));
        Ok(lasting)
    }

    /// At exit: every access-log line written, telemetry delivered or spilled, counters saved.
    pub fn finish(&self, config: &Config) {
        self.access_log.flush();
        if let Some(t) = &self.telemetry {
            t.flush(std::time::Duration::from_secs(5));
        }
        metrics::save_counters(&config.state.counters_file(), &self.metrics.today());
        self.capacity.save(&config.state.capacity_file());
    }
}

/// The connection state for `config`: the root opened, assets read, limits set.
pub fn build_shared(config: &Config, lasting: &Lasting) -> Result<Shared> {
    lasting.metrics.host(&config.projects);
    let root = files::Root::open(&config.root)
        .with_context(|| format!("opening the mirror root {}", config.root.display()))?;
    Ok(Shared {
        files: filecache::FileCache::new(root, config.limits.open_files.min(lasting.open_files_cap)),
        assets: load_assets(&config.assets),
        listings: cache::ListingCache::default(),
        hostname: config.hostname.clone(),
        sponsor_name: config.sponsor_name.clone(),
        sponsor_url: config.sponsor_url.clone(),
        limits: config.limits.clone(),
        limiter: ratelimit::Limiter::new(config.rate_limits.clone(), config.allowlist.clone()),
        metrics: lasting.metrics.clone(),
        access_log: lasting.access_log.clone(),
        shutdown: lasting.shutdown.clone(),
        challenges: lasting.challenges.clone(),
        releases: config.releases.clone(),
        telemetry: lasting.telemetry.clone(),
        front: config.front.clone(),
        status_dir: config.status_dir.clone(),
    })
}
