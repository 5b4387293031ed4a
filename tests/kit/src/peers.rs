//! Real peers on loopback, each in its own process group and killed when its guard drops:
//! an rsync daemon (the upstream), mosquitto (the upstream's MQTT broker), a test CA (openssl),
//! Pebble (an ACME CA, Debian's `pebble`, with `pebble-challtestsrv` answering its DNS with
//! 127.0.0.1), rsyslog with its GnuTLS driver (the watchtower), and an ASN database written by
//! MaxMind's own writer.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

use crate::{file_with, free_port, run, wait_listening, workspace};

/// A real peer (rsync daemon, mosquitto) in its own process group, killed on drop.
pub struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.wait();
    }
}

fn spawn_peer(cmd: &mut Command) -> Peer {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn a peer");
    Peer { child }
}

/// An rsync daemon on 127.0.0.1 serving `modules` (name, folder) read-only; returns its port.
pub fn rsync_daemon(dir: &Path, modules: &[(&str, PathBuf)]) -> (Peer, u16) {
    let port = free_port();
    (rsync_daemon_on(dir, port, modules), port)
}

/// An rsync daemon on 127.0.0.1:`port` (an upstream that comes up late, on the port a profile
/// already names).
pub fn rsync_daemon_on(dir: &Path, port: u16, modules: &[(&str, PathBuf)]) -> Peer {
    rsync_daemon_with(dir, port, modules, "")
}

/// An rsync daemon on 127.0.0.1:`port` whose modules carry `options` too, one per line (e.g.
/// "max connections = 1").
pub fn rsync_daemon_with(dir: &Path, port: u16, modules: &[(&str, PathBuf)], options: &str) -> Peer {
    let lock = dir.join(format!("rsyncd-{port}.lock"));
    let extra: String = options.lines().map(|o| format!("  {o}\n")).collect();
    let list: String = modules
        .iter()
        .map(|(m, p)| {
            format!("[{m}]\n  path = {}\n  read only = yes\n  lock file = {}\n{extra}", p.display(), lock.display())
        })
        .collect();
    let conf = dir.join(format!("rsyncd-{port}.conf"));
    let pid = dir.join(format!("rsyncd-{port}.pid"));
    std::fs::write(
        &conf,
        format!(
            "port = {port}\naddress = 127.0.0.1\nuse chroot = no\nnumeric ids = yes\npid file = {}\n\
             log file = {}\ntransfer logging = yes\n{list}",
            pid.display(),
            rsync_log(dir, port).display()
        ),
    )
    .expect("rsyncd.conf");
    // A daemon killed before leaves its pid file, which a new one would refuse to overwrite.
    let _ = std::fs::remove_file(&pid);
    let peer = spawn_peer(
        Command::new("rsync").arg("--daemon").arg("--no-detach").arg(format!("--config={}", conf.display())),
    );
    wait_listening(port, "the rsync daemon");
    peer
}

/// Takes one of the daemon's connection slots for `module` and holds it while the stream lives:
/// the rsync protocol's greeting and the module's name, as a client starting a transfer sends.
pub fn hold_rsync_session(port: u16, module: &str) -> std::net::TcpStream {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the rsync daemon");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle on the stream"));
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("the daemon's greeting");
    assert!(greeting.starts_with("@RSYNCD:"), "not an rsync daemon: {greeting}");
    stream.write_all(format!("@RSYNCD: 31.0\n{module}\n").as_bytes()).expect("ask for the module");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("the daemon's reply");
    assert!(reply.starts_with("@RSYNCD: OK"), "the daemon did not let the session in: {reply}");
    stream
}

/// The transfer log of the rsync daemon on `port` started in `dir`: a `send` line per file sent.
pub fn rsync_log(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("rsyncd-{port}.log"))
}

/// A mosquitto broker on 127.0.0.1; returns its port.
pub fn mosquitto(dir: &Path) -> (Peer, u16) {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
        .expect("mosquitto.conf");
    let peer = spawn_peer(Command::new("mosquitto").arg("-c").arg(&conf));
    wait_listening(port, "mosquitto");
    (peer, port)
}

