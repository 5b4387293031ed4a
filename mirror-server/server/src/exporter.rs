//! The metrics listener: Prometheus text exposition at any path, on its own port (never the
//! public one). Reading the status files for bytes on disk happens on the blocking pool.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::accesslog;
use crate::shared::{Lasting, SharedCell};

pub async fn serve(listener: TcpListener, lasting: Lasting, shared: SharedCell, status_dir: PathBuf) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (lasting, shared, status_dir) = (lasting.clone(), shared.clone(), status_dir.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let on_disk =
                tokio::task::spawn_blocking(move || schema::status::disk_usage(&status_dir)).await.unwrap_or_default();
            let open_files = shared.read().map_or(0, |s| s.files.len());
            let body = text(&lasting, &on_disk, open_files);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

fn text(lasting: &Lasting, on_disk: &BTreeMap<String, u64>, open_files: usize) -> String {
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
