//! The control thread: signals (SIGHUP reload, SIGUSR1 log reopen, SIGTERM/SIGINT graceful
//! stop), the metrics listener, certificate upkeep (file watcher or ACME), and the ticks that
//! keep state current without traffic (counters saved every minute, file-change events applied
//! every second). It never serves a request.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, CertSource, Config, TlsConfig};
use crate::shared::{build_shared, Lasting, SharedCell};
use crate::{acme, exporter, metrics, tls};

/// Runs until SIGTERM or SIGINT, then tells the workers to stop accepting and waits for
/// transfers to finish, up to the grace period.
pub fn run(
    config: &Config,
    lasting: &Lasting,
    shared: &SharedCell,
    active: &Arc<AtomicUsize>,
    metrics: Option<(std::net::SocketAddr, std::net::TcpListener)>,
    reload: impl Fn() -> Result<Config>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        if let Some((addr, l)) = metrics {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(%addr, "metrics");
            let sources = exporter::Sources {
                status_dir: config.status_dir.clone(),
                update_dir: config.state.update_dir(),
                sync_every_s: config.sync_every_s,
                root: config.root.clone(),
                checkers: config.checkers.clone(),
            };
            tokio::spawn(exporter::serve(l, lasting.clone(), shared.clone(), sources, active.clone()));
        }
        start_certificate_upkeep(config, lasting);
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut save_tick = tokio::time::interval(Duration::from_secs(60));
        // Requests apply file changes as they come; this closes replaced and deleted files
        // (freeing their disk space) on a box without traffic too.
        let mut changes_tick = tokio::time::interval(Duration::from_secs(1));
        let counters = config.state.counters_file();
        let capacity_file = config.state.capacity_file();
        let mut running = config.clone();
        loop {
            tokio::select! {
                _ = save_tick.tick() => {
                    metrics::save_counters(&counters, &lasting.metrics.today());
                    lasting.capacity.save(&capacity_file);
                }
                _ = changes_tick.tick() => {
                    if let Ok(s) = shared.read() {
                        s.files.apply_changes();
                    }
                    let m = &lasting.metrics;
                    let (bytes, requests) = (m.bytes_total.load(Relaxed), m.requests_total.load(Relaxed));
                    lasting.capacity.tick(unix_now(), bytes, requests);
                }
                _ = hup.recv() => apply_reload(&mut running, reload(), lasting, shared),
                _ = usr1.recv() => lasting.access_log.reopen(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        drain(config, lasting, active).await;
        Ok(())
    })
}

/// The certificate's keeper: a watcher for files someone else renews, or the ACME client.
fn start_certificate_upkeep(config: &Config, lasting: &Lasting) {
    match config.tls.as_ref().map(|t| &t.source) {
        Some(CertSource::Files { cert, key }) => {
            tokio::spawn(tls::watch_files(lasting.certs.clone(), cert.clone(), key.clone(), Duration::from_secs(10)));
        }
        Some(CertSource::Acme(acme)) => {
            let l = lasting;
            tokio::spawn(acme::run(acme.clone(), l.certs.clone(), l.challenges.clone(), l.acme_stats.clone()));
        }
        None => {}
    }
}

/// Swaps in what of the reloaded configuration applies live, and names what needs a restart;
/// a broken configuration is logged and the running one kept whole.
fn apply_reload(running: &mut Config, reloaded: Result<Config>, lasting: &Lasting, shared: &SharedCell) {
    let new = match reloaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration");
            return;
        }
    };
    let changes = config::reload_changes(running, &new);
    // What only a restart applies stays as it runs; the rest takes the new values.
    let next = Config {
        listen: running.listen.clone(),
        metrics_listen: running.metrics_listen,
        scavenger: running.scavenger,
        access_log: running.access_log.clone(),
        tls: running.tls.clone(),
        telemetry: running.telemetry.clone(),
        state: running.state.clone(),
        ..new
    };
    // Certificate files are read again at once (a certbot deploy hook need not wait).
    reload_cert_files(&next, lasting);
    match build_shared(&next, lasting) {
        Ok(built) => {
            if let Ok(mut cell) = shared.write() {
                // Connections still on the old configuration open their files anew.
                cell.files.clear();
                *cell = Arc::new(built);
            }
            *running = next;
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration");
            return;
        }
    }
    for change in &changes.needs_restart {
        tracing::warn!(change = %change, "changed in the profile but needs a restart to apply: systemctl restart mirror-server");
    }
    let applied = if changes.applied.is_empty() { "nothing changed".into() } else { changes.applied.join(", ") };
    tracing::info!(applied = %applied, not_applied = changes.needs_restart.len(), "configuration reloaded");
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

/// No new connections; transfers under way may finish within the grace period.
async fn drain(config: &Config, lasting: &Lasting, active: &AtomicUsize) {
    tracing::info!(active = active.load(Ordering::Relaxed), "stopping: no new connections, letting transfers finish");
    let _ = lasting.shutdown.send(true);
    let deadline = tokio::time::Instant::now() + config.limits.shutdown_grace;
    while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
