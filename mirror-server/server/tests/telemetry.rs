//! Telemetry with real peers on loopback: rsyslog (Debian's, with its GnuTLS driver) as the
//! watchtower receiving RFC 5424 over TLS with octet counting, going away and coming back; an
//! ASN database built by MaxMind's own writer; release rules from the catalog; the metrics and
//! `mirror-server report` from the same counters.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use schema::status::{self, Outcome, Status};
use testkit::fixtures::{bytes, LabProfile, LAB_HOSTNAME};
use testkit::peers::{asn_database, Rsyslog, TestCa};
use testkit::server::{metric, MirrorServer};
use testkit::{bin, free_port, http, run, wait_for, Signal};

const RPM: &str = "/fedora/linux/releases/41/Everything/pkg.rpm";

fn site(dir: &Path, ca: &TestCa, watchtower_port: u16, asn: &Path, spill_mb: u64) -> PathBuf {
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("certs")).unwrap();
    std::fs::copy(&ca.cert, conf.join("certs/watchtower-ca.pem")).unwrap();
    let fedora = "title = \"F\"\nmodule = \"fedora\"\npath = \"fedora\"\nsize_gb = 1\nrelease_pattern = '^fedora/linux/releases/([0-9]+)/'\n";
    LabProfile::with_project("fedora", fedora)
        .extra(&format!(
            "[server]\nscavenger = false\n\n[telemetry]\nwatchtower = \"127.0.0.1:{watchtower_port}\"\n\
             ca_file = \"certs/watchtower-ca.pem\"\nasn_database = \"{}\"\nspill_max_mb = {spill_mb}\n",
            asn.display()
        ))
        .write(&conf)
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("mirror");
    std::fs::create_dir_all(root.join("fedora/linux/releases/41/Everything")).unwrap();
    std::fs::write(root.join(RPM.trim_start_matches('/')), bytes(5000, 3)).unwrap();
    root
}

fn get_as(port: u16, path: &str, agent: &str) -> u16 {
    http(port, "GET", path, &[("User-Agent", agent)]).map(|r| r.0).unwrap_or(0)
}

fn server(root: &Path, profile: &Path, mport: u16, state: &Path, status: &Path) -> MirrorServer {
    MirrorServer::start_on(
        root,
        free_port(),
        &[
            "--config",
            profile.to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{mport}"),
            "--state-dir",
            state.to_str().unwrap(),
            "--status-dir",
            status.to_str().unwrap(),
        ],
    )
}

