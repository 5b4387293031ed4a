//! The static file server that replaces nginx: configuration, shared state, listeners, signals
//! (SIGHUP reload, SIGUSR1 log reopen, SIGTERM graceful stop). The request path lives in
//! `conn` and `respond`; it never writes under the mirror root and never waits on telemetry.

pub mod accesslog;
pub mod acme;
pub mod cache;
pub mod cond;
pub mod conn;
pub mod filecache;
pub mod files;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod mime;
pub mod pagecache;
pub mod ratelimit;
pub mod report;
pub mod respond;
pub mod timefmt;
pub mod tls;
pub mod urlpath;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::catalog::Project;
use crate::profile::Profile;
use crate::telemetry::release::ReleaseRules;
use crate::telemetry::{Telemetry, TelemetryConfig};

#[derive(Debug, Clone)]
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
    /// Asset folders, first match wins: the site's overrides, then the defaults.
    pub assets: Vec<PathBuf>,
    pub access_log: Option<PathBuf>,
    pub scavenger: bool,
    pub rate_limits: Vec<ratelimit::Rule>,
    pub allowlist: Vec<ipnet::IpNet>,
    pub status_dir: PathBuf,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub telemetry: Option<TelemetryConfig>,
    /// Per-project release rules from the catalog.
    pub releases: ReleaseRules,
    /// ACME account and certificate, telemetry spill file, today's counters.
    pub state_dir: PathBuf,
}

/// HTTPS listeners and where their certificate comes from.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub source: CertSource,
}

#[derive(Debug, Clone)]
pub enum CertSource {
    /// Files someone else renews (certbot's live/HOST layout); watched and reloaded.
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    Acme(acme::AcmeConfig),
}

pub const STATE_DIR: &str = "/var/lib/micromirror";

impl Config {
    pub fn acme_dir(&self) -> PathBuf {
        acme_dir(&self.state_dir)
    }
    pub fn counters_file(&self) -> PathBuf {
        counters_file(&self.state_dir)
    }
}

/// The ACME account key and certificate.
pub fn acme_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("acme")
}

/// Today's per-project totals, saved every minute and at exit for `mirror-server report`.
pub fn counters_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("server/counters.json")
}

pub const DEFAULT_ASSETS: &str = "/usr/share/micromirror/assets";
pub const SITE_ASSETS: &str = "/etc/micromirror/assets";
pub const STATUS_DIR: &str = "/var/lib/micromirror/sync";

impl Config {
    /// The appliance's configuration, from the site profile, its catalog entries and the folder
    /// the profile lives in (files it names are relative to that folder).
    pub fn from_profile(p: &Profile, projects: &[Project], profile_dir: &std::path::Path) -> Config {
        let state_dir = PathBuf::from(STATE_DIR);
        let parse_nets = |v: &[String]| v.iter().filter_map(|s| s.parse().ok()).collect::<Vec<ipnet::IpNet>>();
        Config {
            root: PathBuf::from("/srv/mirror"),
            listen: vec![SocketAddr::from(([0u16; 8], 80))],
            metrics_listen: Some(SocketAddr::from(([0u16; 8], 9100))),
            hostname: p.site.hostname.clone(),
            sponsor_name: p.site.sponsor_name.clone(),
            sponsor_url: p.site.sponsor_url.clone(),
            assets: vec![PathBuf::from(SITE_ASSETS), PathBuf::from(DEFAULT_ASSETS)],
            access_log: Some(PathBuf::from("/var/log/micromirror/access.log")),
            scavenger: p.server.scavenger,
            rate_limits: p
                .server
                .rate_limits
                .iter()
                .map(|r| ratelimit::Rule {
                    prefixes: parse_nets(&r.prefixes),
                    per_second: f64::from(r.per_second),
                    burst: f64::from(r.burst),
                })
                .collect(),
            allowlist: parse_nets(&p.server.allowlist),
            status_dir: PathBuf::from(STATUS_DIR),
            limits: Limits::default(),
            tls: p.tls.as_ref().map(|t| tls_from_profile(p, t, profile_dir, &state_dir)),
            telemetry: p.telemetry.as_ref().map(|t| TelemetryConfig {
                watchtower: t.watchtower.clone(),
                ca_file: profile_dir.join(&t.ca_file),
                asn_database: t.asn_database.as_ref().map(PathBuf::from),
                spill_file: state_dir.join(SPILL_FILE),
                spill_max_bytes: t.spill_max_mb << 20,
                hostname: p.site.hostname.clone(),
            }),
            releases: ReleaseRules::from_projects(projects).unwrap_or_else(|e| {
                // The catalog loader already refuses bad rules; this only guards a hand-made config.
                tracing::error!(error = %e, "release rules ignored");
                ReleaseRules::default()
            }),
            state_dir,
        }
    }
}

