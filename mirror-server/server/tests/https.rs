//! HTTPS with real peers on loopback: curl and openssl against certificates from files, and
//! mirror-server's ACME client against Pebble: issue, renew at two thirds of the lifetime, a
//! failed renewal that keeps the old certificate, a restart on the stored certificate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::fixtures::bytes;
use testkit::peers::{Pebble, TestCa};
use testkit::server::{metric, MirrorServer};
use testkit::{free_port, run, wait_for, Signal};

const NAME: &str = "mirror.test";

/// curl over HTTPS to mirror.test (resolved to loopback), verifying against `ca`.
fn curl_https(port: u16, ca: &Path, path: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{NAME}:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("curl runs")
}

/// The serial number of the certificate the server presents (openssl s_client, no verification).
fn served_serial(port: u16) -> Option<String> {
    let shell = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {NAME} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &shell]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.strip_prefix("serial=").map(str::to_string)
}

fn access_log_with(path: &Path, needle: &str) -> String {
    wait_for(Duration::from_secs(5), needle, || std::fs::read_to_string(path).ok().filter(|t| t.contains(needle)))
}

#[test]
fn https_from_files_serves_byte_for_byte_over_tls12_and_13_and_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("proj")).unwrap();
    let big = bytes(3 << 20, 7);
    std::fs::write(root.join("proj/big.iso"), &big).unwrap();
    std::fs::write(root.join("proj/small.txt"), b"small\n").unwrap();
    let ca = TestCa::new(&dir.path().join("ca"), "files");
    let (cert, key) = ca.issue("live", &[&format!("DNS:{NAME}")]);
    let tls_port = free_port();
    let s = MirrorServer::start_on(
        &root,
        free_port(),
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );

    for extra in [&["--tlsv1.3"][..], &["--tls-max", "1.2"][..]] {
        let out = curl_https(tls_port, &ca.cert, "/proj/big.iso", extra);
        assert!(out.status.success(), "curl {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == big, "body over {extra:?} differs ({} bytes)", out.stdout.len());
    }
    let ranged = curl_https(tls_port, &ca.cert, "/proj/big.iso", &["-r", "1000-1999999"]);
    assert_eq!(ranged.stdout, big[1000..2_000_000]);
    // Plain HTTP is never redirected: package managers fetch over it.
    let url = format!("http://127.0.0.1:{}/proj/small.txt", s.port);
    let plain = run(Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]));
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "200");
    let log = access_log_with(&s.log, "\"TLSv1.2\"");
    assert!(log.contains("\"TLSv1.3\""), "the access log names the TLS version:\n{log}");

    // certbot renews: the same files get new content; the watcher swaps it in.
    let before = served_serial(tls_port).expect("a certificate is served");
    let (renewed_cert, renewed_key) = ca.issue("renewed", &[&format!("DNS:{NAME}")]);
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed_cert, &cert).unwrap();
    let after = wait_for(Duration::from_secs(30), "the renewed certificate", || {
        served_serial(tls_port).filter(|s| *s != before)
    });
    let out = curl_https(tls_port, &ca.cert, "/proj/small.txt", &[]);
    assert_eq!(out.stdout, b"small\n", "{}", String::from_utf8_lossy(&out.stderr));

    // A broken replacement is refused and the working certificate stays in use.
    std::fs::write(&key, "not a key").unwrap();
    s.signal(Signal::HUP);
    let log = testkit::file_with(&s.errors, "certificate files not reloaded", Duration::from_secs(10));
    assert!(log.contains("keeping the one in use"), "{log}");
    assert_eq!(served_serial(tls_port).as_deref(), Some(after.as_str()));
}

fn start_acme_server(
    root: &Path,
    pebble: &Pebble,
    http_port: u16,
    tls_port: u16,
    mport: u16,
    state: &Path,
) -> MirrorServer {
    MirrorServer::start_on(
        root,
        http_port,
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--acme-directory",
            &pebble.directory(),
            "--acme-ca",
            pebble.api_ca.to_str().unwrap(),
            "--acme-name",
            NAME,
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{mport}"),
        ],
    )
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello over https\n").unwrap();
    root
}

const LOOPBACK: [&str; 2] = ["IP:127.0.0.1", "DNS:localhost"];

#[test]
fn acme_issues_then_renews_at_two_thirds_and_keeps_the_old_certificate_when_renewal_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (http_port, tls_port, mport) = (free_port(), free_port(), free_port());
    let api = TestCa::new(&dir.path().join("ca"), "pebble-api");
    // 30-second certificates: renewal is due after 19-20 s.
    let pebble = Pebble::start(dir.path(), &api, &LOOPBACK, http_port, 30);
    let state = dir.path().join("state");
    let _s = start_acme_server(&root, &pebble, http_port, tls_port, mport, &state);

    let issued_at = Instant::now();
    let first = wait_for(Duration::from_secs(30), "the first certificate", || served_serial(tls_port));
    let out = curl_https(tls_port, &pebble.issuing_root(), "/hello.txt", &[]);
    assert_eq!(out.stdout, b"hello over https\n", "curl verifies the chain: {}", String::from_utf8_lossy(&out.stderr));
    assert!(state.join("acme/fullchain.pem").exists() && state.join("acme/account.json").exists());
    testkit::server::promtool_checked(mport);
    let expiry = metric(mport, "micromirror_tls_certificate_expiry_timestamp_seconds").expect("the expiry metric");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(expiry > now && expiry < now + 86_400.0, "a 30 s certificate expires within a day: {expiry} (now {now})");

    let second = wait_for(Duration::from_secs(30), "the renewed certificate", || {
        served_serial(tls_port).filter(|s| *s != first)
    });
    let renewed_after = issued_at.elapsed();
    assert!(renewed_after > Duration::from_secs(15), "renewed too early: {renewed_after:?} into a 30 s lifetime");
    assert!(metric(mport, "micromirror_acme_issued_total").unwrap_or(0.0) >= 2.0);

    // The CA goes away: the next renewal fails, is counted, and the certificate in use stays.
    drop(pebble);
    wait_for(Duration::from_secs(30), "a failed renewal", || {
        metric(mport, "micromirror_acme_failures_total").filter(|n| *n >= 1.0)
    });
    assert_eq!(served_serial(tls_port).as_deref(), Some(second.as_str()), "the old certificate is still served");
}

#[test]
fn a_restart_serves_the_stored_certificate_without_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (http_port, tls_port, mport) = (free_port(), free_port(), free_port());
    let api = TestCa::new(&dir.path().join("ca"), "pebble-api");
    let state = dir.path().join("state");
    let serial = {
        let pebble = Pebble::start(dir.path(), &api, &LOOPBACK, http_port, 3600);
        let _s = start_acme_server(&root, &pebble, http_port, tls_port, mport, &state);
        wait_for(Duration::from_secs(30), "the first certificate", || served_serial(tls_port))
    };
    let pebble = Pebble::start(dir.path(), &api, &LOOPBACK, http_port, 3600);
    let s = start_acme_server(&root, &pebble, http_port, tls_port, mport, &state);
    let again = wait_for(Duration::from_secs(10), "a certificate after the restart", || served_serial(tls_port));
    assert_eq!(again, serial, "the stored certificate is reused");
    // The ACME task decides at start: the stored certificate is fresh, so it places no order.
    testkit::file_with(&s.errors, "using the stored ACME certificate", Duration::from_secs(10));
    assert_eq!(metric(mport, "micromirror_acme_issued_total"), Some(0.0), "no new order while the stored one is fresh");
    assert_eq!(metric(mport, "micromirror_acme_failures_total"), Some(0.0));
}
