//! mirror-server on the wire: the path-traversal and malformed-request corpora, keep-alive and
//! pipelining, methods, limits, HEAD, redirects, listings, assets, signals and metrics — each
//! against the real binary on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::fixtures::{bytes, LabProfile};
use testkit::server::MirrorServer;
use testkit::{body_of, free_port, raw, status_of, wait_for, Signal};

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mirror");
        std::fs::create_dir_all(root.join("fedora/repodata")).unwrap();
        std::fs::create_dir_all(root.join("fedora/.~tmp~")).unwrap();
        std::fs::create_dir_all(root.join("space dir")).unwrap();
        std::fs::write(root.join("fedora/repodata/repomd.xml"), b"<?xml version=\"1.0\"?><repomd/>\n").unwrap();
        std::fs::write(root.join("fedora/.~tmp~/partial.rpm"), b"half").unwrap();
        std::fs::write(root.join("fedora/a.rpm"), bytes(300_000, 7)).unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"outside the root").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("fedora/escape")).unwrap();
        std::os::unix::fs::symlink("../../secret.txt", root.join("fedora/escape-relative")).unwrap();
        std::os::unix::fs::symlink("repodata/repomd.xml", root.join("fedora/alias.xml")).unwrap();
        let assets = dir.path().join("assets");
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::write(assets.join("robots.txt"), b"User-agent: *\nDisallow: /\n").unwrap();
        std::fs::write(assets.join("404.html"), b"<h1>nothing here</h1>\n").unwrap();
        std::fs::write(assets.join("favicon.ico"), b"\0\0\x01\0icon").unwrap();
        std::fs::create_dir_all(root.join("fedora/site")).unwrap();
        std::fs::write(root.join("fedora/site/index.html"), b"<p>the project's own page</p>\n").unwrap();
        Tree { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("mirror")
    }

    fn start(&self, extra: &[&str]) -> MirrorServer {
        let assets = self.dir.path().join("assets");
        let mut args = vec!["--assets", assets.to_str().unwrap()];
        args.extend_from_slice(extra);
        MirrorServer::start(&self.root(), &args)
    }
}

/// A site profile for the server tests (with a one-project catalog beside it) in `dir/conf`.
fn lab_profile(dir: &std::path::Path, sponsor: &str, server_section: &str) -> std::path::PathBuf {
    let fedora = "title = \"F\"\nmodule = \"fedora\"\npath = \"fedora\"\nsize_gb = 1\n";
    LabProfile::with_project("fedora", fedora)
        .sponsor(sponsor)
        .extra(&format!("[server]\nscavenger = false\n{server_section}"))
        .write(&dir.join("conf"))
}

fn get(port: u16, path: &str) -> Vec<u8> {
    raw(port, format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(), Duration::from_secs(5))
}

#[test]
fn path_traversal_corpus_never_leaves_the_root() {
    let t = Tree::new();
    let s = t.start(&[]);
    let corpus = [
        "/../secret.txt",
        "/fedora/../../secret.txt",
        "/fedora/%2e%2e/%2e%2e/secret.txt",
        "/fedora/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/fedora/..%2f..%2fsecret.txt",
        "/fedora/..%5c..%5csecret.txt",
        "/fedora\\..\\..\\secret.txt",
        "/fedora/%00/repodata",
        "/fedora/repodata/repomd.xml%00.txt",
        "/fedora/%c0%ae%c0%ae/secret.txt",
        "/fedora/%ff",
        "/fedora/escape",
        "/fedora/escape-relative",
        "/fedora/.~tmp~/partial.rpm",
        "/fedora/.~tmp~/",
        "//..//..//secret.txt",
        "/./../secret.txt",
    ];
    for path in corpus {
        let r = get(s.port, path);
        let status = status_of(&r);
        assert!(status == 404 || status == 400, "{path} gave {status}");
        assert!(!String::from_utf8_lossy(&r).contains("outside the root"), "{path} leaked the secret");
        assert!(!String::from_utf8_lossy(&r).contains("half"), "{path} served a temporary");
    }
    // The listing hides rsync's temporaries; a link inside the root is served.
    let listing = String::from_utf8_lossy(&get(s.port, "/fedora/")).into_owned();
    assert!(!listing.contains(".~tmp~"), "{listing}");
    assert_eq!(status_of(&get(s.port, "/fedora/alias.xml")), 200);
}

