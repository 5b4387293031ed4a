//! Traces with known properties, written here: Poisson arrivals give an index of dispersion
//! near 1 at every window; heavy-tailed ON/OFF sources (Pareto periods, the classic model of
//! self-similar traffic) give an index that grows with the window and a Hurst exponent well
//! above 0.5; a steady 30 % of a gigabit is overshot, 3 % is room — and the same through the
//! access-log text path.

use std::collections::BTreeMap;

use mirror_capacity::verdict::Verdict;
use mirror_capacity::{analyse, log, Inputs, Record, Tally};

const START: f64 = 1_790_000_000.0;

fn exp(rng: &mut fastrand::Rng, rate: f64) -> f64 {
    -(1.0 - rng.f64()).ln() / rate
}

fn pareto(rng: &mut fastrand::Rng, alpha: f64, min: f64) -> f64 {
    min / (1.0 - rng.f64()).powf(1.0 / alpha)
}

/// Poisson arrivals at `rate` per second for `seconds`, each response `bytes` long and instant.
fn poisson(rate: f64, seconds: f64, bytes: u64, seed: u64) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = START;
    let mut out = Vec::new();
    while t < START + seconds {
        t += exp(&mut rng, rate);
        out.push(Record { end: t, duration: Some(0.0), bytes, project: "p".into() });
    }
    out
}

/// Ten ON/OFF sources with Pareto(1.4) periods: Poisson at `on_rate` while on, silent while off.
fn on_off(seconds: f64, on_rate: f64, seed: u64) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    for _ in 0..10 {
        let mut t = START + rng.f64() * 100.0;
        let mut on = rng.bool();
        while t < START + seconds {
            let period = pareto(&mut rng, 1.4, 20.0);
            if on {
                let end = (t + period).min(START + seconds);
                let mut a = t;
                while a < end {
                    a += exp(&mut rng, on_rate);
                    out.push(Record { end: a, duration: Some(0.0), bytes: 10_000, project: "p".into() });
                }
            }
            t += period;
            on = !on;
        }
    }
    out
}

fn report(records: &[Record]) -> mirror_capacity::Report {
    analyse(&Inputs { tally: &Tally::from_records(records, 1000.0), link_mbit: 1000.0, disk_bytes: &BTreeMap::new() })
}

#[test]
fn poisson_arrivals_have_a_dispersion_near_one_at_every_window() {
    let r = report(&poisson(20.0, 6.0 * 3600.0, 1000, 1));
    for (w, idc) in &r.dispersion.requests {
        if w.parse::<u64>().unwrap() <= 900 {
            assert!((0.7..1.3).contains(idc), "window {w}: {idc} ({:?})", r.dispersion.requests);
        }
    }
    let h = r.dispersion.hurst_requests.unwrap();
    assert!((0.4..0.6).contains(&h), "Hurst {h}");
}

#[test]
fn heavy_tailed_on_off_bursts_have_a_dispersion_that_grows_with_the_window() {
    let r = report(&on_off(6.0 * 3600.0, 5.0, 2));
    let idc = |w: &str| r.dispersion.requests[w];
    assert!(idc("10") > 2.0 * idc("1"), "{:?}", r.dispersion.requests);
    assert!(idc("300") > 5.0 * idc("10"), "{:?}", r.dispersion.requests);
    assert!(idc("1800") > idc("300"), "{:?}", r.dispersion.requests);
    let h = r.dispersion.hurst_requests.unwrap();
    assert!(h > 0.7, "Hurst {h}: {:?}", r.dispersion.requests);
}

/// Responses at `share` of a gigabit, sustained for two hours, as records and as log lines.
fn sustained(share: f64) -> (Vec<Record>, String) {
    let per_second = (share * 1e9 / 8.0) as u64;
    let mut records = Vec::new();
    let mut text = String::new();
    for s in 0..7200u64 {
        let end = START + s as f64 + 0.5;
        let project = if s % 4 == 0 { "ubuntu-releases" } else { "fedora" };
        records.push(Record { end, duration: Some(0.0), bytes: per_second, project: project.into() });
        let when = jiff::Timestamp::from_second(end as i64).unwrap().strftime("%d/%b/%Y:%H:%M:%S +0000");
        text.push_str(&format!(
            "192.0.2.7 - - [{when}] \"GET /{project}/f HTTP/1.1\" 200 {per_second} \"-\" \"curl/8\" 0.000 TLSv1.3\n"
        ));
    }
    (records, text)
}

#[test]
fn thirty_percent_sustained_is_overshot_and_three_percent_is_room_through_either_path() {
    for (share, verdict) in [(0.30, Verdict::Overshot), (0.03, Verdict::Room)] {
        let (records, text) = sustained(share);
        let direct = report(&records);
        let parsed: Vec<Record> = text.lines().map(|l| log::parse_line(l).unwrap()).collect();
        let via_log = report(&parsed);
        for r in [&direct, &via_log] {
            assert_eq!(r.verdict, verdict, "{share}: baseline {}", r.baseline);
            assert!((r.baseline - share).abs() < 0.01, "{share}: baseline {}", r.baseline);
        }
        if verdict == Verdict::Overshot {
            assert_eq!(direct.move_off, ["fedora"], "75 % of the bytes: moving it brings 30 % to 7.5 %");
        }
    }
}

#[test]
fn cdn_efficiency_is_bytes_per_day_over_bytes_on_disk_and_json_has_every_figure() {
    let (records, _) = sustained(0.03);
    let disk: BTreeMap<String, u64> = [("fedora".to_string(), 1_000_000_000_000u64)].into();
    let r = analyse(&Inputs { tally: &Tally::from_records(&records, 1000.0), link_mbit: 1000.0, disk_bytes: &disk });
    let fedora = r.projects.iter().find(|p| p.project == "fedora").unwrap();
    // Two hours count as a twelfth of a day.
    let expected = fedora.bytes_per_day / 1e12;
    assert!((fedora.cdn_efficiency.unwrap() - expected).abs() < 1e-12);
    assert!((fedora.bytes_share - 0.75).abs() < 0.001 && (fedora.requests_share - 0.75).abs() < 0.001);
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["verdict"], "room");
    assert!(v["dispersion"]["requests"]["60"].is_number(), "{v}");
    assert!(v["utilisation"]["300"]["p95"].is_number() && v["utilisation"]["1"]["above_line"].is_number());
    assert!(r.table().contains("verdict: room"));
}
