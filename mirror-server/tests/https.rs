//! HTTPS with real peers on loopback: curl and openssl against certificates from files, and
//! the ACME client against Pebble (Debian's `pebble` with `pebble-challtestsrv` as its DNS):
//! issue, renew, a failed renewal that keeps the old certificate, a restart on the stored one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, raw, run, Server};

const NAME: &str = "mirror.test";

/// A CA and a leaf for `names`, as PEM files in `dir` (ca.pem, NAME.pem, NAME.key).
fn make_certs(dir: &Path, leaf: &str, names: &[&str]) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: openssl takes a leaf named like its issuer for self-signed.
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, format!("test CA for {leaf}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{leaf}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{leaf}.key")), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

fn metric(port: u16, name: &str) -> Option<f64> {
    let text =
        String::from_utf8_lossy(&raw(port, b"GET /metrics HTTP/1.0\r\n\r\n", Duration::from_secs(5))).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn https_from_files_serves_byte_for_byte_over_tls12_and_13_and_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("proj")).unwrap();
    let big = common::bytes(3 << 20, 7);
    std::fs::write(root.join("proj/big.iso"), &big).unwrap();
    std::fs::write(root.join("proj/small.txt"), b"small\n").unwrap();
    let ca = make_certs(dir.path(), "live", &[NAME]);
    let tls_port = free_port();
    let s = Server::start(
        &root,
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--tls-cert",
            dir.path().join("live.pem").to_str().unwrap(),
            "--tls-key",
            dir.path().join("live.key").to_str().unwrap(),
        ],
    );
    wait_port(tls_port, "the HTTPS listener");

    for version in ["--tlsv1.3", "--tls-max"] {
        let extra: &[&str] = if version == "--tls-max" { &["--tls-max", "1.2"] } else { &["--tlsv1.3"] };
        let out = curl_https(tls_port, &ca, "/proj/big.iso", extra);
        assert!(out.status.success(), "curl {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == big, "body over {extra:?} differs ({} bytes)", out.stdout.len());
    }
    let ranged = curl_https(tls_port, &ca, "/proj/big.iso", &["-r", "1000-1999999"]);
    assert_eq!(ranged.stdout, big[1000..2_000_000]);
    // Plain HTTP is never redirected: package managers fetch over it.
    let plain =
        run(Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &s.url("/proj/small.txt")]));
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "200");
    let log = common::log_with(&s.log, "\"TLSv1.2\"", Duration::from_secs(5));
    assert!(log.contains("\"TLSv1.3\"") && log.contains("\"TLSv1.2\""), "the access log names the TLS version:\n{log}");

    // certbot renews: new files appear; the watcher swaps them in without a restart.
    let before = served_serial(tls_port).expect("a certificate is served");
    let ca2 = make_certs(dir.path(), "live", &[NAME]);
    let after = wait_for(Duration::from_secs(30), "the renewed certificate", || {
        served_serial(tls_port).filter(|s| *s != before)
    });
    assert_ne!(before, after);
    let out = curl_https(tls_port, &ca2, "/proj/small.txt", &[]);
    assert_eq!(out.stdout, b"small\n", "{}", String::from_utf8_lossy(&out.stderr));

    // A broken replacement is refused and the working certificate stays in use.
    std::fs::write(dir.path().join("live.key"), "not a key").unwrap();
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(served_serial(tls_port).as_deref(), Some(after.as_str()));
}

/// Pebble and its DNS (every name → 127.0.0.1), validating HTTP-01 on `http_port`.
struct Pebble {
    children: Vec<Child>,
    dir: PathBuf,
    port: u16,
    management: u16,
}

impl Pebble {
    fn start(dir: &Path, http_port: u16, validity_s: u64) -> Pebble {
        let dir = dir.join(format!("pebble-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        make_certs(&dir, "localhost", &["localhost", "127.0.0.1"]);
        let (port, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("localhost.pem"),
            "privateKey": dir.join("localhost.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port()), "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) runs");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("config.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble runs");
        let p = Pebble { children: vec![dns_server, pebble], dir, port, management };
        wait_port(p.port, "pebble");
        wait_port(p.management, "pebble's management interface");
        p
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn api_ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The root that Pebble issues under (new at every start).
    fn issuing_root(&self) -> PathBuf {
        let out = run(Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(self.api_ca())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management)));
        let path = self.dir.join("issuing-root.pem");
        std::fs::write(&path, out.stdout).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_acme_server(root: &Path, pebble: &Pebble, http_port: u16, tls_port: u16, mport: u16, state: &Path) -> Server {
    Server::start_on(
        root,
        http_port,
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--acme-directory",
            &pebble.directory(),
            "--acme-ca",
            pebble.api_ca().to_str().unwrap(),
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

#[test]
fn acme_issues_then_renews_at_two_thirds_and_keeps_the_old_certificate_when_renewal_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (http_port, tls_port, mport) = (free_port(), free_port(), free_port());
    // 30-second certificates: renewal is due after 19-20 s.
    let mut pebble = Some(Pebble::start(dir.path(), http_port, 30));
    let p = pebble.as_ref().unwrap();
    let state = dir.path().join("state");
    let _s = start_acme_server(&root, p, http_port, tls_port, mport, &state);

    let issued_at = Instant::now();
    let first = wait_for(Duration::from_secs(30), "the first certificate", || served_serial(tls_port));
    let out = curl_https(tls_port, &p.issuing_root(), "/hello.txt", &[]);
    assert_eq!(out.stdout, b"hello over https\n", "curl verifies the chain: {}", String::from_utf8_lossy(&out.stderr));
    assert!(state.join("acme/fullchain.pem").exists() && state.join("acme/account.json").exists());
    let days = metric(mport, "micromirror_tls_certificate_days_left").expect("days-left metric");
    assert!(days > 0.0 && days < 1.0, "a 30 s certificate has less than a day left: {days}");

    let second = wait_for(Duration::from_secs(30), "the renewed certificate", || {
        served_serial(tls_port).filter(|s| *s != first)
    });
    let renewed_after = issued_at.elapsed();
    assert!(renewed_after > Duration::from_secs(15), "renewed too early: {renewed_after:?} into a 30 s lifetime");
    assert!(metric(mport, "micromirror_acme_issued_total").unwrap_or(0.0) >= 2.0);

    // The CA goes away: the next renewal fails, is counted, and the certificate in use stays.
    pebble.take();
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
    let pebble = Pebble::start(dir.path(), http_port, 3600);
    let state = dir.path().join("state");
    let serial = {
        let _s = start_acme_server(&root, &pebble, http_port, tls_port, mport, &state);
        wait_for(Duration::from_secs(30), "the first certificate", || served_serial(tls_port))
    };
    drop(pebble);
    let _s = start_acme_server(&root, &Pebble::start(dir.path(), http_port, 3600), http_port, tls_port, mport, &state);
    let again = wait_for(Duration::from_secs(10), "a certificate after the restart", || served_serial(tls_port));
    assert_eq!(again, serial, "the stored certificate is reused");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(mport, "micromirror_acme_issued_total"), Some(0.0), "no new order while the stored one is fresh");
    assert_eq!(metric(mport, "micromirror_acme_failures_total"), Some(0.0));
}