/// The spill file, under the state folder.
pub const SPILL_FILE: &str = "telemetry/spill";

fn tls_from_profile(
    p: &Profile,
    t: &crate::profile::Tls,
    profile_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> TlsConfig {
    let source = match (&t.acme_directory, &t.certificate_file, &t.key_file) {
        (Some(directory), _, _) => CertSource::Acme(acme::AcmeConfig {
            directory: directory.clone(),
            contact: t.acme_contact.clone(),
            ca_file: t.acme_ca_file.as_ref().map(|f| profile_dir.join(f)),
            names: std::iter::once(p.site.hostname.clone()).chain(t.extra_names.iter().cloned()).collect(),
            state_dir: acme_dir(state_dir),
        }),
        (None, cert, key) => CertSource::Files {
            cert: PathBuf::from(cert.clone().unwrap_or_default()),
            key: PathBuf::from(key.clone().unwrap_or_default()),
        },
    };
    TlsConfig { listen: vec![SocketAddr::from(([0u16; 8], 443))], source }
}

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
}

impl Shared {
    pub fn site_view(&self) -> listing::Site<'_> {
        listing::Site { hostname: &self.hostname, sponsor_name: &self.sponsor_name, sponsor_url: &self.sponsor_url }
    }
}

/// Reads the asset files (favicon.ico, robots.txt, listing.css, 404.html) into memory.
pub fn load_assets(dirs: &[PathBuf]) -> HashMap<String, Arc<[u8]>> {
    let mut out = HashMap::new();
    for name in ["favicon.ico", "robots.txt", "listing.css", "404.html"] {
        if let Some(data) = dirs.iter().find_map(|d| std::fs::read(d.join(name)).ok()) {
            out.insert(name.to_string(), Arc::from(data));
        }
    }
    out
}

/// What outlives a reload: counters, log writer, shutdown signal, certificate state.
#[derive(Clone)]
struct Lasting {
    metrics: Arc<metrics::Metrics>,
    access_log: accesslog::AccessLog,
    shutdown: watch::Sender<bool>,
    challenges: Arc<acme::Challenges>,
    certs: Arc<tls::CertStore>,
    acme_stats: Arc<acme::AcmeStats>,
    telemetry: Option<Telemetry>,
}

fn build_shared(config: &Config, lasting: &Lasting) -> Result<Shared> {
    let root = files::Root::open(&config.root)
        .with_context(|| format!("opening the mirror root {}", config.root.display()))?;
    let cached = config.limits.open_files.min(open_file_limit() as usize / 2);
    Ok(Shared {
        files: filecache::FileCache::new(root, cached),
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
    })
}

/// A listening socket. SO_REUSEPORT lets every worker thread bind the same address: the kernel
/// spreads connections across them, and no connection ever moves between threads.
fn bind(addr: SocketAddr, scavenger: bool) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    if scavenger {
        set_scavenger(&socket, addr.is_ipv6());
    }
    socket.bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

