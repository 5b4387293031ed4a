//! Accounting per project (the first path segment): requests by status class and bytes sent,
//! with hourly buckets for "bytes served in the last 24 h", per release (by the catalog's rule),
//! bytes on disk from mirror-sync's status files, and the CDN efficiency (served per day ÷ on
//! disk). Prometheus text output, and today's totals kept in a file for `mirror-server report`.
//! Counting is by folder (what a request names); the exported `project` label is the catalog's
//! project name (`fedora-x86_64`, not its folder `fedora`), so the fleet's dashboards and the
//! profiles speak of the same thing and two projects sharing a folder name never merge.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::exposition::{Exposition, Kind};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default, Clone)]
struct Counters {
    requests: [u64; 5],
    bytes: u64,
    /// (hour since epoch, bytes) for the last 24 hours.
    hourly: [(u64, u64); 24],
    /// (day since epoch, totals of that day) for `mirror-server report`.
    today: (u64, DayTotals),
}

/// Requests and bytes of one project (or release) on one UTC day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DayTotals {
    pub requests: u64,
    pub bytes: u64,
}

/// Today's totals per project, as kept in the counters file.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Today {
    /// Days since the epoch (UTC).
    pub day: u64,
    pub projects: BTreeMap<String, DayTotals>,
}

#[derive(Default)]
pub struct Metrics {
    /// Every response's bytes and count, for the capacity history (read once a second).
    pub bytes_total: std::sync::atomic::AtomicU64,
    pub requests_total: std::sync::atomic::AtomicU64,
    projects: Mutex<BTreeMap<String, Counters>>,
    /// (project, release) → totals since start; only answered requests (below 400) count, so
    /// a client cannot invent releases.
    releases: Mutex<BTreeMap<(String, String), DayTotals>>,
    /// Folder → catalog project name, for the `project` label.
    names: Mutex<BTreeMap<String, String>>,
}

/// `cargo xtask bench capacity` measures what the live capacity accounting costs by running
/// the server with MIRROR_SERVER_NO_CAPACITY_ACCOUNTING set; nothing else sets it.
static NO_CAPACITY_ACCOUNTING: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("MIRROR_SERVER_NO_CAPACITY_ACCOUNTING").is_some());

/// Requests outside any project folder (404s, assets) are counted under this name.
pub const NO_PROJECT: &str = "_none";

