//! `mirror-server capacity` as an operator runs it on today's fleet: on a gzip-rotated nginx
//! log in the fleet's format (combined, request time, TLS), with disk sizes given by hand, as
//! JSON and as a table; a plain combined log (no request times) is read at a stated assumption
//! with no figure above the link; a bad path or a log with no request line is a clear error.

use std::io::Write;
use std::process::Command;

fn capacity(args: &[&str]) -> (bool, String) {
    let out = Command::new(testkit::bin("mirror-server")).arg("capacity").args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Two hours of `share` of a gigabit: a quarter of the bytes to ubuntu-releases, the rest to fedora.
fn fleet_log(share: f64) -> String {
    let per_second = (share * 1e9 / 8.0) as u64;
    let mut text = String::new();
    for s in 0..7200i64 {
        let when = jiff::Timestamp::from_second(1_790_000_000 + s).unwrap().strftime("%d/%b/%Y:%H:%M:%S +0000");
        let project = if s % 4 == 0 { "ubuntu-releases" } else { "fedora" };
        text.push_str(&format!(
            "198.51.100.7 - - [{when}] \"GET /{project}/x HTTP/1.1\" 200 {per_second} \"-\" \"dnf/4\" 0.900 TLSv1.3\n"
        ));
    }
    text
}

#[test]
fn a_gzipped_fleet_log_gives_the_verdict_the_figures_and_the_project_to_move() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("access.log.1");
    std::fs::write(&plain, fleet_log(0.30)).unwrap();
    assert!(Command::new("gzip").arg(&plain).status().unwrap().success());
    let gz = dir.path().join("access.log.1.gz");
    let (ok, out) =
        capacity(&["--from", gz.to_str().unwrap(), "--link-mbit", "1000", "--disk", "fedora=700", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["verdict"], "overshot", "{out}");
    assert_eq!(v["move_off"], serde_json::json!(["fedora"]), "{out}");
    assert!(v["dispersion"]["requests"]["60"].is_number(), "{out}");
    let fedora = v["projects"].as_array().unwrap().iter().find(|p| p["project"] == "fedora").unwrap();
    assert!(fedora["cdn_efficiency"].as_f64().unwrap() > 0.0, "{out}");
    // The same log for people.
    let (ok, table) = capacity(&["--from", gz.to_str().unwrap()]);
    assert!(ok && table.contains("verdict: overshot") && table.contains("move off: fedora"), "{table}");
}

#[test]
fn a_quiet_log_is_room_and_a_log_that_is_not_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("quiet.log");
    std::fs::write(&log, fleet_log(0.03)).unwrap();
    let (ok, out) = capacity(&["--from", log.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}");
    assert!(out.contains("\"verdict\": \"room\""), "{out}");
    let junk = dir.path().join("junk.log");
    std::fs::File::create(&junk).unwrap().write_all(b"not a log line\n").unwrap();
    let (ok, out) = capacity(&["--from", junk.to_str().unwrap()]);
    assert!(!ok && out.contains("junk.log") && out.contains("combined format"), "{out}");
    let (ok, out) = capacity(&["--from", "/nonexistent/access.log"]);
    assert!(!ok && out.contains("/nonexistent/access.log"), "{out}");
}

/// 400 responses of 6 MB in a plain combined log (no request time), ten ending in each second:
/// read as if each took no time, one second would carry 4,800 % of a gigabit.
#[test]
fn a_plain_combined_log_is_spread_at_the_link_rate_and_never_shows_more_than_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..400i64 {
        let when = jiff::Timestamp::from_second(1_790_000_000 + i / 10).unwrap().strftime("%d/%b/%Y:%H:%M:%S +0000");
        text.push_str(&format!("198.51.100.7 - - [{when}] \"GET /fedora/x HTTP/1.1\" 200 6000000 \"-\" \"dnf/4\"\n"));
    }
    let log = dir.path().join("combined.log");
    std::fs::write(&log, text).unwrap();
    let (ok, out) = capacity(&["--from", log.to_str().unwrap(), "--link-mbit", "1000", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["untimed_requests"], 400, "{out}");
    assert!(v["utilisation"].get("1").is_none(), "no 1 s figures without request times: {out}");
    assert!(v["notes"][0].as_str().unwrap().contains("1000 Mbit/s"), "the assumption is stated: {out}");
    let (ok, table) = capacity(&["--from", log.to_str().unwrap(), "--link-mbit", "1000"]);
    assert!(ok, "{table}");
    assert!(table.contains("no request time") && !table.contains("\n1 s "), "{table}");
    let over_100 = table.lines().filter(|l| l.starts_with("1 min") || l.starts_with("5 min")).any(|l| {
        l.split_whitespace()
            .zip(l.split_whitespace().skip(1))
            .any(|(n, unit)| unit == "%" && n.parse::<f64>().is_ok_and(|v| v > 100.0))
    });
    assert!(!over_100, "no share above the link printed as a figure: {table}");
}