#[test]
fn malformed_requests_get_400_and_a_closed_connection() {
    let t = Tree::new();
    let s = t.start(&[]);
    let corpus: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET relative HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"\0\0\0\0\r\n\r\n".to_vec(),
    ];
    for req in corpus {
        let r = raw(s.port, &req, Duration::from_secs(5));
        assert_eq!(status_of(&r), 400, "{:?} gave {}", String::from_utf8_lossy(&req), String::from_utf8_lossy(&r));
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(10_000));
    assert_eq!(status_of(&raw(s.port, long.as_bytes(), Duration::from_secs(5))), 414);
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000));
    assert_eq!(status_of(&raw(s.port, big.as_bytes(), Duration::from_secs(5))), 431);
    let post = raw(s.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&post), 405);
    assert!(String::from_utf8_lossy(&post).contains("Allow: GET, HEAD"));
    // Still serving after all that.
    assert_eq!(status_of(&get(s.port, "/fedora/repodata/repomd.xml")), 200);
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let t = Tree::new();
    let s = t.start(&[]);
    let req = b"GET /fedora/repodata/repomd.xml HTTP/1.1\r\nHost: t\r\n\r\nHEAD /fedora/a.rpm HTTP/1.1\r\nHost: t\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\nGET /robots.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let r = String::from_utf8_lossy(&raw(s.port, req, Duration::from_secs(5))).into_owned();
    let statuses: Vec<&str> = r.match_indices("HTTP/1.1 ").map(|(i, _)| &r[i + 9..i + 12]).collect();
    assert_eq!(statuses, vec!["200", "200", "404", "200"], "{r}");
    assert!(r.contains("<repomd/>"));
    assert!(r.contains("Content-Length: 300000"));
    assert!(r.contains("nothing here"), "the site's 404 page");
    assert!(r.contains("Disallow: /"), "robots.txt from the assets, not the tree");
}

