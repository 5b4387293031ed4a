//! The metrics listener: Prometheus text exposition at any path, on its own port (never the
//! public one). Reading the status files (sync: bytes on disk; update: versions) happens on the
//! blocking pool.

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

/// Where the exporter reads what other programs write, and the schedule it reports.
#[derive(Debug, Clone)]
pub struct Sources {
    pub status_dir: PathBuf,
    pub update_dir: PathBuf,
    pub sync_every_s: u64,
    /// The mirror root, and each project's checker (name → folder, checker).
    pub root: PathBuf,
    pub checkers: std::collections::BTreeMap<String, (String, schema::freshness::Freshness)>,
}

pub async fn serve(
    listener: TcpListener,
    lasting: Lasting,
    shared: SharedCell,
    sources: Sources,
    active: Arc<AtomicUsize>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (lasting, shared, active) = (lasting.clone(), shared.clone(), active.clone());
        let Sources { status_dir, update_dir, sync_every_s, root, checkers } = sources.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let (update, syncs, seen) = tokio::task::spawn_blocking(move || {
                let syncs = schema::status::all(&status_dir);
                let seen = checker_views(&root, &checkers, &syncs, unix_now());
                (schema::update_status::read(&update_dir), syncs, seen)
            })
            .await
            .unwrap_or_default();
            let on_disk = schema::status::sizes(&syncs);
            let open_files = shared.read().map_or(0, |s| s.files.len());
            let mut body = text(&lasting, &on_disk, open_files, active.load(Ordering::Relaxed));
            body.push_str(&update_families(update.as_ref()));
            body.push_str(&sync_families(&syncs, sync_every_s));
            body.push_str(&checker_families(&seen));
            let capacity = lasting.capacity.clone();
            let now = unix_now();
            body.push_str(
                &tokio::task::spawn_blocking(move || {
                    let mut e = Exposition::default();
                    capacity.expose(&mut e, now);
                    e.finish()
                })
                .await
                .unwrap_or_default(),
            );
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// Each project's last successful sync and the schedule it keeps, so an alert can tell a late
/// sync from a quiet one.
fn sync_families(statuses: &[schema::status::Status], every_s: u64) -> String {
    let mut e = Exposition::default();
    const LAST: &str = "micromirror_sync_last_success_timestamp_seconds";
    e.family(LAST, Kind::Gauge, "When each project last synced completely (Unix time).");
    for st in statuses {
        if let Some(t) = st.last_success {
            e.sample(LAST, &[("project", st.project.as_str())], t as f64);
        }
    }
    const EVERY: &str = "micromirror_sync_schedule_seconds";
    e.family(EVERY, Kind::Gauge, "How often each project is meant to sync.").sample(EVERY, &[], every_s as f64);
    const FAILING: &str = "micromirror_sync_failures";
    e.family(FAILING, Kind::Gauge, "Failed runs in a row per project (0 after a success).");
    for st in statuses {
        e.sample(FAILING, &[("project", st.project.as_str())], f64::from(st.failures));
    }
    e.finish()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How fresh each project with a checker looks to it: (project, what the checker sees).
fn checker_views(
    root: &std::path::Path,
    checkers: &std::collections::BTreeMap<String, (String, schema::freshness::Freshness)>,
    syncs: &[schema::status::Status],
    now: i64,
) -> Vec<(String, schema::freshness::Seen)> {
    checkers
        .iter()
        .filter_map(|(name, (path, f))| {
            let last = syncs.iter().find(|s| &s.project == name).and_then(|s| s.last_success);
            Some((name.clone(), schema::freshness::read(f, &root.join(path), last, now)?))
        })
        .collect()
}

/// How far behind each project's distribution checker sees the box, and when it drops it: the
/// fleet's alert warns at half the limit.
fn checker_families(seen: &[(String, schema::freshness::Seen)]) -> String {
    let mut e = Exposition::default();
    const BEHIND: &str = "micromirror_sync_checker_behind_seconds";
    e.family(BEHIND, Kind::Gauge, "How far behind the distribution's own checker sees each project.");
    for (project, s) in seen {
        e.sample(BEHIND, &[("project", project.as_str()), ("checker", s.checker.as_str())], s.behind_s as f64);
    }
    const LIMIT: &str = "micromirror_sync_checker_limit_seconds";
    e.family(LIMIT, Kind::Gauge, "When the distribution's checker drops or flags the mirror.");
    for (project, s) in seen {
        e.sample(LIMIT, &[("project", project.as_str()), ("checker", s.checker.as_str())], s.limit_s as f64);
    }
    e.finish()
}

/// The updater's view, from its status file: which version runs and whether it is blessed, what
/// the other slot holds, the newest on offer, the last check and whether it failed. Absent
/// (updates off, or not checked yet): the families are there without samples.
fn update_families(status: Option<&schema::update_status::UpdateStatus>) -> String {
    let mut e = Exposition::default();
    const INFO: &str = "micromirror_update_info";
    e.family(INFO, Kind::Gauge, "The running image version, the other root slot and the newest version on offer.");
    const BLESSED: &str = "micromirror_update_running_blessed";
    e.family(BLESSED, Kind::Gauge, "1 once the running version passed its health check on this box.");
    const CHECK: &str = "micromirror_update_last_check_timestamp_seconds";
    e.family(CHECK, Kind::Gauge, "When the updater last asked the update server (Unix time).");
    const ERROR: &str = "micromirror_update_last_check_failed";
    e.family(ERROR, Kind::Gauge, "1 when the last check or install failed (mirror-update status says why).");
    const FAILED: &str = "micromirror_update_failed_versions";
    e.family(FAILED, Kind::Gauge, "Versions that failed their health check here and are never booted again.");
    const DEFERRED: &str = "micromirror_update_deferred_versions";
    e.family(
        DEFERRED,
        Kind::Gauge,
        "Versions that failed a trial while the box's surroundings failed too; retried later.",
    );
    if let Some(s) = status {
        let other = s.other_version.as_deref().unwrap_or("");
        let newest = s.newest_available.as_deref().unwrap_or("");
        let labels = [
            ("running", s.running.as_str()),
            ("other", other),
            ("other_slot", s.other_slot.as_str()),
            ("newest", newest),
        ];
        e.sample(INFO, &labels, 1.0);
        e.sample(BLESSED, &[], f64::from(u8::from(s.running_blessed)));
        if let Some(t) = s.last_check {
            e.sample(CHECK, &[], t as f64);
        }
        e.sample(ERROR, &[], f64::from(u8::from(s.last_error.is_some())));
        e.sample(FAILED, &[], s.failed_versions.len() as f64);
        e.sample(DEFERRED, &[], s.deferred_versions.len() as f64);
    }
    e.finish()
}

/// Every family the server exports, each with its HELP and TYPE, counters present from start.
fn text(lasting: &Lasting, on_disk: &BTreeMap<String, u64>, open_files: usize, connections: usize) -> String {
    let mut e = Exposition::default();
    lasting.metrics.expose(&mut e, on_disk);
    const TODAY: &str = "micromirror_http_sent_today_bytes";
    e.family(TODAY, Kind::Gauge, "Bytes sent since 00:00 UTC today, by project.");
    for (folder, t) in &lasting.metrics.today().projects {
        e.sample(TODAY, &[("project", &lasting.metrics.label(folder))], t.bytes as f64);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use schema::update_status::{OtherSlot, UpdateStatus};

    #[test]
    fn the_update_families_say_which_version_runs_and_what_the_other_slot_holds() {
        let empty = update_families(None);
        assert!(empty.contains("# TYPE micromirror_update_info gauge") && !empty.contains("micromirror_update_info{"));
        let status = UpdateStatus {
            running_blessed: true,
            other_version: Some("20261201.000000".into()),
            other_slot: OtherSlot::Failed,
            newest_available: Some("20261201.000000".into()),
            last_check: Some(1_796_000_000),
            failed_versions: vec!["20261201.000000".into()],
            ..UpdateStatus::fresh("20261130.000000")
        };
        let text = update_families(Some(&status));
        assert!(
            text.contains(
                "micromirror_update_info{running=\"20261130.000000\",other=\"20261201.000000\",other_slot=\"failed\",newest=\"20261201.000000\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("micromirror_update_running_blessed 1"), "{text}");
        assert!(text.contains("micromirror_update_last_check_timestamp_seconds 1796000000"), "{text}");
        assert!(text.contains("micromirror_update_failed_versions 1"), "{text}");
        assert!(text.contains("micromirror_update_deferred_versions 0"), "{text}");
        assert!(text.contains("micromirror_update_last_check_failed 0"), "{text}");
    }

    #[test]
    fn each_checker_gives_its_lag_and_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("archlinux")).unwrap();
        std::fs::write(dir.path().join("archlinux/lastsync"), "1799992800\n").unwrap();
        let arch = schema::freshness::Freshness {
            checker: "Arch".into(),
            file: Some("lastsync".into()),
            out_of_sync_hours: 72,
        };
        let mut checkers = std::collections::BTreeMap::new();
        checkers.insert("archlinux".to_string(), ("archlinux".to_string(), arch.clone()));
        checkers.insert("kde".to_string(), ("kde".to_string(), schema::freshness::Freshness { file: None, ..arch }));
        let seen = checker_views(dir.path(), &checkers, &[], 1_800_000_000);
        assert_eq!(seen.len(), 1, "kde has no sync yet, so no figure: {seen:?}");
        let text = checker_families(&seen);
        assert!(
            text.contains("micromirror_sync_checker_behind_seconds{project=\"archlinux\",checker=\"Arch\"} 7200"),
            "{text}"
        );
        assert!(
            text.contains("micromirror_sync_checker_limit_seconds{project=\"archlinux\",checker=\"Arch\"} 259200"),
            "{text}"
        );
    }

    #[test]
    fn sync_families_label_each_project_by_its_catalog_name() {
        let status = schema::status::Status {
            last_success: Some(1_796_000_000),
            failures: 2,
            ..schema::status::Status::running("kde", "kdeftp", 1)
        };
        let text = sync_families(&[status], 21_600);
        assert!(text.contains("micromirror_sync_last_success_timestamp_seconds{project=\"kde\"} 1796000000"), "{text}");
        assert!(text.contains("micromirror_sync_failures{project=\"kde\"} 2"), "{text}");
        assert!(!text.contains("kdeftp"), "{text}");
    }
}
