//! The index of dispersion (variance ÷ mean of the counts per window) from 1 s to 1 h, and the
//! Hurst exponent it implies. For Poisson arrivals the index is 1 at every window; for bursty,
//! long-range dependent traffic (what software mirrors see: release days, CI fleets, mirror
//! checkers) it grows with the window as m^(2H−1), so the slope of log(index) over log(window)
//! gives H: 0.5 for Poisson, towards 1 the further the traffic is from it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::series::windows;

/// Window lengths in seconds, 1 s to 1 h.
pub const WINDOWS: [u64; 8] = [1, 10, 60, 300, 600, 900, 1800, 3600];

/// A window needs at least this many samples for its variance to mean anything.
const MIN_SAMPLES: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dispersion {
    /// Window length (seconds, as a string: JSON keys) → variance ÷ mean of request counts.
    pub requests: BTreeMap<String, f64>,
    /// The same for bytes per window (in bytes: a scale, comparable across windows).
    pub bytes: BTreeMap<String, f64>,
    /// Hurst exponent from the request counts' variance-time slope (0.5: Poisson).
    pub hurst_requests: Option<f64>,
    pub hurst_bytes: Option<f64>,
    /// How the request index grows from the shortest to the longest window (1 for Poisson).
    pub growth_requests: Option<f64>,
}

pub fn dispersion(requests: &[f64], bytes: &[f64]) -> Dispersion {
    let (req, h_req) = indices(requests);
    let (byt, h_byt) = indices(bytes);
    let growth = {
        let vals: Vec<f64> = WINDOWS.iter().filter_map(|w| req.get(&w.to_string()).copied()).collect();
        match (vals.first(), vals.last()) {
            (Some(a), Some(b)) if *a > 0.0 && vals.len() > 1 => Some(b / a),
            _ => None,
        }
    };
    Dispersion { requests: req, bytes: byt, hurst_requests: h_req, hurst_bytes: h_byt, growth_requests: growth }
}

fn indices(per_second: &[f64]) -> (BTreeMap<String, f64>, Option<f64>) {
    let mut out = BTreeMap::new();
    let mut points = Vec::new();
    for w in WINDOWS {
        let counts = windows(per_second, w as usize);
        if counts.len() < MIN_SAMPLES {
            continue;
        }
        let n = counts.len() as f64;
        let mean = counts.iter().sum::<f64>() / n;
        if mean <= 0.0 {
            continue;
        }
        let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let index = var / mean;
        out.insert(w.to_string(), index);
        if index > 0.0 {
            points.push(((w as f64).ln(), index.ln()));
        }
    }
    (out, slope(&points).map(|b| ((b + 1.0) / 2.0).clamp(0.0, 1.5)))
}

/// Least-squares slope of (x, y) points; `None` below two points.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}
