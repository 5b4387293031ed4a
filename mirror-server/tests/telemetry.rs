//! Telemetry with real peers on loopback: rsyslog (Debian's, with its GnuTLS driver) as the
//! watchtower receiving RFC 5424 over TLS with octet counting, going away and coming back; an
//! ASN database built by MaxMind's own writer (libmaxmind-db-writer-perl); release rules from
//! the catalog; the metrics and `mirror-server report` from the same counters.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, raw, run, Server};

/// A CA and a certificate for 127.0.0.1, as PEM files in `dir`.
fn make_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "watchtower test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, "watchtower");
    let cert = leaf.signed_by(&key, &rcgen::Issuer::new(ca, ca_key)).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("watchtower.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("watchtower.key"), key.serialize_pem()).unwrap();
}

/// rsyslogd in the foreground with a TLS listener, writing what it receives to `received.log`.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = format!(
            r#"global(
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{d}/ca.pem"
  DefaultNetstreamDriverCertFile="{d}/watchtower.pem"
  DefaultNetstreamDriverKeyFile="{d}/watchtower.key"
  workDirectory="{w}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="received" type="string" string="%hostname% %app-name% %msgid% %structured-data% %msg%\n")
action(type="omfile" file="{d}/received.log" template="received")
"#,
            d = dir.display(),
            w = work.display()
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("rsyslog.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("rsyslog.err")).unwrap())
            .spawn()
            .expect("rsyslogd (Debian packages rsyslog and rsyslog-gnutls) runs");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "rsyslogd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child }
    }

    /// A clean stop, as when the watchtower is restarted.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GeoLite2-ASN-shaped database mapping 127.0.0.0/8 to AS64500, written by MaxMind's writer.
fn asn_database(dir: &Path) -> PathBuf {
    let script = r#"
use MaxMind::DB::Writer::Tree;
my %types = (autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 24, database_type => 'GeoLite2-ASN', languages => ['en'],
    description => { en => 'micro mirror test ASN database' },
    map_key_type_callback => sub { $types{ $_[0] } },
    remove_reserved_networks => 0,
);
$tree->insert_network('127.0.0.0/8', { autonomous_system_number => 64500, autonomous_system_organization => 'Loopback Example AS' });
open my $fh, '>:raw', $ARGV[0] or die "cannot write $ARGV[0]: $!";
$tree->write_tree($fh);
close $fh;
"#;
    let path = dir.join("asn.mmdb");
    run(Command::new("perl").args(["-e", script]).arg(&path));
    path
}

fn site(dir: &Path, watchtower_port: u16, asn: &Path, spill_mb: u64) -> PathBuf {
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("projects")).unwrap();
    std::fs::create_dir_all(conf.join("certs")).unwrap();
    std::fs::copy(dir.join("ca.pem"), conf.join("certs/watchtower-ca.pem")).unwrap();
    std::fs::write(
        conf.join("projects/fedora.toml"),
        "title = \"F\"\nmodule = \"fedora\"\npath = \"fedora\"\nsize_gb = 1\nrelease_pattern = '^fedora/linux/releases/([0-9]+)/'\n",
    )
    .unwrap();
    let profile = format!(
        "[site]\nname = \"lab\"\nhostname = \"lab.example.net\"\nsponsor_name = \"S\"\nsponsor_url = \"https://example.net/\"\nlocation = \"L\"\ntest = true\n\n\
         [network]\nipv4 = \"192.0.2.10/24\"\nipv4_gateway = \"192.0.2.1\"\n\n\
         [access]\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpsKeyForTestsOnly t\"]\n\n\
         [mirror]\nupstream = \"127.0.0.1\"\nprojects = [\"fedora\"]\n\n[server]\nscavenger = false\n\n\
         [telemetry]\nwatchtower = \"127.0.0.1:{watchtower_port}\"\nca_file = \"certs/watchtower-ca.pem\"\nasn_database = \"{}\"\nspill_max_mb = {spill_mb}\n",
        asn.display()
    );
    std::fs::write(conf.join("site.toml"), profile).unwrap();
    conf.join("site.toml")
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("mirror");
    std::fs::create_dir_all(root.join("fedora/linux/releases/41/Everything")).unwrap();
    std::fs::write(root.join("fedora/linux/releases/41/Everything/pkg.rpm"), common::bytes(5000, 3)).unwrap();
    root
}

fn get_with_agent(port: u16, path: &str, agent: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n");
    common::status_of(&raw(port, req.as_bytes(), Duration::from_secs(5)))
}

fn metric(port: u16, name: &str) -> f64 {
    let text =
        String::from_utf8_lossy(&raw(port, b"GET /metrics HTTP/1.0\r\n\r\n", Duration::from_secs(5))).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(-1.0)
}

