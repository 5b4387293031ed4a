//! The metrics listener: Prometheus text exposition at any path, on its own port (never the
//! public one). Reading the status files for bytes on disk happens on the blocking pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::accesslog;
use crate::exposition::{Exposition, Kind};
use crate::shared::{Lasting, SharedCell};

pub async fn serve(
    listener: TcpListener,
    lasting: Lasting,
    shared: SharedCell,
    status_dir: PathBuf,
    active: Arc<AtomicUsize>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (lasting, shared, status_dir, active) =
            (lasting.clone(), shared.clone(), status_dir.clone(), active.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let on_disk =
                tokio::task::spawn_blocking(move || schema::status::disk_usage(&status_dir)).await.unwrap_or_default();
            let open_files = shared.read().map_or(0, |s| s.files.len());
            let body = text(&lasting, &on_disk, open_files, active.load(Ordering::Relaxed));
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// Every family the server exports, each with its HELP and TYPE, counters present from start.
fn text(lasting: &Lasting, on_disk: &BTreeMap<String, u64>, open_files: usize, connections: usize) -> String {
    let mut e = Exposition::default();
    lasting.metrics.expose(&mut e, on_disk);
    e.family("micromirror_http_connections", Kind::Gauge, "Client connections open now (HTTP and HTTPS).").sample(
        "micromirror_http_connections",
        &[],
        connections as f64,
    );
    e.family("micromirror_open_files", Kind::Gauge, "Files kept open between requests (local file systems only).")
        .sample("micromirror_open_files", &[], open_files as f64);
    const DROPPED: &str = "micromirror_access_log_dropped_lines_total";
    e.family(DROPPED, Kind::Counter, "Access-log lines lost because the writer fell behind.").sample(
        DROPPED,
        &[],
        accesslog::DROPPED_LINES.load(Ordering::Relaxed) as f64,
    );
    const EXPIRY: &str = "micromirror_tls_certificate_expiry_timestamp_seconds";
    e.family(EXPIRY, Kind::Gauge, "When the HTTPS certificate in use expires (Unix time).");
    if let Some(t) = lasting.certs.not_after() {
        e.sample(EXPIRY, &[], t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
    }
    let acme = &lasting.acme_stats;
    e.family("micromirror_acme_issued_total", Kind::Counter, "Certificates obtained over ACME.").sample(
        "micromirror_acme_issued_total",
        &[],
        acme.issued.load(Ordering::Relaxed) as f64,
    );
    e.family("micromirror_acme_failures_total", Kind::Counter, "ACME attempts that brought no certificate.").sample(
        "micromirror_acme_failures_total",
        &[],
        acme.failures.load(Ordering::Relaxed) as f64,
    );
    if let Some(t) = &lasting.telemetry {
        telemetry_families(&mut e, &t.stats);
    }
    e.finish()
}

fn telemetry_families(e: &mut Exposition, s: &mirror_telemetry::Stats) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let families = [
        ("micromirror_telemetry_queue_records", Kind::Gauge, "Request records waiting in memory.", get(&s.queued)),
        (
            "micromirror_telemetry_spill_bytes",
            Kind::Gauge,
            "Bytes of records spilled to disk while the watchtower is away.",
            get(&s.spilled_bytes),
        ),
        (
            "micromirror_telemetry_delivered_records_total",
            Kind::Counter,
            "Records delivered to the watchtower.",
            get(&s.delivered),
        ),
        (
            "micromirror_telemetry_dropped_records_total",
            Kind::Counter,
            "Records lost because memory and spill file were full.",
            get(&s.dropped),
        ),
        ("micromirror_telemetry_connected", Kind::Gauge, "1 while connected to the watchtower.", get(&s.connected)),
    ];
    for (name, kind, help, value) in families {
        e.family(name, kind, help).sample(name, &[], value);
    }
}