/// Publishes one MQTT message with the real client.
pub fn publish(port: u16, topic: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", "updated", "-q", "1"])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority for tests; leaves are issued with the openssl CLI.
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// A fresh CA in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("CA folder");
        let (cert, key) = (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}-ca.key")));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
            .args(["-subj", &format!("/CN={name} test CA"), "-addext", "basicConstraints=critical,CA:TRUE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        TestCa { cert, key, dir: dir.to_path_buf() }
    }

    /// The CA the demo profile trusts (profiles/certs/demo-test-ca.pem; key in tests/fixtures).
    pub fn demo(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("CA folder");
        TestCa {
            cert: workspace().join("profiles/certs/demo-test-ca.pem"),
            key: workspace().join("tests/fixtures/demo-test-ca.key"),
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf for `sans` (e.g. "IP:192.0.2.2", "DNS:localhost"): (certificate, key) files.
    pub fn issue(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key, csr, ext) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(&ext, format!("subjectAltName={}\n", sans.join(","))).expect("extension file");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", &free_port().to_string()])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).expect("log file")
}

/// Pebble, validating HTTP-01 on 127.0.0.1:`http_port` for any name.
pub struct Pebble {
    children: Vec<Child>,
    dir: PathBuf,
    pub port: u16,
    management: u16,
    /// The CA of Pebble's own API certificate.
    pub api_ca: PathBuf,
}

impl Pebble {
    /// `api` signs Pebble's API certificate for `api_sans`; certificates live `validity_s`.
    pub fn start(dir: &Path, api: &TestCa, api_sans: &[&str], http_port: u16, validity_s: u64) -> Pebble {
        let dir = dir.join(format!("pebble-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("pebble folder");
        let (cert, key) = api.issue("pebble-api", api_sans);
        let (port, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }});
        std::fs::write(dir.join("config.json"), config.to_string()).expect("pebble config");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port()), "-defaultIPv6", ""])
            .stdout(log_file(&dir, "challtestsrv.log"))
            .stderr(log_file(&dir, "challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) runs");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("config.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log_file(&dir, "pebble.log"))
            .stderr(log_file(&dir, "pebble.err"))
            .spawn()
            .expect("pebble runs");
        let p = Pebble { children: vec![dns_server, pebble], dir, port, management, api_ca: api.cert.clone() };
        wait_listening(p.port, "pebble");
        wait_listening(p.management, "pebble's management interface");
        p
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root Pebble issues under (new at every start), for clients to verify against.
    pub fn issuing_root(&self) -> PathBuf {
        let out = run(Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.api_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management)));
        let path = self.dir.join("issuing-root.pem");
        std::fs::write(&path, out.stdout).expect("root file");
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

/// rsyslogd in the foreground with a TLS listener on 127.0.0.1:`port`, writing what it
/// receives to `dir/received.log`, one line per record.
pub struct Rsyslog {
    child: Child,
    pub received: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path, ca: &TestCa, sans: &[&str], port: u16) -> Rsyslog {
        let (cert, key) = ca.issue("watchtower", sans);
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).expect("rsyslog folder");
        let received = dir.join("received.log");
        let conf = format!(
            r#"global(
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}"
  workDirectory="{work}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="received" type="string" string="%hostname% %app-name% %msgid% %structured-data% %msg%\n")
action(type="omfile" file="{received}" template="received")
"#,
            ca = ca.cert.display(),
            cert = cert.display(),
            key = key.display(),
            work = work.display(),
            received = received.display(),
        );
        let conf_path = dir.join(format!("rsyslog-{port}.conf"));
        std::fs::write(&conf_path, conf).expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join(format!("rsyslog-{port}.pid")))
            .stdin(Stdio::null())
            .stdout(log_file(dir, "rsyslog.out"))
            .stderr(log_file(dir, "rsyslog.err"))
            .spawn()
            .expect("rsyslogd (Debian packages rsyslog and rsyslog-gnutls) runs");
        wait_listening(port, "rsyslogd");
        Rsyslog { child, received }
    }

    /// What arrived so far, once it holds `needle` or after `limit`.
    pub fn received_with(&self, needle: &str, limit: Duration) -> String {
        file_with(&self.received, needle, limit)
    }

    /// A clean stop (SIGTERM), as when the watchtower is restarted.
    pub fn stop(mut self) {
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let _ = self.child.wait();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GeoLite2-ASN-shaped database mapping 127.0.0.0/8 to AS64500, written by MaxMind's writer
/// (Debian's libmaxmind-db-writer-perl).
pub fn asn_database(dir: &Path) -> PathBuf {
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
