//! Boxes of a fleet feeding each other (issue: the upstream's load stays flat): a box fetches a
//! project from a peer's rsync daemon when that peer holds the upstream's current state (its
//! marker file is the upstream's), waits a bounded time for a peer still at work on a push, and
//! takes the upstream otherwise: a stale peer, a peer that dies mid-walk, a peer that is down,
//! a peer that is busy.
//! Real rsync daemons on
//! loopback: the upstream, and box A serving its tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod world;

use testkit::fixtures::{bytes, snapshot, write_file as write};
use testkit::peers::{hold_rsync_session, rsync_daemon, rsync_daemon_with, rsync_log};
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
    // 8 Mbit/s: a walk of a few MB takes seconds, long enough to kill its peer mid-way.
    let w = World::with(|p| p.push_str("bwlimit_mbit = 8\n"));
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

    // 4. A dies while B walks it: B finishes from the next source, here the upstream.
    for i in 0..3 {
        write(&up.join(format!("core/os/x86_64/big-{i}.pkg.tar.zst")), &bytes(1_000_000, 50 + i));
    }
    rewrite(&up.join("lastupdate"), b"1700000280\n");
    assert!(w.run("fixture-arch").0, "A takes the change from the upstream");
    let walking =
        b.command(&w, &peer, 30).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(b.dir.join("state/fixture-arch.json"))
        .is_ok_and(|t| t.contains(&format!("from rsync://{peer}/fixture-arch/")))
    {
        assert!(start.elapsed() < Duration::from_secs(30), "B never started walking A");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(peer_daemon);
    let out = walking.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.status()["source"], "upstream", "{}", b.status());
    assert_eq!(snapshot(&b.tree()), snapshot(&up), "B finished the change from the upstream");
    let run_log = std::fs::read_to_string(b.status()["log_file"].as_str().unwrap()).unwrap();
    assert!(run_log.contains(&format!("### peer {peer}: ")) && run_log.contains("passed over"), "{run_log}");

    // 5. A is down: B loses no more than a refused connection and takes the upstream.
    write(&up.join("core/os/x86_64/newer.pkg.tar.zst"), &bytes(5_000, 98));
    rewrite(&up.join("lastupdate"), b"1700000300\n");
    let started = std::time::Instant::now();
    let (ok, out) = b.run(&w, &peer);
    assert!(ok, "{out}");
    assert_eq!(b.status()["source"], "upstream");
    assert_eq!(snapshot(&b.tree()), snapshot(&up));
    assert!(started.elapsed() < Duration::from_secs(60), "a peer that is down costs a bounded wait");

    // 6. A holds the state but is busy (its one connection slot taken): B passes it over at
    //    once and takes the upstream.
    write(&up.join("core/os/x86_64/busy.pkg.tar.zst"), &bytes(5_000, 99));
    rewrite(&up.join("lastupdate"), b"1700000400\n");
    assert!(w.run("fixture-arch").0, "A takes the change from the upstream");
    let busy = [("fixture-arch", w.local("fixture-arch"))];
    let _busy_daemon = rsync_daemon_with(w.dir.path(), peer_port, &busy, "max connections = 1");
    let _held = hold_rsync_session(peer_port, "fixture-arch");
    let started = std::time::Instant::now();
    let (ok, out) = b.run(&w, &peer);
    assert!(ok, "{out}");
    assert_eq!(b.status()["source"], "upstream", "{}", b.status());
    assert_eq!(snapshot(&b.tree()), snapshot(&up));
    let run_log = std::fs::read_to_string(b.status()["log_file"].as_str().unwrap()).unwrap();
    assert!(run_log.contains("max connections (1) reached"), "B was refused by the busy peer:\n{run_log}");
    assert!(run_log.contains(&format!("### peer {peer}: unreachable; passed over")), "{run_log}");
    assert!(started.elapsed() < Duration::from_secs(60), "a busy peer costs a bounded wait");
}

/// A box of the simulated fleet: its own tree, state, logs and rsync daemon, and mirror-sync's
/// daemon fetching fixture-arch from its peers (by the fleet's topology) before the upstream.
struct FleetBox {
    dir: PathBuf,
    daemon: Option<std::process::Child>,
    _rsyncd: testkit::peers::Peer,
    port: u16,
}

