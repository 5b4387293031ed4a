//! The box's capacity figures, kept up continuously: every second the control thread takes the
//! totals the request path counts (two relaxed atomic adds per response, in `metrics`) and
//! folds the difference into mirror-capacity's per-minute `History` (eight days, saved on the
//! state partition every minute and at exit); the metrics listener computes the utilisation
//! quantiles over the last hour and day, the dispersion and the verdict from it. Nothing here
//! runs on the request path.

use std::path::Path;
use std::sync::Mutex;

use mirror_capacity::history::History;
use mirror_capacity::series::utilisation;
use mirror_capacity::verdict::LINE;
use mirror_capacity::{analyse, Inputs, Tally};

use crate::exposition::{Exposition, Kind};

/// Days of per-minute history kept: a week and a day (about 270 KB).
pub const DAYS: usize = 8;

pub struct LiveCapacity {
    inner: Mutex<State>,
    pub link_mbit: f64,
}

struct State {
    history: History,
    /// The totals at the last fold.
    seen: Option<(u64, u64)>,
}

impl LiveCapacity {
    /// Resumes the history saved at `file` (a missing or unreadable file starts afresh).
    pub fn load(file: &Path, link_mbit: f64) -> LiveCapacity {
        let history = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<History>(&t).ok())
            .unwrap_or_else(|| History::new(DAYS));
        LiveCapacity { inner: Mutex::new(State { history, seen: None }), link_mbit }
    }

    /// Folds what went out since the last call (totals of bytes and requests) into second `now`.
    pub fn tick(&self, now: i64, bytes_total: u64, requests_total: u64) {
        let Ok(mut s) = self.inner.lock() else { return };
        if let Some((b, r)) = s.seen {
            let (db, dr) = (bytes_total.saturating_sub(b), requests_total.saturating_sub(r));
            s.history.add(now, db as f64, dr as f64);
        }
        s.seen = Some((bytes_total, requests_total));
    }

    /// Feeds a second directly (tests, and the trace benchmark).
    pub fn add(&self, now: i64, bytes: f64, requests: f64) {
        if let Ok(mut s) = self.inner.lock() {
            s.history.add(now, bytes, requests);
        }
    }

    pub fn save(&self, file: &Path) {
        let Ok(text) = self.inner.lock().map(|s| serde_json::to_string(&s.history).unwrap_or_default()) else {
            return;
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, file);
        }
    }

    /// The capacity families at `now`.
    pub fn expose(&self, e: &mut Exposition, now: i64) {
        let history = match self.inner.lock() {
            Ok(s) => s.history.clone(),
            Err(_) => return,
        };
        const UTIL: &str = "micromirror_link_utilisation_ratio";
        e.family(
            UTIL,
            Kind::Gauge,
            "Share of the link's capacity used per minute: p50, p95, p99 and max over the last hour and day.",
        );
        const DISP: &str = "micromirror_dispersion_index";
        e.family(
            DISP,
            Kind::Gauge,
            "Variance / mean of requests per window over the last day (1 for Poisson arrivals).",
        );
        const HURST: &str = "micromirror_hurst_exponent";
        e.family(HURST, Kind::Gauge, "Hurst exponent of the request counts over the last day (0.5 for Poisson).");
        const BASE: &str = "micromirror_capacity_baseline_ratio";
        e.family(BASE, Kind::Gauge, "Sustained baseline: the median 5-minute utilisation over the last day.");
        const VERDICT: &str = "micromirror_capacity_verdict";
        e.family(VERDICT, Kind::Gauge, "0 room (baseline under 10 %), 1 near (10-20 %), 2 overshot (over 20 %).");
        for (window, seconds) in [("1h", 3600), ("24h", 86_400)] {
            let s = history.series(now, seconds);
            let u = utilisation(&s.bytes, 60, self.link_mbit, LINE);
            // Not a summary (these are of a series, not of observations), so no `quantile` label.
            for (stat, v) in [("p50", u.p50), ("p95", u.p95), ("p99", u.p99), ("max", u.max)] {
                e.sample(UTIL, &[("window", window), ("stat", stat)], v);
            }
        }
        let day = Tally::from_series(history.series(now, 86_400));
        let report = analyse(&Inputs { tally: &day, link_mbit: self.link_mbit, disk_bytes: &Default::default() });
        for (w, v) in &report.dispersion.requests {
            e.sample(DISP, &[("window_seconds", w.as_str())], *v);
        }
        if let Some(h) = report.dispersion.hurst_requests {
            e.sample(HURST, &[], h);
        }
        e.sample(BASE, &[], report.baseline);
        e.sample(VERDICT, &[("verdict", report.verdict.as_str())], f64::from(report.verdict.level()));
    }

    /// The verdict over the last day, for tests.
    pub fn verdict(&self, now: i64) -> mirror_capacity::verdict::Verdict {
        let history = self.inner.lock().map(|s| s.history.clone()).unwrap_or_default();
        let day = Tally::from_series(history.series(now, 86_400));
        analyse(&Inputs { tally: &day, link_mbit: self.link_mbit, disk_bytes: &Default::default() }).verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirror_capacity::verdict::Verdict;

    #[test]
    fn the_live_path_gives_the_log_path_s_verdicts_and_exposes_them() {
        let now = 1_790_000_000;
        for (share, verdict) in [(0.30, Verdict::Overshot), (0.03, Verdict::Room)] {
            let dir = tempfile::tempdir().unwrap();
            let live = LiveCapacity::load(&dir.path().join("capacity.json"), 1000.0);
            // Two hours at `share` of a gigabit, one request a second, fed through tick().
            let per_second = (share * 1e9 / 8.0) as u64;
            for s in 0..=7200u64 {
                live.tick(now - 7200 + s as i64, s * per_second, s);
            }
            assert_eq!(live.verdict(now), verdict, "{share}");
            let mut e = Exposition::default();
            live.expose(&mut e, now);
            let text = e.finish();
            let level = verdict.level();
            assert!(
                text.contains(&format!("micromirror_capacity_verdict{{verdict=\"{}\"}} {level}", verdict.as_str())),
                "{text}"
            );
            assert!(text.contains("micromirror_link_utilisation_ratio{window=\"1h\",stat=\"p50\"}"), "{text}");
            // Saved and resumed, the history gives the same verdict.
            live.save(&dir.path().join("capacity.json"));
            let again = LiveCapacity::load(&dir.path().join("capacity.json"), 1000.0);
            assert_eq!(again.verdict(now), verdict);
        }
    }
}