#[test]
fn keep_alive_serves_many_requests_and_http10_closes() {
    let t = Tree::new();
    let s = t.start(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..20 {
        c.write_all(b"GET /fedora/repodata/repomd.xml HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    }
    let r = String::from_utf8_lossy(&raw(
        s.port,
        b"GET /fedora/repodata/repomd.xml HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    ))
    .into_owned();
    assert!(r.starts_with("HTTP/1.0 200 OK") && r.contains("Connection: close"), "{r}");
}

#[test]
fn head_has_the_headers_of_get_and_never_redirects_a_file() {
    let t = Tree::new();
    let s = t.start(&[]);
    let head_of = |method: &str| {
        let r = raw(
            s.port,
            format!("{method} /fedora/a.rpm HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        let text = String::from_utf8_lossy(&r).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
        head.lines().filter(|l| !l.starts_with("Date:")).map(str::to_string).collect::<Vec<_>>()
    };
    let (h, g) = (head_of("HEAD"), head_of("GET"));
    assert_eq!(h, g);
    assert_eq!(h[0], "HTTP/1.1 200 OK");
    assert!(h.iter().any(|l| l == "Content-Type: application/x-rpm"));
    let r = String::from_utf8_lossy(&get(s.port, "/fedora")).into_owned();
    assert!(r.starts_with("HTTP/1.1 301") && r.contains("Location: /fedora/"), "{r}");
}

#[test]
fn listings_html_and_json() {
    let t = Tree::new();
    let s = t.start(&["--hostname", "mm.example.net"]);
    let html = String::from_utf8_lossy(&get(s.port, "/fedora/")).into_owned();
    assert!(html.contains("<a href=\"a.rpm\">a.rpm</a>"), "{html}");
    assert!(html.contains("<a href=\"repodata/\">repodata/</a>"));
    assert!(html.contains("mm.example.net"));
    let json = raw(
        s.port,
        b"GET /fedora/ HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let body = body_of(&json);
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let names: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["a.rpm", "alias.xml", "repodata", "site"]);
    let index = String::from_utf8_lossy(&get(s.port, "/fedora/site/")).into_owned();
    assert!(index.contains("the project's own page") && !index.contains("Index of"), "index.html wins: {index}");
    let icon = get(s.port, "/favicon.ico");
    assert!(icon.ends_with(b"\0\0\x01\0icon"), "favicon.ico from the site assets");
    let q = get(s.port, "/space%20dir/?format=json");
    assert_eq!(status_of(&q), 200);
    assert!(String::from_utf8_lossy(&q).contains("\"entries\":[]"));
}

#[test]
fn sigterm_lets_a_transfer_finish_and_sigusr1_reopens_the_log() {
    let t = Tree::new();
    std::fs::write(t.root().join("big.iso"), bytes(64 << 20, 3)).unwrap();
    let mut s = t.start(&["--shutdown-grace", "20"]);
    // A slow reader: the transfer is in flight when SIGTERM arrives.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"GET /big.iso HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = vec![0u8; 65536];
    let _ = c.read(&mut first).unwrap();
    std::fs::rename(&s.log, s.log.with_extension("old")).unwrap();
    s.signal(Signal::USR1);
    wait_for(Duration::from_secs(5), "the access log reopened", || s.log.exists().then_some(()));
    s.signal(Signal::TERM);
    wait_for(Duration::from_secs(5), "no new connections after SIGTERM", || {
        TcpStream::connect(("127.0.0.1", s.port)).is_err().then_some(())
    });
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let total = 65536usize.min(first.len()) + rest.len();
    assert!(total >= 64 << 20, "transfer cut short: {total} bytes");
    let status = s.wait_exit(Duration::from_secs(10)).expect("exits after the transfer");
    assert!(status.success());
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(log.contains("GET /big.iso HTTP/1.1\" 200 67108864"), "reopened log holds the transfer: {log:?}");
}

#[test]
fn a_listing_without_site_assets_links_a_stylesheet_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mirror/fedora")).unwrap();
    // No --assets: only what is built into the server.
    let s = MirrorServer::start(&dir.path().join("mirror"), &[]);
    let listing = String::from_utf8_lossy(&get(s.port, "/fedora/")).into_owned();
    let href = listing
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a stylesheet link");
    let css = get(s.port, href);
    assert_eq!(status_of(&css), 200, "{}", String::from_utf8_lossy(&css));
    assert!(String::from_utf8_lossy(&css).contains("Content-Type: text/css"), "{}", String::from_utf8_lossy(&css));
    assert!(!body_of(&css).is_empty());
    assert_eq!(status_of(&get(s.port, "/robots.txt")), 200);
}

#[test]
fn an_aborted_download_is_logged_and_counted_with_the_bytes_that_went_out() {
    let t = Tree::new();
    let size = 64u64 << 20;
    std::fs::write(t.root().join("fedora/big.iso"), bytes(size as usize, 4)).unwrap();
    let mport = free_port();
    let s = t.start(&["--metrics-listen", &format!("127.0.0.1:{mport}")]);
    // A client that reads a megabyte and goes away, as mirror pickers and resumable
    // downloaders do all the time.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"GET /fedora/big.iso HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < 1 << 20 {
        got += c.read(&mut buf).unwrap();
    }
    drop(c);
    let log = testkit::file_with(&s.log, "big.iso", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("GET /fedora/big.iso"))
        .unwrap_or_else(|| panic!("no access-log line: {log:?}"));
    // combined + request time + bytes sent + TLS: the 10th field is the body bytes sent.
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[8], "200", "{line}");
    let body: u64 = fields[9].parse().unwrap();
    let sent: u64 = fields[fields.len() - 2].parse().unwrap();
    assert!(body >= 1 << 20 && body < size, "the body bytes that went out, not the file's size: {line}");
    assert!(sent > body && sent < size, "{line}");
    let counted = wait_for(Duration::from_secs(5), "the partial bytes in the counters", || {
        testkit::server::metric(mport, "micromirror_http_sent_bytes_total{project=\"fedora\"}").filter(|v| *v > 0.0)
    });
    assert_eq!(counted as u64, sent, "the counters hold what the log says went out");
}

#[test]
fn metrics_count_per_project_on_their_own_listener() {
    let t = Tree::new();
    let status = t.dir.path().join("status");
    std::fs::create_dir_all(&status).unwrap();
    testkit::fixtures::write_status(&status, "fedora", 1000);
    let mport = free_port();
    let s = t.start(&["--metrics-listen", &format!("127.0.0.1:{mport}"), "--status-dir", status.to_str().unwrap()]);
    for _ in 0..3 {
        get(s.port, "/fedora/a.rpm");
    }
    get(s.port, "/nope");
    let m = testkit::server::promtool_checked(mport);
    assert!(m.contains("micromirror_http_requests_total{project=\"fedora\",class=\"2xx\"} 3"), "{m}");
    assert!(m.contains("micromirror_project_disk_bytes{project=\"fedora\"} 1000"), "{m}");
    assert!(m.contains("micromirror_cdn_efficiency_ratio{project=\"fedora\"} 900"), "{m}");
    // Not on the public port.
    assert_eq!(status_of(&get(s.port, "/metrics")), 404);
}

#[test]
fn rate_limited_prefixes_get_429_after_their_burst() {
    let t = Tree::new();
    let site =
        lab_profile(t.dir.path(), "S", "rate_limits = [{ prefixes = [\"127.0.0.0/8\"], per_second = 1, burst = 5 }]\n");
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = t.start(&["--config", site.to_str().unwrap(), "--metrics-listen", &metrics]);
    let statuses: Vec<u16> = (0..8).map(|_| status_of(&get(s.port, "/fedora/repodata/repomd.xml"))).collect();
    assert_eq!(&statuses[..5], &[200; 5]);
    assert!(statuses[5..].iter().all(|&c| c == 429), "{statuses:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let t = Tree::new();
    let s = t.start(&["--idle-timeout", "1"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        c.write_all(b"GET /fedora/repodata/repomd.xml HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"), "kept alive between requests");
    }
    let idle = std::time::Instant::now();
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "the server closes the idle connection");
    let waited = idle.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn a_client_that_stalls_mid_request_gets_408_and_is_dropped() {
    let t = Tree::new();
    let s = t.start(&["--header-timeout", "1"]);
    let started = std::time::Instant::now();
    let r = raw(s.port, b"GET /fedora/a.rpm HTTP/1.1\r\nHost: t\r\n", Duration::from_secs(10));
    assert_eq!(status_of(&r), 408, "{}", String::from_utf8_lossy(&r));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow client held the connection for {:?}",
        started.elapsed()
    );
}

#[test]
fn connections_beyond_the_maximum_are_closed_and_the_slots_come_back() {
    use std::io::{Read, Write};
    let t = Tree::new();
    let mport = free_port();
    let s = t.start(&["--max-connections", "3", "--threads", "1", "--metrics-listen", &format!("127.0.0.1:{mport}")]);
    // The start-up probe's connection must be gone before the slots are counted.
    wait_for(Duration::from_secs(10), "no connection open", || {
        testkit::server::metric(mport, "micromirror_http_connections").filter(|n| *n == 0.0)
    });
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    };
    // Three idle keep-alive connections take every slot (each proves it is served).
    let mut held: Vec<_> = (0..3).map(|_| connect()).collect();
    for c in &mut held {
        c.write_all(b"GET /fedora/repodata/repomd.xml HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert_eq!(status_of(&buf[..n]), 200, "{}", String::from_utf8_lossy(&buf[..n]));
    }
    // A fourth is accepted by the kernel and closed by the server without an answer.
    let mut extra = connect();
    let _ = extra.write_all(b"GET /fedora/repodata/repomd.xml HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "over the limit, yet answered: {}", String::from_utf8_lossy(&buf));
    // One leaves: its slot serves the next client.
    drop(held.pop());
    let started = std::time::Instant::now();
    loop {
        let r = get(s.port, "/fedora/repodata/repomd.xml");
        if status_of(&r) == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the freed slot was not reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_reloads_the_site_profile() {
    let t = Tree::new();
    let site = lab_profile(t.dir.path(), "Old Sponsor", "");
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = t.start(&["--config", site.to_str().unwrap(), "--metrics-listen", &metrics]);
    assert!(String::from_utf8_lossy(&get(s.port, "/")).contains("Old Sponsor"));
    // What can change live does: the sponsor and a rate limit.
    let limited = "rate_limits = [{ prefixes = [\"127.0.0.0/8\"], per_second = 1, burst = 3 }]\n";
    lab_profile(t.dir.path(), "New Sponsor", limited);
    s.signal(Signal::HUP);
    let log = testkit::file_with(&s.errors, "configuration reloaded", Duration::from_secs(10));
    assert!(log.contains("the sponsor") && log.contains("the rate limits"), "the log names what was applied: {log}");
    assert!(String::from_utf8_lossy(&get(s.port, "/")).contains("New Sponsor"));
    let statuses: Vec<u16> = (0..10).map(|_| status_of(&get(s.port, "/fedora/a.rpm"))).collect();
    assert!(statuses.contains(&429), "the new rate limit applies at once: {statuses:?}");

    // What only a restart applies is named, and the server goes on as it runs.
    let tls =
        "[tls]\ncertificate_file = \"/etc/ssl/mirror/fullchain.pem\"\nkey_file = \"/etc/ssl/mirror/privkey.pem\"\n";
    let fedora = "title = \"F\"\nmodule = \"fedora\"\npath = \"fedora\"\nsize_gb = 1\n";
    LabProfile::with_project("fedora", fedora)
        .sponsor("New Sponsor")
        .extra(&format!("[server]\nscavenger = true\n\n{tls}"))
        .write(&t.dir.path().join("conf"));
    s.signal(Signal::HUP);
    let log = testkit::file_with(&s.errors, "the certificate source", Duration::from_secs(10));
    for change in ["the certificate source (none → files /etc/ssl/mirror/fullchain.pem", "DSCP marking (false → true)"]
    {
        assert!(log.contains(change) && log.contains("needs a restart"), "`{change}` not named: {log}");
    }
    assert_eq!(status_of(&get(s.port, "/fedora/repodata/repomd.xml")), 200, "the limit went away live");

    // A broken profile on reload keeps the running configuration.
    std::fs::write(&site, "[site]\nbroken = ").unwrap();
    s.signal(Signal::HUP);
    testkit::file_with(&s.errors, "reload failed", Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&get(s.port, "/")).contains("New Sponsor"));
}

/// A FUSE file system (tests/fixtures/slowfs.py) over `source`, mounted at `mountpoint`, whose
/// first read of each file waits `delay`: page-cache misses that last long enough to see.
struct SlowDisk {
    child: std::process::Child,
    mountpoint: std::path::PathBuf,
    /// One line per slow read or listing, as it starts waiting.
    log: std::path::PathBuf,
}

impl SlowDisk {
    fn mount(source: &std::path::Path, mountpoint: &std::path::Path, delay: Duration) -> SlowDisk {
        std::fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("slow.log");
        let child = std::process::Command::new("/usr/bin/python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/slowfs.py"))
            .arg(source)
            .arg(mountpoint)
            .arg(delay.as_secs_f64().to_string())
            .arg(&log)
            .spawn()
            .expect("python3 runs the slow FUSE file system (needs python3-fusepy and /dev/fuse)");
        let disk = SlowDisk { child, mountpoint: mountpoint.to_path_buf(), log };
        let start = std::time::Instant::now();
        let mounted = || {
            std::fs::read_to_string("/proc/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == mountpoint.to_str())
        };
        while !mounted() {
            assert!(start.elapsed() < Duration::from_secs(10), "the slow FUSE file system did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        disk
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a metric line `name value` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_file_or_folder_not_in_the_cache_stalls_only_its_own_client() {
    let t = Tree::new();
    let source = t.dir.path().join("slow-source");
    std::fs::create_dir_all(&source).unwrap();
    let big = bytes(6 << 20, 21);
    let small = bytes(20_000, 22);
    std::fs::write(source.join("cold.iso"), &big).unwrap();
    std::fs::write(source.join("cold.xml"), &small).unwrap();
    std::fs::create_dir_all(source.join("cold-folder")).unwrap();
    std::fs::write(source.join("cold-folder/package-1.0.rpm"), b"rpm").unwrap();
    let delay = Duration::from_secs(3);
    let disk = SlowDisk::mount(&source, &t.root().join("slow"), delay);
    // One worker thread: a read that blocked it would stall every other client.
    let s = t.start(&["--threads", "1"]);
    let port = s.port;
    let fetch = move |path: &'static str| {
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let response = get(port, path);
            (response, started.elapsed())
        })
    };
    let (cold_big, cold_small) = (fetch("/slow/cold.iso"), fetch("/slow/cold.xml"));
    let cold_listing = fetch("/slow/cold-folder/");
    // Every cold request is waiting on the disk before the hot ones are timed.
    wait_for(Duration::from_secs(10), "three slow reads under way", || {
        (std::fs::read_to_string(&disk.log).unwrap_or_default().lines().count() >= 3).then_some(())
    });
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let response = get(port, "/fedora/repodata/repomd.xml");
        assert_eq!(status_of(&response), 200);
        assert!(started.elapsed() < delay / 2, "a cached file waited {:?} behind cold reads", started.elapsed());
    }
    for (handle, data) in [(cold_big, &big), (cold_small, &small)] {
        let (response, took) = handle.join().unwrap();
        assert!(took >= delay, "the slow disk answered in {took:?}: nothing was cold");
        let body = body_of(&response);
        assert!(body == &data[..], "the cold file arrives byte for byte");
    }
    let (listing, took) = cold_listing.join().unwrap();
    assert!(took >= delay, "the folder was read in {took:?}: nothing was cold");
    assert!(String::from_utf8_lossy(&listing).contains(">package-1.0.rpm</a>"), "the cold folder is listed");
}

#[test]
fn files_on_network_or_fuse_file_systems_are_never_kept_open() {
    // Such files change without inotify seeing it (another host writes to NFS).
    let t = Tree::new();
    let source = t.dir.path().join("remote-source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("remote.txt"), b"first!").unwrap();
    let _disk = SlowDisk::mount(&source, &t.root().join("remote"), Duration::ZERO);
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = t.start(&["--metrics-listen", &metrics]);
    let port = s.port;
    let body = |path: &str| {
        let r = get(port, path);
        body_of(&r).to_vec()
    };
    assert_eq!(body("/fedora/repodata/repomd.xml"), b"<?xml version=\"1.0\"?><repomd/>\n");
    assert_eq!(body("/remote/remote.txt"), b"first!");
    std::fs::write(source.join("remote.txt"), b"second").unwrap();
    assert_eq!(body("/remote/remote.txt"), b"second", "a file changed behind the file system's back");
    let port = metrics.rsplit(':').next().unwrap().parse().unwrap();
    let text = String::from_utf8_lossy(&get(port, "/metrics")).into_owned();
    assert_eq!(metric(&text, "micromirror_open_files"), Some(1.0), "only the local file: {text}");
}

#[test]
fn the_root_is_a_front_page_with_each_project_its_last_sync_and_size() {
    let t = Tree::new();
    let site = lab_profile(t.dir.path(), "Front Sponsor", "");
    let status = t.dir.path().join("status");
    std::fs::create_dir_all(&status).unwrap();
    testkit::fixtures::write_status(&status, "fedora", 3 << 30);
    let s = t.start(&["--config", site.to_str().unwrap(), "--status-dir", status.to_str().unwrap()]);
    let page = String::from_utf8_lossy(&get(s.port, "/")).into_owned();
    assert_eq!(status_of(page.as_bytes()), 200, "{page}");
    assert!(page.contains("Hosted by <a href=\"https://example.net/\">Front Sponsor</a>"), "{page}");
    assert!(page.contains("<a href=\"/fedora/\">F</a>"), "{page}");
    assert!(page.contains(&format!("rsync://{}/fedora/", testkit::fixtures::LAB_HOSTNAME)), "{page}");
    assert!(page.contains("s ago") && page.contains("3.0 GiB"), "the status file's age and size: {page}");
    // Machines still get the root's listing.
    let json = String::from_utf8_lossy(&get(s.port, "/?format=json")).into_owned();
    assert!(json.contains("\"name\":\"fedora\""), "{json}");
}