impl Metrics {
    pub fn record(&self, project: Option<&str>, release: Option<&str>, status: u16, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if !*NO_CAPACITY_ACCOUNTING {
            self.bytes_total.fetch_add(bytes, Relaxed);
            self.requests_total.fetch_add(1, Relaxed);
        }
        let hour = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 3600).unwrap_or(0);
        self.record_at(project, status, bytes, hour);
        if let (Some(p), Some(r), true) = (project, release, status < 400) {
            if let Ok(mut map) = self.releases.lock() {
                let t = map.entry((p.to_string(), r.to_string())).or_default();
                t.requests += 1;
                t.bytes += bytes;
            }
        }
    }

    /// Today's totals so far.
    pub fn today(&self) -> Today {
        let day = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0);
        let Ok(map) = self.projects.lock() else {
            return Today::default();
        };
        let projects = map.iter().filter(|(_, c)| c.today.0 == day).map(|(k, c)| (k.clone(), c.today.1)).collect();
        Today { day, projects }
    }

    /// Continues counting from totals a previous run saved today (a restart keeps "today").
    pub fn resume_today(&self, saved: Today) {
        let day = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0);
        if saved.day != day {
            return;
        }
        if let Ok(mut map) = self.projects.lock() {
            for (name, t) in saved.projects {
                let c = map.entry(name).or_default();
                if c.today.0 != day {
                    c.today = (day, DayTotals::default());
                }
                c.today.1.requests += t.requests;
                c.today.1.bytes += t.bytes;
            }
        }
    }

    pub fn record_at(&self, project: Option<&str>, status: u16, bytes: u64, hour: u64) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let Ok(mut map) = self.projects.lock() else {
            return;
        };
        // A project becomes a label once something in it was served: 404s for invented
        // folders all count under NO_PROJECT, so scanners cannot grow the series without bound.
        let name = match project {
            Some(p) if status < 400 || map.contains_key(p) => p,
            _ => NO_PROJECT,
        };
        let c = match map.get_mut(name) {
            Some(c) => c,
            None => map.entry(name.to_string()).or_default(),
        };
        c.requests[class] += 1;
        c.bytes += bytes;
        let slot = &mut c.hourly[(hour % 24) as usize];
        if slot.0 != hour {
            *slot = (hour, 0);
        }
        slot.1 += bytes;
        if c.today.0 != hour / 24 {
            c.today = (hour / 24, DayTotals::default());
        }
        c.today.1.requests += 1;
        c.today.1.bytes += bytes;
    }

    /// Bytes served by `project` in the 24 hours up to `hour`.
    pub fn last_day(&self, project: &str, hour: u64) -> u64 {
        let Ok(map) = self.projects.lock() else {
            return 0;
        };
        map.get(project)
            .map_or(0, |c| c.hourly.iter().filter(|(h, _)| *h + 24 > hour && *h <= hour).map(|(_, b)| b).sum())
    }

    /// Counts from zero for these projects (folder → catalog name), before any request
    /// (Prometheus counters exist from the start; a project's series do not appear only once it
    /// is first asked for), and labels them by name.
    pub fn host(&self, projects: &BTreeMap<String, String>) {
        if let Ok(mut map) = self.projects.lock() {
            for folder in projects.keys() {
                map.entry(folder.clone()).or_default();
            }
            map.entry(NO_PROJECT.to_string()).or_default();
        }
        if let Ok(mut names) = self.names.lock() {
            names.clone_from(projects);
        }
    }

    /// The `project` label of a folder: its catalog name, or the folder when no hosted project
    /// lives there (a project dropped from the profile whose files are still served).
    pub fn label(&self, folder: &str) -> String {
        self.names.lock().ok().and_then(|n| n.get(folder).cloned()).unwrap_or_else(|| folder.to_string())
    }

    /// The per-project and per-release families, and bytes on disk with the CDN efficiency.
    pub fn expose(&self, e: &mut Exposition, on_disk: &BTreeMap<String, u64>) {
        let hour = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 3600).unwrap_or(0);
        let snapshot: Vec<(String, Counters)> = match self.projects.lock() {
            Ok(map) => map.iter().map(|(k, v)| (self.label(k), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        const REQUESTS: &str = "micromirror_http_requests_total";
        e.family(REQUESTS, Kind::Counter, "Requests answered, by project (first path segment) and status class.");
        for (name, c) in &snapshot {
            for (i, n) in c.requests.iter().enumerate() {
                let class = format!("{}xx", i + 1);
                e.sample(REQUESTS, &[("project", name), ("class", &class)], *n as f64);
            }
        }
        const SENT: &str = "micromirror_http_sent_bytes_total";
        e.family(SENT, Kind::Counter, "Bytes sent (heads and bodies, aborted transfers included), by project.");
        for (name, c) in &snapshot {
            e.sample(SENT, &[("project", name)], c.bytes as f64);
        }
        let releases: Vec<((String, String), DayTotals)> = match self.releases.lock() {
            Ok(map) => map.iter().map(|((p, r), v)| ((self.label(p), r.clone()), *v)).collect(),
            Err(_) => Vec::new(),
        };
        const RELEASE_REQUESTS: &str = "micromirror_release_requests_total";
        e.family(RELEASE_REQUESTS, Kind::Counter, "Answered requests, by project and release (the catalog's rule).");
        for ((p, r), t) in &releases {
            e.sample(RELEASE_REQUESTS, &[("project", p), ("release", r)], t.requests as f64);
        }
        const RELEASE_SENT: &str = "micromirror_release_sent_bytes_total";
        e.family(RELEASE_SENT, Kind::Counter, "Bytes sent, by project and release.");
        for ((p, r), t) in &releases {
            e.sample(RELEASE_SENT, &[("project", p), ("release", r)], t.bytes as f64);
        }
        const DISK: &str = "micromirror_project_disk_bytes";
        e.family(DISK, Kind::Gauge, "Bytes on disk, by project (from mirror-sync's status files).");
        for (folder, bytes) in on_disk {
            e.sample(DISK, &[("project", &self.label(folder))], *bytes as f64);
        }
        const EFFICIENCY: &str = "micromirror_cdn_efficiency_ratio";
        e.family(EFFICIENCY, Kind::Gauge, "Bytes served in the last 24 h divided by bytes on disk, by project.");
        for (folder, bytes) in on_disk.iter().filter(|(_, b)| **b > 0) {
            let served = self.last_day(folder, hour);
            e.sample(EFFICIENCY, &[("project", &self.label(folder))], served as f64 / *bytes as f64);
        }
    }
}

/// Today's totals as the last run saved them; none when the file is missing. A file that does
/// not read (truncated by a crash) is moved aside as `counters.json.unreadable`, said so in the
/// log, and counting starts again from zero.
pub fn load_counters(path: &Path) -> Today {
    let Ok(text) = std::fs::read_to_string(path) else { return Today::default() };
    match serde_json::from_str(&text) {
        Ok(today) => today,
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            let moved = std::fs::rename(path, &aside);
            tracing::warn!(file = %path.display(), reason = %e, moved_to = %aside.display(), moved = moved.is_ok(), "unreadable counters file set aside; today's counts start from zero");
            Today::default()
        }
    }
}

