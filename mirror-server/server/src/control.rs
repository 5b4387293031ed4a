//! The control thread: signals (SIGHUP reload, SIGUSR1 log reopen, SIGTERM/SIGINT graceful
//! stop), the metrics listener, certificate upkeep (file watcher or ACME), and the ticks that
//! keep state current without traffic (counters saved every minute, file-change events applied
//! every second). It never serves a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{CertSource, Config, TlsConfig};
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
            tokio::spawn(exporter::serve(l, lasting.clone(), shared.clone(), config.status_dir.clone()));
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
        loop {
            tokio::select! {
                _ = save_tick.tick() => metrics::save_counters(&counters, &lasting.metrics.today()),
                _ = changes_tick.tick() => if let Ok(s) = shared.read() { s.files.apply_changes() },
                _ = hup.recv() => apply_reload(reload(), lasting, shared),
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

/// Swaps in the reloaded configuration; a broken one is logged and the running one kept.
fn apply_reload(reloaded: Result<Config>, lasting: &Lasting, shared: &SharedCell) {
    match reloaded.and_then(|c| {
        reload_cert_files(&c, lasting);
        build_shared(&c, lasting)
    }) {
        Ok(new) => {
            if let Ok(mut cell) = shared.write() {
                // Connections still on the old configuration open their files anew.
                cell.files.clear();
                *cell = Arc::new(new);
            }
            tracing::info!("configuration reloaded");
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration"),
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

/// No new connections; transfers under way may finish within the grace period.
async fn drain(config: &Config, lasting: &Lasting, active: &AtomicUsize) {
    tracing::info!(active = active.load(Ordering::Relaxed), "stopping: no new connections, letting transfers finish");
    let _ = lasting.shutdown.send(true);
    let deadline = tokio::time::Instant::now() + config.limits.shutdown_grace;
    while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