#[test]
fn records_reach_rsyslog_over_tls_with_asn_and_release_and_survive_the_watchtower_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(&d.join("ca"), "watchtower");
    let asn = asn_database(d);
    let syslog_port = free_port();
    let sans = ["IP:127.0.0.1"];
    let watchtower = Rsyslog::start(d, &ca, &sans, syslog_port);
    let profile = site(d, &ca, syslog_port, &asn, 256);
    let (mport, state, status_dir) = (free_port(), d.join("state"), d.join("status"));
    let on_disk = Status { state: Outcome::Success, size_bytes: 10_000, ..Status::running("fedora", "fedora", 0) };
    status::write(&status_dir, &on_disk).unwrap();
    let mut s = server(&tree(d), &profile, mport, &state, &status_dir);

    assert_eq!(get_as(s.port, RPM, "dnf/4.14 \"test\""), 200);
    let got = watchtower.received_with("dnf/4.14", Duration::from_secs(20));
    let line = got.lines().find(|l| l.contains("dnf/4.14")).unwrap_or_else(|| panic!("no record received:\n{got}"));
    let header = format!("{LAB_HOSTNAME} mirror-server request [request@32473 ");
    for field in [
        header.as_str(),
        "client=\"127.0.0.1\"",
        "project=\"fedora\"",
        "release=\"41\"",
        "asn=\"64500\"",
        "as_org=\"Loopback Example AS\"",
        "status=\"200\"",
        "tls=\"-\"",
        r#"user_agent="dnf/4.14 \"test\"""#,
        &format!("] {RPM}"),
    ] {
        assert!(line.contains(field), "missing {field} in {line}");
    }
    let sent: u64 =
        line.split("bytes=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|b| b.parse().ok()).unwrap();
    assert!(sent > 5000, "bytes sent include the head: {sent}");

    // The watchtower goes away: records spill to disk; none is lost, none is dropped.
    watchtower.stop();
    for i in 0..20 {
        assert_eq!(get_as(s.port, RPM, &format!("away-{i:02}")), 200);
    }
    wait_for(Duration::from_secs(10), "records spilled to disk", || {
        metric(mport, "micromirror_telemetry_spill_bytes").filter(|v| *v > 0.0)
    });
    assert_eq!(metric(mport, "micromirror_telemetry_connected"), Some(0.0));

    // It comes back: the spill file is replayed, in order.
    let back = Rsyslog::start(d, &ca, &sans, syslog_port);
    let got = back.received_with("away-19", Duration::from_secs(60));
    let order: Vec<usize> = (0..20)
        .map(|i| got.find(&format!("away-{i:02}")).unwrap_or_else(|| panic!("away-{i:02} never arrived:\n{got}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "spilled records arrive in order");
    wait_for(Duration::from_secs(10), "an empty spill file", || {
        metric(mport, "micromirror_telemetry_spill_bytes").filter(|v| *v == 0.0)
    });
    assert_eq!(metric(mport, "micromirror_telemetry_dropped_records_total"), Some(0.0));
    assert!(metric(mport, "micromirror_telemetry_delivered_records_total").unwrap_or(0.0) >= 21.0);

    // Metrics per release (every family well-formed, as promtool sees it); the report from the
    // counters saved at a clean stop.
    let text = testkit::server::promtool_checked(mport);
    assert!(text.contains("micromirror_release_requests_total{project=\"fedora\",release=\"41\"} 21"), "{text}");
    s.signal(Signal::TERM);
    assert!(s.wait_exit(Duration::from_secs(20)).is_some(), "mirror-server stops on SIGTERM");
    let report = run(Command::new(bin("mirror-server")).args([
        "report",
        "--state-dir",
        state.to_str().unwrap(),
        "--status-dir",
        status_dir.to_str().unwrap(),
    ]));
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let row = report.lines().find(|l| l.starts_with("fedora")).unwrap_or_else(|| panic!("no fedora row:\n{report}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // fedora, served (value unit), requests, on disk (value unit), efficiency
    assert_eq!(cols[3], "21", "{row}");
    assert_eq!(&cols[4..6], ["9.8", "KiB"], "{row}");
    let efficiency: f64 = cols[6].parse().unwrap();
    assert!((efficiency - sent as f64 * 21.0 / 10_000.0).abs() < 0.01, "{row} (each reply {sent} B)");
}

#[test]
fn beyond_the_spill_bound_records_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(&d.join("ca"), "watchtower");
    // No watchtower listens: everything spills, and the 1 MiB bound is reached.
    let profile = site(d, &ca, free_port(), &asn_database(d), 1);
    let (mport, state) = (free_port(), d.join("state"));
    let s = server(&tree(d), &profile, mport, &state, &d.join("status"));
    // 4000 pipelined requests on one connection; records are ~400 bytes: 1.6 MB > 1 MiB.
    let one = format!("HEAD {RPM} HTTP/1.1\r\nHost: t\r\nUser-Agent: bulk\r\n\r\n");
    let mut all = one.repeat(4000);
    all.push_str("GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    conn.write_all(all.as_bytes()).unwrap();
    let mut answers = Vec::new();
    let _ = conn.read_to_end(&mut answers);
    assert_eq!(String::from_utf8_lossy(&answers).matches("HTTP/1.1 200 OK").count(), 4000);
    let dropped = wait_for(Duration::from_secs(20), "dropped records", || {
        metric(mport, "micromirror_telemetry_dropped_records_total").filter(|v| *v > 0.0)
    });
    let spilled = metric(mport, "micromirror_telemetry_spill_bytes").unwrap();
    assert!(dropped > 0.0 && spilled > 900_000.0 && spilled <= 1_048_576.0, "spill {spilled}, dropped {dropped}");
    let on_disk = std::fs::metadata(state.join("telemetry/spill")).unwrap().len();
    assert_eq!(on_disk as f64, spilled);
}
