//! Records to per-second series (bytes out, requests arriving), and the link's utilisation from
//! them at any resolution: quantiles, the share of time above a line, peak ÷ mean.

use serde::Serialize;

use crate::Record;

/// What happened in each second of a span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Unix second of the first slot.
    pub start: i64,
    /// Bytes sent in each second (a response's bytes spread evenly over its duration).
    pub bytes: Vec<f64>,
    /// Requests that arrived in each second (end − duration).
    pub requests: Vec<f64>,
}

/// A series may span at most this long (about 400 days) so a wild timestamp cannot ask for
/// gigabytes of slots; records beyond are clamped to its ends.
const MAX_SECONDS: i64 = 400 * 86_400;

impl Series {
    pub fn from_records(records: &[Record]) -> Series {
        let mut s = Series::default();
        for r in records {
            s.add(r.end, r.duration.unwrap_or(0.0), r.bytes);
        }
        s
    }

    /// Adds one response of `bytes` that ended at `end` after `duration` seconds, growing the
    /// span as needed (records arrive roughly in time order).
    pub fn add(&mut self, end: f64, duration: f64, bytes: u64) {
        let begin = end - duration.max(0.0);
        let (a, b) = (begin.floor() as i64, end.floor() as i64);
        if self.bytes.is_empty() {
            self.start = a;
        }
        if a < self.start {
            let grow = (self.start - a).min(MAX_SECONDS - self.bytes.len() as i64).max(0) as usize;
            self.bytes.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.requests.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.start -= grow as i64;
        }
        let want = (b - self.start + 1).clamp(1, MAX_SECONDS) as usize;
        if want > self.bytes.len() {
            self.bytes.resize(want, 0.0);
            self.requests.resize(want, 0.0);
        }
        let slot = |t: i64| (t - self.start).clamp(0, self.bytes.len() as i64 - 1) as usize;
        let (a, b) = (slot(a), slot(b));
        self.requests[a] += 1.0;
        let share = bytes as f64 / (b - a + 1) as f64;
        for v in &mut self.bytes[a..=b] {
            *v += share;
        }
    }

    pub fn seconds(&self) -> usize {
        self.bytes.len()
    }
}

/// Sums of consecutive windows of `window` slots (a last partial window is dropped unless it
/// is the only one).
pub fn windows(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let full: Vec<f64> = values.chunks_exact(window).map(|c| c.iter().sum()).collect();
    if full.is_empty() && !values.is_empty() {
        vec![values.iter().sum()]
    } else {
        full
    }
}

/// Utilisation of the link at one resolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utilisation {
    /// Window length in seconds.
    pub resolution_s: u64,
    /// Shares of the link (0.2 = 20 %).
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Share of the windows above `line`.
    pub above_line: f64,
    pub peak_to_mean: f64,
}

pub fn utilisation(bytes_per_second: &[f64], resolution_s: u64, link_mbit: f64, line: f64) -> Utilisation {
    let capacity = link_mbit * 1e6 / 8.0 * resolution_s as f64;
    let mut shares: Vec<f64> = windows(bytes_per_second, resolution_s as usize).iter().map(|b| b / capacity).collect();
    shares.sort_by(f64::total_cmp);
    let mean = if shares.is_empty() { 0.0 } else { shares.iter().sum::<f64>() / shares.len() as f64 };
    let max = shares.last().copied().unwrap_or(0.0);
    Utilisation {
        resolution_s,
        p50: quantile(&shares, 0.50),
        p95: quantile(&shares, 0.95),
        p99: quantile(&shares, 0.99),
        max,
        mean,
        above_line: if shares.is_empty() {
            0.0
        } else {
            shares.iter().filter(|s| **s > line).count() as f64 / shares.len() as f64
        },
        peak_to_mean: if mean > 0.0 { max / mean } else { 0.0 },
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(end: f64, duration: f64, bytes: u64) -> Record {
        Record { end, duration: Some(duration), bytes, project: "p".into() }
    }

    #[test]
    fn bytes_spread_over_the_response_and_requests_counted_at_arrival() {
        let s = Series::from_records(&[rec(10.0, 4.0, 500), rec(10.5, 0.0, 100)]);
        assert_eq!(s.start, 6);
        assert_eq!(s.bytes, vec![100.0, 100.0, 100.0, 100.0, 200.0]);
        assert_eq!(s.requests, vec![1.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn a_steady_30_percent_of_a_gigabit_is_30_percent_at_every_resolution() {
        let per_second = vec![0.3 * 1e9 / 8.0; 600];
        for res in [1, 60, 300] {
            let u = utilisation(&per_second, res, 1000.0, 0.2);
            assert!((u.p50 - 0.3).abs() < 1e-9 && (u.max - 0.3).abs() < 1e-9, "{u:?}");
            assert_eq!(u.above_line, 1.0);
            assert!((u.peak_to_mean - 1.0).abs() < 1e-9);
        }
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
    }
}
