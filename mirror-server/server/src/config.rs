//! What the server is told to do: listeners, the root, the site's look, limits, TLS and
//! telemetry, from the site profile (the appliance) or from command-line flags (by hand). Pure
//! data: nothing here opens a file or a socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mirror_telemetry::TelemetryConfig;
use schema::catalog::Project;
use schema::paths::Paths;
use schema::profile::{self, Profile};
use schema::release::ReleaseRules;

use crate::{acme, ratelimit};

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Open files kept between requests (each holds a descriptor; capped by RLIMIT_NOFILE / 2).
    pub open_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(15),
            header_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            shutdown_grace: Duration::from_secs(30),
            open_files: 16_384,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub hostname: String,
    pub sponsor_name: String,
    pub sponsor_url: String,
    /// Asset folders, first match wins; mirror-server's built-in assets come last.
    pub assets: Vec<PathBuf>,
    pub access_log: Option<PathBuf>,
    pub scavenger: bool,
    pub rate_limits: Vec<ratelimit::Rule>,
    pub allowlist: Vec<ipnet::IpNet>,
    /// mirror-sync's status files (bytes on disk per project).
    pub status_dir: PathBuf,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub telemetry: Option<TelemetryConfig>,
    /// Per-project release rules from the catalog.
    pub releases: ReleaseRules,
    /// The hosted projects, folder → catalog name: their counters exist (at zero) from the
    /// start and are labelled by name.
    pub projects: BTreeMap<String, String>,
    /// The hosted projects as the front page lists them (empty: `/` is a plain listing).
    pub front: Vec<crate::front::Hosted>,
    /// ACME account and certificate, telemetry spill file, today's counters.
    pub state: Paths,
    /// The uplink's capacity (the profile's hardware class), for the capacity figures.
    pub link_mbit: f64,
    /// How often each project is meant to sync (seconds): exported so an alert knows when a
    /// sync is late.
    pub sync_every_s: u64,
    /// Each hosted project's distribution checker (the catalog's `[freshness]`), by name:
    /// (its folder, the checker), for the metrics of how fresh the box looks to it.
    pub checkers: BTreeMap<String, (String, schema::freshness::Freshness)>,
}

/// HTTPS listeners and where their certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub source: CertSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CertSource {
    /// Files someone else renews (certbot's live/HOST layout); watched and reloaded.
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    Acme(acme::AcmeConfig),
}

impl Config {
    /// The appliance's configuration, from the site profile, its catalog entries and the folder
    /// the profile lives in (files it names are relative to that folder).
    pub fn from_profile(p: &Profile, projects: &[Project], profile_dir: &Path, paths: &Paths) -> Config {
        let parse_nets = |v: &[String]| v.iter().filter_map(|s| s.parse().ok()).collect::<Vec<ipnet::IpNet>>();
        Config {
            root: paths.mirror_root.clone(),
            listen: vec![SocketAddr::from(([0u16; 8], 80))],
            metrics_listen: Some(SocketAddr::from(([0u16; 8], 9100))),
            hostname: p.site.hostname.clone(),
            sponsor_name: p.site.sponsor_name.clone(),
            sponsor_url: p.site.sponsor_url.clone(),
            assets: vec![paths.site_assets()],
            access_log: Some(paths.access_log()),
            scavenger: p.server.scavenger,
            rate_limits: p
                .server
                .rate_limits
                .iter()
                .map(|r| ratelimit::Rule {
                    prefixes: parse_nets(&r.prefixes),
                    per_second: f64::from(r.per_second),
                    burst: f64::from(r.burst),
                    shared: r.bucket == profile::Bucket::Shared,
                })
                .collect(),
            allowlist: parse_nets(&p.server.allowlist),
            status_dir: paths.sync_status(),
            limits: Limits::default(),
            tls: p.tls.as_ref().map(|t| tls_from_profile(p, t, profile_dir, paths)),
            telemetry: p.telemetry.as_ref().map(|t| TelemetryConfig {
                watchtower: t.watchtower.clone(),
                ca_file: profile_dir.join(&t.ca_file),
                asn_database: t.asn_database.as_ref().map(PathBuf::from),
                spill_file: paths.spill_file(),
                spill_max_bytes: t.spill_max_mb << 20,
                hostname: p.site.hostname.clone(),
            }),
            releases: ReleaseRules::from_projects(projects).unwrap_or_else(|e| {
                // The catalog loader already refuses bad rules; this only guards a hand-made config.
                tracing::error!(error = %e, "release rules ignored");
                ReleaseRules::default()
            }),
            projects: projects.iter().map(|p| (p.path.clone(), p.name.clone())).collect(),
            front: projects
                .iter()
                .map(|p| crate::front::Hosted {
                    name: p.name.clone(),
                    title: p.title.clone(),
                    path: p.path.clone(),
                    rsync_module: p.rsync_module().to_string(),
                })
                .collect(),
            state: paths.clone(),
            link_mbit: f64::from(p.site.link_mbit()),
            checkers: projects
                .iter()
                .filter_map(|p| Some((p.name.clone(), (p.path.clone(), p.freshness.clone()?))))
                .collect(),
            sync_every_s: if p.mirror.daily_time().is_some() {
                86_400
            } else {
                u64::from(p.mirror.sync_interval_hours) * 3600
            },
        }
    }

