//! Boxes of a fleet feeding each other (issue: the upstream's load stays flat): a box fetches a
//! project from a peer's rsync daemon when that peer holds the upstream's current state (its
//! marker file is the upstream's), waits a bounded time for a peer still at work on a push, and
//! takes the upstream otherwise: a stale peer, a peer that is down. Real rsync daemons on
//! loopback: the upstream, and box A serving its tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod world;

use testkit::fixtures::{bytes, snapshot, write_file as write};
use testkit::peers::{rsync_daemon, rsync_log};
use world::World;

/// Writes `path` dated two minutes ahead, so rsync's quick check sees a same-size rewrite.
fn rewrite(path: &Path, text: &[u8]) {
    write(path, text);
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(later).unwrap();
}

/// Box B: its own tree, state and logs, fetching fixture-arch from `peer` before the upstream.
struct BoxB {
    dir: PathBuf,
}

impl BoxB {
    fn run(&self, w: &World, peer: &str) -> (bool, String) {
        let out = self.command(w, peer, 3).stdin(Stdio::null()).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// `mirror-sync run fixture-arch` on B, waiting up to `wait_s` for the peer.
    fn command(&self, w: &World, peer: &str, wait_s: u64) -> Command {
        let mut c = Command::new(testkit::bin("mirror-sync"));
        c.arg("--config")
            .arg(w.dir.path().join("etc/site.toml"))
            .arg("--mirror-root")
            .arg(self.dir.join("mirror"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--log-dir")
            .arg(self.dir.join("logs"))
            .args(["--retry-base", "1", "--peer", &format!("fixture-arch={peer}")])
            .args(["--peer-wait", &wait_s.to_string(), "run", "fixture-arch"]);
        c
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state/fixture-arch.json")).unwrap()).unwrap()
    }

    fn tree(&self) -> PathBuf {
        self.dir.join("mirror/fixture-arch")
    }
}

fn log_len(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.len()).unwrap_or(0)
}

fn since(path: &Path, from: usize) -> String {
    std::fs::read_to_string(path).unwrap_or_default().get(from..).unwrap_or_default().to_string()
}

#[test]
fn a_box_fetches_from_a_peer_holding_the_upstreams_state_and_from_the_upstream_otherwise() {
    let w = World::new();
    let up = w.upstream("fixture-arch");
    write(&up.join("lastsync"), b"1700000000\n");
    write(&up.join("lastupdate"), b"1700000000\n");
    for i in 0..30 {
        write(&up.join(format!("core/os/x86_64/pkg-{i}.pkg.tar.zst")), &bytes(20_000 + i, i as u64));
    }
    // Box A syncs from the upstream and serves its tree from its own rsync daemon.
    assert!(w.run("fixture-arch").0);
    let (peer_daemon, peer_port) = rsync_daemon(w.dir.path(), &[("fixture-arch", w.local("fixture-arch"))]);
    let peer = format!("127.0.0.1:{peer_port}");
    let upstream_log = rsync_log(w.dir.path(), w.port);
    let peer_log = rsync_log(w.dir.path(), peer_port);
    let b = BoxB { dir: w.dir.path().join("box-b") };

    // 1. A holds the upstream's state: B asks the upstream for its marker only, and walks A.
    let (u0, p0) = (log_len(&upstream_log), log_len(&peer_log));
    let (ok, out) = b.run(&w, &peer);
    assert!(ok, "{out}");
    assert_eq!(snapshot(&b.tree()), snapshot(&up), "B holds the upstream's state byte for byte");
    let st = b.status();
    assert_eq!(st["source"], format!("peer {peer}"), "{st}");
    assert!(out.contains(&format!("from peer {peer}")), "status says where it came from:\n{out}");
    assert!(st["stats"]["bytes_received"].as_u64().unwrap() > 30 * 20_000, "{st}");
    let from_upstream = since(&upstream_log, u0);
    let connections: Vec<&str> = from_upstream.lines().filter(|l| l.contains("rsync on ")).collect();
    assert_eq!(connections.len(), 1, "the upstream saw one connection:\n{from_upstream}");
    assert!(connections[0].contains("fixture-arch/lastupdate"), "the marker alone:\n{from_upstream}");
    assert!(since(&peer_log, p0).contains("rsync on fixture-arch/ "), "B walked A's module");

    // 2. The upstream moved on and A has not: A's marker is stale, so B goes to the upstream.
    write(&up.join("core/os/x86_64/new.pkg.tar.zst"), &bytes(5_000, 99));
    rewrite(&up.join("lastupdate"), b"1700000200\n");
    let p1 = log_len(&peer_log);
    let (ok, out) = b.run(&w, &peer);
    assert!(ok, "{out}");
    assert_eq!(b.status()["source"], "upstream", "{}", b.status());
    assert_eq!(snapshot(&b.tree()), snapshot(&up));
    let asked_peer = since(&peer_log, p1);
    assert!(
        asked_peer.contains("fixture-arch/lastupdate") && !asked_peer.contains("rsync on fixture-arch/ "),
        "the stale peer was asked for its marker only, never walked:\n{asked_peer}"
    );

    // 3. A push reaches both at once: B waits for A to hold the new state, then walks A.
    write(&up.join("core/os/x86_64/pushed.pkg.tar.zst"), &bytes(5_000, 97));
    rewrite(&up.join("lastupdate"), b"1700000250\n");
    let waiting =
        b.command(&w, &peer, 120).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pa = log_len(&peer_log);
    assert!(w.run("fixture-arch").0, "A syncs the push from the upstream");
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.status()["source"], format!("peer {peer}"), "B waited for A: {}", b.status());
    assert_eq!(snapshot(&b.tree()), snapshot(&up));
    assert!(since(&peer_log, pa).contains("rsync on fixture-arch/ "), "B walked A once A had the push");

    // 4. A is down: B loses no more than a refused connection and takes the upstream.
    drop(peer_daemon);
    write(&up.join("core/os/x86_64/newer.pkg.tar.zst"), &bytes(5_000, 98));
    rewrite(&up.join("lastupdate"), b"1700000300\n");
    let started = std::time::Instant::now();
    let (ok, out) = b.run(&w, &peer);
    assert!(ok, "{out}");
    assert_eq!(b.status()["source"], "upstream");
    assert_eq!(snapshot(&b.tree()), snapshot(&up));
    assert!(started.elapsed() < Duration::from_secs(60), "a peer that is down costs a bounded wait");
}