fn received_with(dir: &Path, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(dir.join("received.log")).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > limit {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_metric(port: u16, name: &str, ok: impl Fn(f64) -> bool, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let v = metric(port, name);
        if ok(v) || start.elapsed() > limit {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn records_reach_rsyslog_over_tls_with_asn_and_release_and_survive_the_watchtower_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let asn = asn_database(d);
    let syslog_port = free_port();
    let watchtower = Rsyslog::start(d, syslog_port);
    let profile = site(d, syslog_port, &asn, 256);
    let (mport, state, status) = (free_port(), d.join("state"), d.join("status"));
    std::fs::create_dir_all(&status).unwrap();
    common::write_status(&status, "fedora", 10_000);
    let root = tree(d);
    let mut s = Server::start(
        &root,
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
    );

    assert_eq!(get_with_agent(s.port, "/fedora/linux/releases/41/Everything/pkg.rpm", "dnf/4.14 \"test\""), 200);
    let got = received_with(d, "dnf/4.14", Duration::from_secs(20));
    let line = got.lines().find(|l| l.contains("dnf/4.14")).unwrap_or_else(|| panic!("no record received:\n{got}"));
    for field in [
        "lab.example.net mirror-server request [request@32473 ",
        "client=\"127.0.0.1\"",
        "project=\"fedora\"",
        "release=\"41\"",
        "asn=\"64500\"",
        "as_org=\"Loopback Example AS\"",
        "status=\"200\"",
        "tls=\"-\"",
        r#"user_agent="dnf/4.14 \"test\"""#,
        "] /fedora/linux/releases/41/Everything/pkg.rpm",
    ] {
        assert!(line.contains(field), "missing {field} in {line}");
    }
    let bytes: u64 =
        line.split("bytes=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|b| b.parse().ok()).unwrap();
    assert!(bytes > 5000, "bytes sent include the head: {bytes}");

    // The watchtower goes away: records spill to disk, none is lost, none is dropped.
    watchtower.stop();
    for i in 0..20 {
        assert_eq!(
            get_with_agent(s.port, "/fedora/linux/releases/41/Everything/pkg.rpm", &format!("away-{i:02}")),
            200
        );
    }
    let spilled = wait_metric(mport, "micromirror_telemetry_spill_bytes", |v| v > 0.0, Duration::from_secs(10));
    assert!(spilled > 0.0, "records spill while the watchtower is away");
    assert_eq!(metric(mport, "micromirror_telemetry_connected"), 0.0);

    // It comes back: the spill file is replayed in order.
    let _back = Rsyslog::start(d, syslog_port);
    let got = received_with(d, "away-19", Duration::from_secs(60));
    let order: Vec<usize> = (0..20)
        .map(|i| got.find(&format!("away-{i:02}")).unwrap_or_else(|| panic!("away-{i:02} never arrived:\n{got}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "spilled records arrive in order");
    assert_eq!(wait_metric(mport, "micromirror_telemetry_spill_bytes", |v| v == 0.0, Duration::from_secs(10)), 0.0);
    assert_eq!(metric(mport, "micromirror_telemetry_dropped_total"), 0.0);
    assert!(metric(mport, "micromirror_telemetry_delivered_total") >= 21.0);

    // Metrics per release; the report from the saved counters after a clean stop.
    let text = String::from_utf8_lossy(&raw(mport, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(5))).into_owned();
    assert!(text.contains("micromirror_release_requests_total{project=\"fedora\",release=\"41\"} 21"), "{text}");
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(20)).is_some(), "mirror-server stops on SIGTERM");
    let report = run(Command::new(env!("CARGO_BIN_EXE_mirror-server")).args([
        "report",
        "--state-dir",
        state.to_str().unwrap(),
        "--status-dir",
        status.to_str().unwrap(),
    ]));
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let row = report.lines().find(|l| l.starts_with("fedora")).unwrap_or_else(|| panic!("no fedora row:\n{report}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // fedora, served (value unit), requests, on disk (value unit), efficiency
    assert_eq!(cols[3], "21", "{row}");
    assert_eq!(&cols[4..6], ["9.8", "KiB"], "{row}");
    let efficiency: f64 = cols[6].parse().unwrap();
    assert!((efficiency - bytes as f64 * 21.0 / 10_000.0).abs() < 0.01, "{row} (each reply {bytes} B)");
}

#[test]
fn beyond_the_spill_bound_records_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let asn = asn_database(d);
    // No watchtower listens: everything spills, and the 1 MiB bound is reached.
    let profile = site(d, free_port(), &asn, 1);
    let (mport, state) = (free_port(), d.join("state"));
    let root = tree(d);
    let s = Server::start(
        &root,
        &[
            "--config",
            profile.to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{mport}"),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    // ~4000 pipelined requests on one connection (records are ~400 bytes: 1.6 MB > 1 MiB).
    let one = "HEAD /fedora/linux/releases/41/Everything/pkg.rpm HTTP/1.1\r\nHost: t\r\nUser-Agent: bulk\r\n\r\n";
    let mut all = one.repeat(4000);
    all.push_str("GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let answers = raw(s.port, all.as_bytes(), Duration::from_secs(60));
    assert_eq!(String::from_utf8_lossy(&answers).matches("HTTP/1.1 200 OK").count(), 4000);
    let dropped = wait_metric(mport, "micromirror_telemetry_dropped_total", |v| v > 0.0, Duration::from_secs(20));
    let spilled = metric(mport, "micromirror_telemetry_spill_bytes");
    assert!(dropped > 0.0, "records beyond the bound are counted as dropped");
    assert!(spilled > 900_000.0 && spilled <= 1_048_576.0, "the spill file fills up to its bound: {spilled}");
    let on_disk = std::fs::metadata(state.join("telemetry/spill")).unwrap().len();
    assert_eq!(on_disk as f64, spilled);
}
