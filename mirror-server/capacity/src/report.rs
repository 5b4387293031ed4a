//! Everything `mirror-server capacity` prints, from records and the disk sizes: the JSON
//! (every figure) and the table for people.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::dispersion::{dispersion, Dispersion};
use crate::series::{utilisation, Series, Utilisation};
use crate::verdict::{move_off, Verdict, LINE};
use crate::Record;

pub struct Inputs<'a> {
    pub tally: &'a Tally,
    pub link_mbit: f64,
    /// Bytes on disk per project folder, where known.
    pub disk_bytes: &'a BTreeMap<String, u64>,
}

/// Records folded as they come (a 10-million-line log is never held in memory): the
/// per-second series and each project's requests and bytes.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub series: Series,
    pub projects: BTreeMap<String, (u64, u64)>,
    /// Responses whose record gave no duration (a plain combined log).
    pub untimed: u64,
    /// The link's rate in bytes a second: an untimed response is spread over the time it
    /// takes at this rate, the least it can have taken.
    link_bytes_per_s: f64,
}

impl Tally {
    /// An empty tally for a link of `link_mbit`.
    pub fn new(link_mbit: f64) -> Tally {
        Tally { link_bytes_per_s: link_mbit * 1e6 / 8.0, ..Tally::default() }
    }

    /// A tally of a series measured second by second (the server's own history), with no
    /// per-project figures.
    pub fn from_series(series: Series) -> Tally {
        Tally { series, ..Tally::default() }
    }

    pub fn add(&mut self, r: &Record) {
        let duration = match r.duration {
            Some(d) => d,
            None => {
                self.untimed += 1;
                if self.link_bytes_per_s > 0.0 {
                    r.bytes as f64 / self.link_bytes_per_s
                } else {
                    0.0
                }
            }
        };
        self.series.add(r.end, duration, r.bytes);
        match self.projects.get_mut(&r.project) {
            Some(e) => {
                e.0 += 1;
                e.1 += r.bytes;
            }
            None => {
                self.projects.insert(r.project.clone(), (1, r.bytes));
            }
        }
    }