impl FleetBox {
    fn tree(&self) -> PathBuf {
        self.dir.join("mirror/fixture-arch")
    }

    fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state/fixture-arch.json")).ok()?).ok()
    }
}

impl Drop for FleetBox {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = rustix::process::kill_process_group(rustix::process::Pid::from_child(&c), testkit::Signal::KILL);
            let _ = c.wait();
        }
    }
}

/// Waits until every box's fixture-arch status satisfies `done`.
fn wait_all(boxes: &[FleetBox], what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let start = std::time::Instant::now();
    while !boxes.iter().all(|b| b.status().is_some_and(|s| done(&s))) {
        let states: Vec<String> =
            boxes.iter().map(|b| b.status().map(|s| s["state"].to_string()).unwrap_or("-".into())).collect();
        assert!(start.elapsed() < Duration::from_secs(180), "{what}: {states:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fixture-arch walks the upstream served (connections to the module's root) in `log`.
fn walks(log: &str) -> usize {
    log.lines().filter(|l| l.contains("rsync on fixture-arch/ ")).count()
}

#[test]
fn a_fleet_of_six_takes_each_change_from_the_upstream_three_times_and_the_rest_from_each_other() {
    use std::os::unix::process::CommandExt;
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, mqtt) = testkit::peers::mosquitto(broker_dir.path());
    let w = World::with(|p| {
        p.push_str(&format!(
            "bwlimit_mbit = 16\npush = {{ broker = \"127.0.0.1:{mqtt}\", topic_prefix = \"rsync/up.example.net\" }}\n"
        ))
    });
    let up = w.upstream("fixture-arch");
    write(&up.join("lastsync"), b"1700000000\n");
    write(&up.join("lastupdate"), b"1700000000\n");
    for i in 0..8 {
        write(&up.join(format!("core/os/x86_64/pkg-{i}.pkg.tar.zst")), &bytes(400_000 + i, i as u64));
    }
    // Six boxes, their daemons started before any syncs (their trees empty), fed by topology.
    let names: Vec<String> = (0..6).map(|i| format!("box{i}")).collect();
    let mut boxes: Vec<FleetBox> = names
        .iter()
        .map(|n| {
            let dir = w.dir.path().join(n);
            std::fs::create_dir_all(dir.join("mirror/fixture-arch")).unwrap();
            let (rsyncd, port) = rsync_daemon(&dir, &[("fixture-arch", dir.join("mirror/fixture-arch"))]);
            FleetBox { dir, daemon: None, _rsyncd: rsyncd, port }
        })
        .collect();
    let carriers: Vec<_> = names.iter().map(|n| schema::topology::Carrier::gigabit(n)).collect();
    let feeds = schema::topology::plan("fixture-arch", &carriers, schema::topology::Fanout::default());
    let ports: Vec<u16> = boxes.iter().map(|b| b.port).collect();
    let upstream_log = rsync_log(w.dir.path(), w.port);
    let start_daemon = |b: &FleetBox, name: &str| {
        let feed = feeds.iter().find(|f| f.site == name).unwrap();
        let mut c = Command::new(testkit::bin("mirror-sync"));
        c.arg("--config").arg(w.dir.path().join("etc/site.toml"));
        c.arg("--mirror-root").arg(b.dir.join("mirror")).arg("--state-dir").arg(b.dir.join("state"));
        c.arg("--log-dir").arg(b.dir.join("logs")).args(["--retry-base", "1", "--peer-wait", "60"]);
        for s in &feed.sources {
            if let schema::topology::Source::Peer(p) = s {
                let j = names.iter().position(|n| n == p).unwrap();
                c.arg(format!("--peer=fixture-arch=127.0.0.1:{}", ports[j]));
            }
        }
        c.arg("daemon").env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null());
        c.stderr(std::fs::File::create(b.dir.join("daemon.log")).unwrap()).process_group(0).spawn().unwrap()
    };
    let daemons: Vec<std::process::Child> = boxes.iter().zip(&names).map(|(b, n)| start_daemon(b, n)).collect();
    for (b, d) in boxes.iter_mut().zip(daemons) {
        b.daemon = Some(d);
    }

    // The fleet's first sync: everyone starts at once; three walk the upstream.
    wait_all(&boxes, "every box's first sync", |s| s["state"] == "success");
    for b in &boxes {
        assert_eq!(snapshot(&b.tree()), snapshot(&up), "{} holds the upstream's state", b.dir.display());
    }
    let first = std::fs::read_to_string(&upstream_log).unwrap();
    assert_eq!(walks(&first), 3, "three boxes walked the upstream:\n{first}");
    let from_peers =
        boxes.iter().filter(|b| b.status().unwrap()["source"].as_str().unwrap().starts_with("peer")).count();
    assert_eq!(from_peers, 3, "the other three were fed by the fleet");

    // A change, pushed to every box at once, while a reader checks that no box ever shows the
    // new marker without the whole new state.
    write(&up.join("core/os/x86_64/pkg-new.pkg.tar.zst"), &bytes(600_000, 77));
    std::fs::remove_file(up.join("core/os/x86_64/pkg-0.pkg.tar.zst")).unwrap();
    rewrite(&up.join("lastupdate"), b"1700000500\n");
    let new_state = snapshot(&up);
    let trees: Vec<PathBuf> = boxes.iter().map(FleetBox::tree).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, trees, new_state) = (stop.clone(), trees.clone(), new_state.clone());
        std::thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for t in &trees {
                    if std::fs::read(t.join("lastupdate")).is_ok_and(|m| m == b"1700000500\n") {
                        let have = snapshot(t);
                        for file in &new_state {
                            assert!(have.contains(file), "{} shows the new marker without {file:?}", t.display());
                        }
                        checks += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            checks
        })
    };
    let before = first.len();
    // `full_run` has one-second resolution: the push's runs end in a later second.
    let walked_before: Vec<i64> = boxes.iter().map(|b| b.status().unwrap()["full_run"].as_i64().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(1100));
    testkit::peers::publish(mqtt, "rsync/up.example.net/fixture-arch");
    let start = std::time::Instant::now();
    while !boxes
        .iter()
        .zip(&walked_before)
        .all(|(b, t)| b.status().is_some_and(|s| s["state"] == "success" && s["full_run"].as_i64() > Some(*t)))
    {
        assert!(start.elapsed() < Duration::from_secs(120), "every box synced the push");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = reader.join().expect("no box showed a half state");
    assert!(checks > 0, "the reader saw the new marker on some box");
    for b in &boxes {
        assert_eq!(snapshot(&b.tree()), new_state, "{} holds the pushed state byte for byte", b.dir.display());
    }
    let pushed = since(&upstream_log, before);
    assert!(walks(&pushed) <= 3, "at most three boxes walked the upstream for the push:\n{pushed}");

    // A push with no change: each box reads the upstream's marker and nothing else.
    let before = log_len(&upstream_log);
    let runs_before: Vec<i64> = boxes.iter().map(|b| b.status().unwrap()["ended"].as_i64().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(1100)); // `ended` has one-second resolution
    testkit::peers::publish(mqtt, "rsync/up.example.net/fixture-arch");
    let start = std::time::Instant::now();
    while !boxes
        .iter()
        .zip(&runs_before)
        .all(|(b, t)| b.status().is_some_and(|s| s["ended"].as_i64() > Some(*t) && s["unchanged"] == true))
    {
        let states: Vec<String> = boxes.iter().map(|b| format!("{}", b.status().unwrap_or_default())).collect();
        let logs: Vec<String> = boxes
            .iter()
            .map(|b| {
                let run = b.status().and_then(|s| s["log_file"].as_str().map(PathBuf::from));
                run.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
            })
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "every box checked the no-change push:\n{states:#?}\n{}",
            logs.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let quiet = since(&upstream_log, before);
    assert_eq!(walks(&quiet), 0, "no walk for a push without a change:\n{quiet}");
    assert_eq!(quiet.lines().filter(|l| l.contains("rsync on fixture-arch/lastupdate ")).count(), 6, "{quiet}");
}