    /// Moves the state (ACME, spill file, counters) under another state folder.
    pub fn set_state_dir(&mut self, dir: &Path) {
        self.state.state = dir.to_path_buf();
        if let Some(t) = &mut self.telemetry {
            t.spill_file = self.state.spill_file();
        }
        if let Some(TlsConfig { source: CertSource::Acme(a), .. }) = &mut self.tls {
            a.state_dir = self.state.acme();
        }
    }
}

/// What a reload can apply while the server runs, and what only a restart can: the sockets
/// (listeners, DSCP marking, the metrics port), where the certificate comes from, the access
/// log's file, telemetry and the state folder are set up once at start.
pub struct Reload {
    /// Changed and applied at once (names of what changed).
    pub applied: Vec<&'static str>,
    /// Changed, kept as running until a restart: what changed, from what to what.
    pub needs_restart: Vec<String>,
}

pub fn reload_changes(running: &Config, new: &Config) -> Reload {
    let mut applied = Vec::new();
    let live: [(&'static str, bool); 9] = [
        ("the mirror root", running.root != new.root),
        ("the host name", running.hostname != new.hostname),
        ("the sponsor", (&running.sponsor_name, &running.sponsor_url) != (&new.sponsor_name, &new.sponsor_url)),
        ("the site assets", running.assets != new.assets),
        ("the rate limits", running.rate_limits != new.rate_limits),
        ("the allowlist", running.allowlist != new.allowlist),
        ("the limits", running.limits != new.limits),
        ("the hosted projects and their release rules", running.projects != new.projects),
        ("the status folder", running.status_dir != new.status_dir),
    ];
    for (what, changed) in live {
        if changed {
            applied.push(what);
        }
    }
    let mut needs_restart = Vec::new();
    let mut restart = |what: &str, from: String, to: String| {
        if from != to {
            needs_restart.push(format!("{what} ({from} → {to})"));
        }
    };
    restart("HTTP listeners", format!("{:?}", running.listen), format!("{:?}", new.listen));
    let tls_listen = |c: &Config| format!("{:?}", c.tls.as_ref().map(|t| &t.listen));
    restart("HTTPS listeners", tls_listen(running), tls_listen(new));
    let source = |c: &Config| match c.tls.as_ref().map(|t| &t.source) {
        None => "none".to_string(),
        Some(CertSource::Files { cert, key }) => format!("files {} and {}", cert.display(), key.display()),
        Some(CertSource::Acme(a)) => format!("ACME {} for {:?}", a.directory, a.names),
    };
    restart("the certificate source", source(running), source(new));
    restart("the metrics listener", format!("{:?}", running.metrics_listen), format!("{:?}", new.metrics_listen));
    restart("DSCP marking", running.scavenger.to_string(), new.scavenger.to_string());
    restart("the access log", format!("{:?}", running.access_log), format!("{:?}", new.access_log));
    let watchtower = |c: &Config| c.telemetry.as_ref().map_or("none".into(), |t| t.watchtower.clone());
    restart("telemetry", watchtower(running), watchtower(new));
    let settings = |c: &Config| {
        c.telemetry.as_ref().map_or("none".into(), |t| {
            format!(
                "CA {}, ASN database {:?}, spill bound {} B",
                t.ca_file.display(),
                t.asn_database,
                t.spill_max_bytes
            )
        })
    };
    if watchtower(running) == watchtower(new) {
        restart("telemetry settings", settings(running), settings(new));
    }
    restart("the state folder", running.state.state.display().to_string(), new.state.state.display().to_string());
    Reload { applied, needs_restart }
}

fn tls_from_profile(p: &Profile, t: &profile::Tls, profile_dir: &Path, paths: &Paths) -> TlsConfig {
    let source = match (&t.acme_directory, &t.certificate_file, &t.key_file) {
        (Some(directory), _, _) => CertSource::Acme(acme::AcmeConfig {
            directory: directory.clone(),
            contact: t.acme_contact.clone(),
            ca_file: t.acme_ca_file.as_ref().map(|f| profile_dir.join(f)),
            names: std::iter::once(p.site.hostname.clone()).chain(t.extra_names.iter().cloned()).collect(),
            state_dir: paths.acme(),
        }),
        (None, cert, key) => CertSource::Files {
            cert: PathBuf::from(cert.clone().unwrap_or_default()),
            key: PathBuf::from(key.clone().unwrap_or_default()),
        },
    };
    TlsConfig { listen: vec![SocketAddr::from(([0u16; 8], 443))], source }
}