/// DSCP CS1 ("scavenger", TOS byte 0x20) on everything we send, IPv4 and IPv6; accepted
/// sockets inherit it from the listener.
pub fn set_scavenger(socket: &impl std::os::fd::AsRawFd, ipv6: bool) {
    let tos: libc::c_int = 0x20;
    let fd = socket.as_raw_fd();
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid socket fd, int option value of the right size.
    unsafe {
        libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_TOS, (&tos as *const libc::c_int).cast(), size);
        if ipv6 {
            libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, (&tos as *const libc::c_int).cast(), size);
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one, as nginx's worker_rlimit_nofile
/// does (connections and cached files both hold one), and returns the limit in force. The unit
/// sets both to 65536, so on the box nothing changes; elsewhere glibc raises it with the
/// prlimit64 syscall, which the unit's filter (~@resources lists setrlimit) would allow.
fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

type SharedCell = Arc<std::sync::RwLock<Arc<Shared>>>;

/// Runs the server until SIGTERM/SIGINT, then lets transfers finish up to the grace period.
/// One single-threaded runtime per worker thread, each with its own SO_REUSEPORT listeners
/// (nginx's worker model): a connection lives and dies on one thread, with no cross-thread
/// wake-ups. The calling thread handles signals, reloads and the metrics listener.
pub fn run(config: Config, threads: usize, reload: impl Fn() -> Result<Config> + Send + Sync + 'static) -> Result<()> {
    let log_target = match &config.access_log {
        Some(p) if p.as_os_str() == "-" => accesslog::Target::Stdout,
        Some(p) => accesslog::Target::File(p.clone()),
        None => accesslog::Target::Off,
    };
    let (shutdown_tx, _) = watch::channel(false);
    let lasting = Lasting {
        metrics: Arc::new(metrics::Metrics::default()),
        access_log: accesslog::AccessLog::start(log_target),
        shutdown: shutdown_tx.clone(),
        challenges: Arc::default(),
        certs: Arc::default(),
        acme_stats: Arc::default(),
        telemetry: match &config.telemetry {
            Some(t) => Some(Telemetry::start(t.clone())?),
            None => None,
        },
    };
    lasting.metrics.resume_today(load_counters(&config.counters_file()));
    let shared: SharedCell = Arc::new(std::sync::RwLock::new(Arc::new(build_shared(&config, &lasting)?)));
    let active = Arc::new(AtomicUsize::new(0));
    let threads = threads.max(1);
    let mut listen: Vec<(SocketAddr, Option<tokio_rustls::TlsAcceptor>)> =
        config.listen.iter().map(|a| (*a, None)).collect();
    if let Some(t) = &config.tls {
        if let CertSource::Files { cert, key } = &t.source {
            match tls::load_files(cert, key) {
                Ok(loaded) => lasting.certs.set(loaded),
                // HTTP keeps serving; HTTPS starts when the files become usable.
                Err(e) => {
                    tracing::error!(error = %e, "no usable certificate yet; HTTPS handshakes fail until there is one")
                }
            }
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(lasting.certs.clone()));
        listen.extend(t.listen.iter().map(|a| (*a, Some(acceptor.clone()))));
    }

    // Workers: each binds its own listeners and reports the outcome before serving.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    for i in 0..threads {
        let (shared, active, listen, scavenger, ready) =
            (shared.clone(), active.clone(), listen.clone(), config.scavenger, ready_tx.clone());
        let shutdown = shutdown_tx.subscribe();
        std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let mut listeners = Vec::new();
                for (addr, tls) in &listen {
                    match bind(*addr, scavenger) {
                        Ok(l) => listeners.push((l, tls.clone())),
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready.send(Ok(()));
                let loops: Vec<_> = listeners
                    .into_iter()
                    .map(|(l, tls)| tokio::spawn(accept_loop(l, tls, shared.clone(), active.clone(), shutdown.clone())))
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
                // Connections still sending keep this runtime alive until the process exits.
                std::future::pending::<()>().await;
            });
        })?;
    }
    drop(ready_tx);
    for _ in 0..threads {
        ready_rx.recv().context("a worker thread died while starting")??;
    }
    for (addr, tls) in &listen {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, root = %config.root.display(), threads, "serving");
    }

    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    control.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        if let Some(addr) = config.metrics_listen {
            let l = bind(addr, false)?;
            tracing::info!(%addr, "metrics");
            tokio::spawn(serve_metrics(l, lasting.clone(), shared.clone(), config.status_dir.clone()));
        }
        match config.tls.as_ref().map(|t| &t.source) {
            Some(CertSource::Files { cert, key }) => {
                tokio::spawn(tls::watch_files(lasting.certs.clone(), cert.clone(), key.clone(), Duration::from_secs(10)));
            }
            Some(CertSource::Acme(acme)) => {
                let l = &lasting;
                tokio::spawn(acme::run(acme.clone(), l.certs.clone(), l.challenges.clone(), l.acme_stats.clone()));
            }
            None => {}
        }
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut save_tick = tokio::time::interval(Duration::from_secs(60));
        // Requests apply file changes as they come; this closes replaced and deleted files
        // (freeing their disk space) on a box without traffic too.
        let mut changes_tick = tokio::time::interval(Duration::from_secs(1));
        let counters = config.counters_file();
        loop {
            tokio::select! {
                _ = save_tick.tick() => save_counters(&counters, &lasting.metrics.today()),
                _ = changes_tick.tick() => if let Ok(s) = shared.read() { s.files.apply_changes() },
                _ = hup.recv() => match reload().and_then(|c| { reload_cert_files(&c, &lasting); build_shared(&c, &lasting) }) {
                    Ok(new) => {
                        if let Ok(mut cell) = shared.write() {
                            // Connections still on the old configuration open their files anew.
                            cell.files.clear();
                            *cell = Arc::new(new);
                        }
                        tracing::info!("configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration"),
                },
                _ = usr1.recv() => lasting.access_log.reopen(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!(active = active.load(Ordering::Relaxed), "stopping: no new connections, letting transfers finish");
        let _ = shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + config.limits.shutdown_grace;
        while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    lasting.access_log.flush();
    if let Some(t) = &lasting.telemetry {
        t.flush(Duration::from_secs(5));
    }
    save_counters(&config.counters_file(), &lasting.metrics.today());
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: SharedCell,
    active: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(current) = shared.read().ok().map(|s| s.clone()) else { continue };
        if active.load(Ordering::Relaxed) >= current.limits.max_connections {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => conn::serve(stream, peer, current).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head: slow clients do not linger.
                    let limit = current.limits.header_timeout;
                    if let Ok(Ok(tls_stream)) = tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        conn::serve(tls_stream, peer, current).await;
                    }
                }
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The metrics listener: Prometheus text at any path. Never on the public port.
async fn serve_metrics(listener: TcpListener, lasting: Lasting, shared: SharedCell, status_dir: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (lasting, shared, status_dir) = (lasting.clone(), shared.clone(), status_dir.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let on_disk = tokio::task::spawn_blocking(move || metrics::disk_usage_from_status(&status_dir))
                .await
                .unwrap_or_default();
            let open_files = shared.read().map_or(0, |s| s.files.len());
            let body = metrics_text(&lasting, &on_disk, open_files);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

pub fn load_counters(path: &std::path::Path) -> metrics::Today {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Writes today's totals atomically (a temporary file renamed over the old one).
fn save_counters(path: &std::path::Path, today: &metrics::Today) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(today)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, file = %path.display(), "cannot save today's counters");
    }
}

/// SIGHUP re-reads certificate files at once (a certbot deploy hook need not wait for the
/// watcher); a broken pair is logged and the certificate in use is kept.
fn reload_cert_files(config: &Config, lasting: &Lasting) {
    if let Some(TlsConfig { source: CertSource::Files { cert, key }, .. }) = &config.tls {
        match tls::load_files(cert, key) {
            Ok(loaded) => lasting.certs.set(loaded),
            Err(e) => tracing::error!(error = %e, "certificate files not reloaded; keeping the one in use"),
        }
    }
}

fn metrics_text(lasting: &Lasting, on_disk: &std::collections::BTreeMap<String, u64>, open_files: usize) -> String {
    use std::fmt::Write;
    let mut body = lasting.metrics.prometheus(on_disk);
    let _ = write!(
        body,
        "# HELP micromirror_open_files_cached Files kept open between requests (local file systems only).\n\
         # TYPE micromirror_open_files_cached gauge\nmicromirror_open_files_cached {open_files}\n"
    );
    let _ = write!(
        body,
        "# TYPE micromirror_access_log_dropped_total counter\nmicromirror_access_log_dropped_total {}\n",
        accesslog::DROPPED_LINES.load(Ordering::Relaxed)
    );
    if let Some(days) = lasting.certs.days_left(std::time::SystemTime::now()) {
        let _ = write!(
            body,
            "# HELP micromirror_tls_certificate_days_left Days until the HTTPS certificate in use expires.\n\
             # TYPE micromirror_tls_certificate_days_left gauge\nmicromirror_tls_certificate_days_left {days:.6}\n"
        );
    }
    if let Some(t) = &lasting.telemetry {
        body.push_str(&t.prometheus());
    }
    let stats = &lasting.acme_stats;
    let _ = write!(
        body,
        "# TYPE micromirror_acme_issued_total counter\nmicromirror_acme_issued_total {}\n\
         # TYPE micromirror_acme_failures_total counter\nmicromirror_acme_failures_total {}\n",
        stats.issued.load(Ordering::Relaxed),
        stats.failures.load(Ordering::Relaxed)
    );
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scavenger_marks_ipv4_and_ipv6_sockets_cs1() {
        for v6 in [false, true] {
            let socket = if v6 { TcpSocket::new_v6() } else { TcpSocket::new_v4() }.unwrap();
            set_scavenger(&socket, v6);
            let (level, name) =
                if v6 { (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) } else { (libc::IPPROTO_IP, libc::IP_TOS) };
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            use std::os::fd::AsRawFd;
            // SAFETY: reading an int option into a correctly sized buffer.
            let rc = unsafe {
                libc::getsockopt(socket.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
            };
            assert_eq!(rc, 0);
            assert_eq!(value, 0x20, "DSCP CS1 is TOS byte 0x20 (v6: {v6})");
        }
    }
}
