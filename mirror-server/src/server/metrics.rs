//! Accounting per project (the first path segment): requests by status class and bytes sent,
//! with hourly buckets for "bytes served in the last 24 h", bytes on disk from mirror-sync's
//! status files, and the CDN efficiency (served per day ÷ on disk). Prometheus text output.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default, Clone)]
struct Counters {
    requests: [u64; 5],
    bytes: u64,
    /// (hour since epoch, bytes) for the last 24 hours.
    hourly: [(u64, u64); 24],
}

#[derive(Default)]
pub struct Metrics {
    projects: Mutex<BTreeMap<String, Counters>>,
}

/// Requests outside any project folder (404s, assets) are counted under this name.
pub const NO_PROJECT: &str = "_none";

impl Metrics {
    pub fn record(&self, project: Option<&str>, status: u16, bytes: u64) {
        let hour = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 3600).unwrap_or(0);
        self.record_at(project, status, bytes, hour);
    }

    pub fn record_at(&self, project: Option<&str>, status: u16, bytes: u64, hour: u64) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let Ok(mut map) = self.projects.lock() else {
            return;
        };
        let name = project.unwrap_or(NO_PROJECT);
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
    }

    /// Bytes served by `project` in the 24 hours up to `hour`.
    pub fn last_day(&self, project: &str, hour: u64) -> u64 {
        let Ok(map) = self.projects.lock() else {
            return 0;
        };
        map.get(project)
            .map_or(0, |c| c.hourly.iter().filter(|(h, _)| *h + 24 > hour && *h <= hour).map(|(_, b)| b).sum())
    }

    pub fn prometheus(&self, on_disk: &BTreeMap<String, u64>) -> String {
        let hour = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 3600).unwrap_or(0);
        let mut s = String::new();
        s.push_str("# HELP micromirror_http_requests_total Requests answered, by project and status class.\n# TYPE micromirror_http_requests_total counter\n");
        let snapshot: Vec<(String, Counters)> = match self.projects.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (name, c) in &snapshot {
            for (i, n) in c.requests.iter().enumerate() {
                let _ = writeln!(s, "micromirror_http_requests_total{{project=\"{name}\",class=\"{}xx\"}} {n}", i + 1);
            }
        }
        s.push_str("# HELP micromirror_http_sent_bytes_total Bytes sent, by project.\n# TYPE micromirror_http_sent_bytes_total counter\n");
        for (name, c) in &snapshot {
            let _ = writeln!(s, "micromirror_http_sent_bytes_total{{project=\"{name}\"}} {}", c.bytes);
        }
        s.push_str("# HELP micromirror_project_disk_bytes Bytes on disk, by project (from mirror-sync).\n# TYPE micromirror_project_disk_bytes gauge\n");
        for (name, bytes) in on_disk {
            let _ = writeln!(s, "micromirror_project_disk_bytes{{project=\"{name}\"}} {bytes}");
        }
        s.push_str("# HELP micromirror_cdn_efficiency Bytes served in the last 24 h divided by bytes on disk.\n# TYPE micromirror_cdn_efficiency gauge\n");
        for (name, bytes) in on_disk.iter().filter(|(_, b)| **b > 0) {
            let served = self.last_day(name, hour);
            let _ =
                writeln!(s, "micromirror_cdn_efficiency{{project=\"{name}\"}} {:.4}", served as f64 / *bytes as f64);
        }
        s
    }
}

/// Bytes on disk per project, read from mirror-sync's status files (`size_bytes`).
pub fn disk_usage_from_status(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let (Some(name), Some(size)) =
            (v["project_path"].as_str().or(path.file_stem().and_then(|s| s.to_str())), v["size_bytes"].as_u64())
        {
            out.insert(name.to_string(), size);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_bytes_and_the_last_day() {
        let m = Metrics::default();
        m.record_at(Some("fedora"), 200, 1000, 100);
        m.record_at(Some("fedora"), 404, 10, 100);
        m.record_at(Some("fedora"), 206, 500, 120);
        m.record_at(None, 404, 10, 120);
        assert_eq!(m.last_day("fedora", 120), 1510);
        assert_eq!(m.last_day("fedora", 125), 500);
        assert_eq!(m.last_day("fedora", 110), 1010);
        let text = m.prometheus(&BTreeMap::from([("fedora".to_string(), 1000)]));
        assert!(text.contains("micromirror_http_requests_total{project=\"fedora\",class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("micromirror_http_sent_bytes_total{project=\"fedora\"} 1510"));
        assert!(text.contains("micromirror_http_requests_total{project=\"_none\",class=\"4xx\"} 1"));
        assert!(text.contains("micromirror_project_disk_bytes{project=\"fedora\"} 1000"));
    }
}