    pub fn from_records(records: &[Record], link_mbit: f64) -> Tally {
        let mut t = Tally::new(link_mbit);
        for r in records {
            t.add(r);
        }
        t
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    /// The sustained baseline the verdict is on: the median 5-minute utilisation.
    pub baseline: f64,
    pub link_mbit: f64,
    pub requests: u64,
    pub bytes: u64,
    pub seconds: u64,
    /// By resolution in seconds ("1", "60", "300").
    pub utilisation: BTreeMap<String, Utilisation>,
    pub dispersion: Dispersion,
    pub projects: Vec<ProjectShare>,
    /// When overshot: the projects whose move brings the baseline under the line.
    pub move_off: Vec<String>,
    /// Responses whose record gave no duration.
    pub untimed_requests: u64,
    /// What the figures assume or leave out, and why (printed under the table).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectShare {
    pub project: String,
    pub requests_share: f64,
    pub bytes_share: f64,
    pub bytes_per_day: f64,
    pub disk_bytes: Option<u64>,
    /// Bytes served per day ÷ bytes on disk.
    pub cdn_efficiency: Option<f64>,
}

pub fn analyse(inputs: &Inputs) -> Report {
    let series = &inputs.tally.series;
    let untimed = inputs.tally.untimed;
    let mut notes = Vec::new();
    // Without durations, a second holds whatever the log's clock put in it: a 1 s figure would
    // measure the timestamps, not the link.
    let resolutions: &[u64] = if untimed > 0 { &[60, 300] } else { &[1, 60, 300] };
    if untimed > 0 {
        notes.push(format!(
            "{untimed} of {} responses carry no request time (nginx's plain combined format): each is spread over the time it takes at the link's full {} Mbit/s before it ended, the least it can have taken, so the figures are upper bounds; the 1 s figures are left out (add $request_time to the log format for them)",
            inputs.tally.projects.values().map(|(r, _)| r).sum::<u64>(),
            inputs.link_mbit
        ));
    }
    let mut util = BTreeMap::new();
    for &res in resolutions {
        util.insert(res.to_string(), utilisation(&series.bytes, res, inputs.link_mbit, LINE));
    }
    if util.values().any(|u| u.max > 1.0) {
        notes.push(
            "a share shown as \"over 100 %\" is more than the link can carry: the records' times are coarser than that window (it is not a measurement)".into(),
        );
    }
    let baseline = util.get("300").map_or(0.0, |u| u.p50);
    let days = (series.seconds() as f64 / 86_400.0).max(1.0 / 24.0);
    let per = &inputs.tally.projects;
    let (total_req, total_bytes) = per.values().fold((0u64, 0u64), |(a, b), (r, by)| (a + r, b + by));
    let mut projects: Vec<ProjectShare> = per
        .iter()
        .map(|(name, (req, bytes))| {
            let disk = inputs.disk_bytes.get(name.as_str()).copied();
            let per_day = *bytes as f64 / days;
            ProjectShare {
                project: name.to_string(),
                requests_share: *req as f64 / total_req.max(1) as f64,
                bytes_share: *bytes as f64 / total_bytes.max(1) as f64,
                bytes_per_day: per_day,
                disk_bytes: disk,
                cdn_efficiency: disk.filter(|d| *d > 0).map(|d| per_day / d as f64),
            }
        })
        .collect();
    projects.sort_by(|a, b| b.bytes_share.total_cmp(&a.bytes_share));
    let verdict = Verdict::of(baseline);
    let shares: Vec<(String, f64)> = projects.iter().map(|p| (p.project.clone(), p.bytes_share)).collect();
    Report {
        verdict,
        baseline,
        link_mbit: inputs.link_mbit,
        requests: total_req,
        bytes: total_bytes,
        seconds: series.seconds() as u64,
        utilisation: util,
        dispersion: dispersion(&series.requests, &series.bytes),
        projects,
        move_off: if verdict == Verdict::Overshot { move_off(baseline, &shares) } else { Vec::new() },
        untimed_requests: untimed,
        notes,
    }
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// For people.
    pub fn table(&self) -> String {
        let pct = |v: f64| format!("{:.1} %", v * 100.0);
        // More than the link carries is an artefact of the records' times (said in the notes).
        let util_pct = |v: f64| if v > 1.0 { "over 100 %".to_string() } else { pct(v) };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verdict: {} (baseline {} of {} Mbit/s: the median 5-minute utilisation; room < 10 %, near 10-20 %, overshot > 20 %)",
            self.verdict.as_str(),
            pct(self.baseline),
            self.link_mbit
        );
        if !self.move_off.is_empty() {
            let _ = writeln!(s, "to get back under 20 %, move off: {}", self.move_off.join(", "));
        }
        let _ = writeln!(
            s,
            "{} requests, {:.1} GB over {:.1} h",
            self.requests,
            self.bytes as f64 / 1e9,
            self.seconds as f64 / 3600.0
        );
        let _ = writeln!(
            s,
            "\nutilisation  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "p50", "p95", "p99", "max", ">20 %", "peak/mean"
        );
        for (res, label) in [("1", "1 s"), ("60", "1 min"), ("300", "5 min")] {
            if let Some(u) = self.utilisation.get(res) {
                let _ = writeln!(
                    s,
                    "{label:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10.1}",
                    util_pct(u.p50),
                    util_pct(u.p95),
                    util_pct(u.p99),
                    util_pct(u.max),
                    pct(u.above_line),
                    u.peak_to_mean
                );
            }
        }
        let _ = writeln!(s, "\ndispersion (variance/mean; 1 = Poisson)");
        for w in crate::dispersion::WINDOWS {
            if let Some(v) = self.dispersion.requests.get(&w.to_string()) {
                let _ = writeln!(s, "  {w:>5} s   requests {v:>10.2}");
            }
        }
        if let Some(h) = self.dispersion.hurst_requests {
            let _ = writeln!(s, "  Hurst exponent {h:.2} (0.5 = Poisson; towards 1 = bursty at every scale)");
        }
        let _ = writeln!(s, "\n{:<24} {:>9} {:>9} {:>12} {:>10}", "project", "requests", "bytes", "GB/day", "CDN eff.");
        for p in &self.projects {
            let eff = p.cdn_efficiency.map_or("-".to_string(), |e| format!("{e:.2}"));
            let _ = writeln!(
                s,
                "{:<24} {:>9} {:>9} {:>12.1} {:>10}",
                p.project,
                pct(p.requests_share),
                pct(p.bytes_share),
                p.bytes_per_day / 1e9,
                eff
            );
        }
        for note in &self.notes {
            let _ = writeln!(s, "\nnote: {note}");
        }
        s
    }
}