/// Writes today's totals atomically (a temporary file renamed over the old one).
pub fn save_counters(path: &Path, today: &Today) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expose(m: &Metrics, on_disk: &BTreeMap<String, u64>) -> String {
        let mut e = Exposition::default();
        m.expose(&mut e, on_disk);
        e.finish()
    }

    #[test]
    fn hosted_projects_count_from_zero_before_any_request() {
        let m = Metrics::default();
        m.host(&BTreeMap::from([("fedora".to_string(), "fedora".to_string())]));
        let text = expose(&m, &BTreeMap::new());
        assert!(text.contains("micromirror_http_requests_total{project=\"fedora\",class=\"2xx\"} 0"), "{text}");
        assert!(text.contains("micromirror_http_sent_bytes_total{project=\"_none\"} 0"), "{text}");
    }

    #[test]
    fn counts_classes_bytes_and_the_last_day() {
        let m = Metrics::default();
        m.record_at(Some("fedora"), 200, 1000, 100);
        m.record_at(Some("fedora"), 404, 10, 100);
        m.record_at(Some("fedora"), 206, 500, 120);
        m.record_at(None, 404, 10, 120);
        m.record_at(Some("invented-by-a-scanner"), 404, 10, 120);
        assert_eq!(m.last_day("fedora", 120), 1510);
        assert_eq!(m.last_day("fedora", 125), 500);
        assert_eq!(m.last_day("fedora", 110), 1010);
        let text = expose(&m, &BTreeMap::from([("fedora".to_string(), 1000)]));
        assert!(text.contains("micromirror_http_requests_total{project=\"fedora\",class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("micromirror_http_sent_bytes_total{project=\"fedora\"} 1510"));
        assert!(text.contains("micromirror_http_requests_total{project=\"_none\",class=\"4xx\"} 2"), "{text}");
        assert!(!text.contains("invented-by-a-scanner"));
        assert!(text.contains("micromirror_project_disk_bytes{project=\"fedora\"} 1000"));
    }

    #[test]
    fn labels_are_the_catalog_names_not_the_folders() {
        let m = Metrics::default();
        m.host(&BTreeMap::from([
            ("fedora".to_string(), "fedora-x86_64".to_string()),
            ("epel".to_string(), "epel-x86_64".to_string()),
        ]));
        m.record(Some("fedora"), Some("41"), 200, 100);
        m.record(Some("retired"), None, 200, 7);
        let text = expose(&m, &BTreeMap::from([("fedora".to_string(), 1000)]));
        for series in [
            "micromirror_http_requests_total{project=\"fedora-x86_64\",class=\"2xx\"} 1",
            "micromirror_http_sent_bytes_total{project=\"epel-x86_64\"} 0",
            "micromirror_release_requests_total{project=\"fedora-x86_64\",release=\"41\"} 1",
            "micromirror_project_disk_bytes{project=\"fedora-x86_64\"} 1000",
            "micromirror_cdn_efficiency_ratio{project=\"fedora-x86_64\"} 0.1",
            // Files of a project no longer hosted are still counted, under their folder.
            "micromirror_http_sent_bytes_total{project=\"retired\"} 7",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        assert!(!text.contains("project=\"fedora\""), "{text}");
    }

    #[test]
    fn releases_count_answered_requests_only_and_today_resumes_after_a_restart() {
        let m = Metrics::default();
        m.record(Some("fedora"), Some("41"), 200, 100);
        m.record(Some("fedora"), Some("41"), 206, 50);
        m.record(Some("fedora"), Some("99999"), 404, 10);
        let text = expose(&m, &BTreeMap::new());
        assert!(text.contains("micromirror_release_requests_total{project=\"fedora\",release=\"41\"} 2"), "{text}");
        assert!(text.contains("micromirror_release_sent_bytes_total{project=\"fedora\",release=\"41\"} 150"));
        assert!(!text.contains("99999"), "a 404 does not create a release");
        let saved = m.today();
        // A 404 inside a known project counts for the project (as in the status classes).
        assert_eq!(saved.projects["fedora"], DayTotals { requests: 3, bytes: 160 });
        let restarted = Metrics::default();
        restarted.resume_today(saved.clone());
        restarted.record(Some("fedora"), None, 200, 1);
        assert_eq!(restarted.today().projects["fedora"], DayTotals { requests: 4, bytes: 161 });
        let stale = Metrics::default();
        stale.resume_today(Today { day: saved.day - 1, ..saved });
        assert!(stale.today().projects.is_empty(), "yesterday's totals are not today's");
    }
}
