//! mirror-server when the field goes wrong: a counters file left unreadable by a crash, and the
//! wall clock stepping a day forward and back under a running server (a box without an RTC
//! battery, an NTP step). It must start, say what it set aside, and go on serving and counting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::clock::SteppedClock;
use testkit::fixtures::{bytes, LabProfile};
use testkit::peers::TestCa;
use testkit::server::{metric, MirrorServer};
use testkit::{free_port, http, run, wait_for, Signal};

const DAY: i64 = 86_400;

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("mirror");
    std::fs::create_dir_all(root.join("fedora")).unwrap();
    std::fs::write(root.join("fedora/a.rpm"), bytes(10_000, 1)).unwrap();
    root
}

/// The lab profile with HTTPS from certificate files (a test CA's) and one project, fedora.
fn profile(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let fedora = "title = \"F\"\nmodule = \"fedora\"\npath = \"fedora\"\nsize_gb = 1\n";
    LabProfile::with_project("fedora", fedora)
        .extra(&format!(
            "[server]\nscavenger = false\n\n[tls]\ncertificate_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ))
        .write(&dir.join("conf"))
}

fn served(port: u16) -> u16 {
    http(port, "GET", "/fedora/a.rpm", &[]).map_or(0, |r| r.0)
}

fn report(state: &Path) -> String {
    let out =
        run(std::process::Command::new(testkit::bin("mirror-server")).arg("report").arg("--state-dir").arg(state));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_unreadable_counters_file_is_set_aside_said_so_and_counting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("server")).unwrap();
    std::fs::write(state.join("server/counters.json"), b"{\"day\": 20000, \"projects\": {\"fedora\": {\"requ").unwrap();
    let mport = free_port();
    let mut s = MirrorServer::start(
        &root,
        &["--metrics-listen", &format!("127.0.0.1:{mport}"), "--state-dir", state.to_str().unwrap()],
    );
    let log = testkit::file_with(&s.errors, "unreadable counters file set aside", Duration::from_secs(10));
    assert!(log.contains("counters.json"), "{log}");
    assert!(state.join("server/counters.json.unreadable").exists());
    assert_eq!(served(s.port), 200);
    s.signal(Signal::TERM);
    assert!(s.wait_exit(Duration::from_secs(20)).is_some());
    let report = report(&state);
    let row = report.lines().find(|l| l.starts_with("fedora")).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(row.split_whitespace().nth(3), Some("1"), "today's one request, counted anew: {row}");
}

#[test]
fn the_clock_stepping_a_day_forward_and_back_keeps_serving_certificates_and_counters_sane() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let ca = TestCa::new(&dir.path().join("ca"), "clock");
    let (cert, key) = ca.issue("mirror", &["DNS:lab.mm.example.net"]);
    let site = profile(dir.path(), &cert, &key);
    let state = dir.path().join("state");
    let mut clock = SteppedClock::new(dir.path());
    let (mport, tls_port) = (free_port(), free_port());
    let args = [
        "--config",
        site.to_str().unwrap(),
        "--metrics-listen",
        &format!("127.0.0.1:{mport}"),
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let mut s = MirrorServer::start_with(&root, free_port(), &args, &clock.env());
    let requests = |n| (0..n).filter(|_| served(s.port) == 200).count();
    let total = || metric(mport, "micromirror_http_requests_total{project=\"fedora\",class=\"2xx\"}").unwrap_or(-1.0);
    let expiry = || metric(mport, "micromirror_tls_certificate_expiry_timestamp_seconds");
    assert_eq!(requests(3), 3);
    let expires = wait_for(Duration::from_secs(10), "the certificate's expiry", expiry);
    assert_eq!(total(), 3.0);

    // A day forward: serving goes on, counters only grow, the certificate is the same one.
    clock.step(DAY);
    assert_eq!(requests(2), 2);
    assert_eq!(total(), 5.0, "counters never go back or restart");
    assert_eq!(expiry(), Some(expires));
    // And back two days: still serving, still counting up, still the same certificate.
    clock.step(-2 * DAY);
    assert_eq!(requests(4), 4);
    assert_eq!(total(), 9.0);
    assert_eq!(expiry(), Some(expires));
    let https = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&ca.cert)
        .args(["--resolve", &format!("lab.mm.example.net:{tls_port}:127.0.0.1")])
        .arg(format!("https://lab.mm.example.net:{tls_port}/fedora/a.rpm"))
        .output()
        .unwrap();
    assert!(https.status.success(), "HTTPS after the clock went back: {}", String::from_utf8_lossy(&https.stderr));

    // "Today" follows the clock: the day it is now holds the five requests made in it (four
    // over HTTP, one over HTTPS).
    s.signal(Signal::TERM);
    assert!(s.wait_exit(Duration::from_secs(20)).is_some());
    let report = report(&state);
    let row = report.lines().find(|l| l.starts_with("fedora")).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(row.split_whitespace().nth(3), Some("5"), "{report}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("server/counters.json")).unwrap()).unwrap();
    assert_eq!(saved["day"].as_i64(), Some(clock.now() / DAY), "saved under the clock's day: {saved}");
}
