//! What the server is told to do: listeners, the root, the site's look, limits, TLS and
//! telemetry, from the site profile (the appliance) or from command-line flags (by hand). Pure
//! data: nothing here opens a file or a socket.

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
    /// The hosted projects' folders: their counters exist (at zero) from the start.
    pub projects: Vec<String>,
    /// ACME account and certificate, telemetry spill file, today's counters.
    pub state: Paths,
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
            projects: projects.iter().map(|p| p.path.clone()).collect(),
            state: paths.clone(),
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
