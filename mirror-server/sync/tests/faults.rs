//! mirror-sync when the field goes wrong, with the real rsync daemon: an upstream that is down
//! at first boot and comes up later, one that vanishes mid-run, one that never answers a
//! connection, and a status file left unreadable by a crash. Each must end well by itself:
//! nothing half-served, the project synced in the end, and the status saying what happened.

mod world;

use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::fixtures::{bytes, publish_debian, snapshot, write_file as write, LabProfile};
use world::{World, PROJECTS};

/// A tree as clients see it, without our own trace file (upstream has none of ours).
fn served(dir: &std::path::Path) -> Vec<(String, String)> {
    snapshot(dir).into_iter().filter(|(p, _)| !p.starts_with("trace/")).collect()
}

fn fill_upstream(w: &World) {
    publish_debian(&w.upstream("fixture-debian"), 1, 20_000);
    write(&w.upstream("fixture-rpm").join("repodata/repomd.xml"), b"<repomd/>");
    write(&w.upstream("fixture-arch").join("lastsync"), b"1700000000\n");
}

#[test]
fn a_first_sync_that_finds_the_upstream_down_is_retried_until_it_comes_up() {
    let mut w = World::with_upstream_down(|_| {});
    fill_upstream(&w);
    // No push configured: only the schedule's retries can bring the projects in.
    let daemon = w.daemon(&["--retry-after", "2"]);

    // While the first runs try, nothing says "failed, never synced": two run, one waits.
    let rows = testkit::wait_for(Duration::from_secs(15), "two runs and one queued", || {
        let rows = w.status_json();
        let count = |state: &str| rows.iter().filter(|r| r["state"] == state).count();
        (count("running") == 2 && count("queued") == 1).then_some(rows)
    });
    for r in rows.iter().filter(|r| r["state"] == "running") {
        assert!(r["activity"].as_str().is_some_and(|a| !a.is_empty()), "a run says what it does: {r}");
    }
    // …and, retrying, why: in rsync's words.
    testkit::wait_for(Duration::from_secs(20), "a run retrying with rsync's reason", || {
        w.status_json().into_iter().find(|r| {
            r["activity"].as_str().is_some_and(|a| a.contains("retry 1/3") && a.contains("Connection refused"))
        })
    });

    // Each run fails after its own retries, in rsync's words, with the next attempt set.
    for p in PROJECTS {
        let st = w.wait_status(p, Duration::from_secs(60), "a failed first sync", |s| s["state"] == "failed");
        let error = st["error"].as_str().unwrap_or("");
        assert!(error.contains("Connection refused"), "{p}: {st}");
        let next = w.wait_status(p, Duration::from_secs(10), "a next attempt", |s| s["next_attempt"].is_i64());
        assert!(next["next_attempt"].as_i64() >= next["ended"].as_i64(), "{next}");
    }
    let table = String::from_utf8(w.sync_cmd().arg("status").output().unwrap().stdout).unwrap();
    assert!(table.contains("FAILED") && table.contains("Connection refused") && table.contains(" in "), "{table}");

    // The upstream comes up: every project syncs by itself.
    w.start_upstream();
    for p in PROJECTS {
        w.wait_status(p, Duration::from_secs(90), "a successful retry", |s| s["state"] == "success");
        assert_eq!(served(&w.local(p)), snapshot(&w.upstream(p)), "{p}");
    }
    assert!(daemon.text().contains("retry after a failed run"), "{}", daemon.text());
    let st = w.status("fixture-rpm");
    assert_eq!(st["failures"], 0, "a success clears the failures: {st}");
}

#[test]
fn an_upstream_that_vanishes_mid_run_leaves_the_served_tree_whole_and_a_later_run_completes() {
    let mut w = World::with(|p| p.push_str("bwlimit_mbit = 8\n"));
    let up = w.upstream("fixture-debian");
    publish_debian(&up, 1, 10_000);
    assert!(w.run("fixture-debian").0);
    let v1 = served(&w.local("fixture-debian"));
    // Version 2 brings a 3 MiB package: at 1 MB/s the run is still copying when upstream goes.
    publish_debian(&up, 2, 3 << 20);
    let mut run =
        w.sync_cmd().args(["run", "fixture-debian"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // rsync receives into a hidden temporary file beside the final name (`.hello_2_all.deb.XXXXXX`)
    // and only moves it into `.~tmp~` once it is whole, so the temporary file is what shows a
    // copy in progress.
    testkit::wait_for(Duration::from_secs(20), "the new package half copied", || {
        let dir = w.local("fixture-debian").join("pool/main/h/hello");
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(".hello_2_all.deb.")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
            .then_some(())
    });
    w.stop_upstream();
    let status = run.wait().unwrap();
    assert!(!status.success(), "a run without its upstream fails");
    let st = w.status("fixture-debian");
    assert_eq!(st["state"], "failed", "{st}");
    assert!(st["error"].as_str().is_some_and(|e| e.contains("rsync")), "{st}");
    // The served tree is still version 1, whole: its index names only what is there.
    assert_eq!(served(&w.local("fixture-debian")), v1, "the failed run changed the served tree");

    w.start_upstream();
    let (ok, out) = w.run("fixture-debian");
    assert!(ok, "{out}");
    assert_eq!(served(&w.local("fixture-debian")), snapshot(&up));
}

#[test]
fn an_upstream_that_never_answers_fails_within_the_connect_timeout_and_says_so() {
    use rustix::net::{bind, listen, socket, AddressFamily, SocketType};
    // A listener whose accept queue is full: the kernel drops further SYNs, as a blackholed
    // host would, and the client waits.
    let sock = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&sock, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    listen(&sock, 0).unwrap();
    let addr = rustix::net::getsockname(&sock).unwrap();
    let port = std::net::SocketAddr::try_from(addr).unwrap().port();
    let _fills_the_queue = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let entry = "title = \"Silent\"\nmodule = \"silent\"\npath = \"silent\"\nsize_gb = 1\ntimeout_s = 3\n";
    let profile = LabProfile::with_project("silent", entry)
        .upstream(&format!("127.0.0.1:{port}"))
        .mirror_extra("min_free_mb = 0\n")
        .write(&dir.path().join("etc"));
    let started = Instant::now();
    let out = std::process::Command::new(testkit::bin("mirror-sync"))
        .arg("--config")
        .arg(&profile)
        .arg("--mirror-root")
        .arg(dir.path().join("mirror"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--retry-base", "1", "run", "silent"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    // Four attempts of 3 s each and 1 + 2 + 4 s between them, not the kernel's two minutes each.
    assert!(took < Duration::from_secs(45), "the run took {took:?}:\n{text}");
    assert!(text.contains("timeout waiting for daemon connection"), "{text}");
}

#[test]
fn an_unreadable_status_file_is_set_aside_said_so_and_the_project_syncs_again() {
    let w = World::new();
    fill_upstream(&w);
    for p in PROJECTS {
        assert!(w.run(p).0);
    }
    // A crash mid-write on a file system without rename atomicity: half a file.
    let file = w.state().join("fixture-arch.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();

    let daemon = w.daemon(&[]);
    daemon.wait_log("unreadable status file set aside", 1, Duration::from_secs(10));
    assert!(daemon.text().contains("fixture-arch.json"), "{}", daemon.text());
    assert!(w.state().join("fixture-arch.json.unreadable").exists());
    // With no status left it counts as new: synced again at once, the others left alone.
    w.wait_status("fixture-arch", Duration::from_secs(30), "a new first sync", |s| s["state"] == "success");
    assert_eq!(w.runs_logged("fixture-arch"), 2);
    assert_eq!(w.runs_logged("fixture-rpm"), 1);
}

#[test]
fn sigusr1_syncs_every_project_at_once_whatever_its_backoff_says() {
    // What an adopted box's commit sends once the tree is the sync's: the trial's failed runs
    // would otherwise wait out their backoff (here an hour).
    let mut w = World::with_upstream_down(|_| {});
    fill_upstream(&w);
    let daemon = w.daemon(&["--retry-after", "3600"]);
    for p in PROJECTS {
        w.wait_status(p, Duration::from_secs(60), "a failed first sync", |s| s["state"] == "failed");
        let next = w.wait_status(p, Duration::from_secs(10), "a next attempt", |s| s["next_attempt"].is_i64());
        let wait = next["next_attempt"].as_i64().unwrap_or(0) - next["ended"].as_i64().unwrap_or(0);
        assert!(wait > 1800, "{p} waits its backoff: {next}");
    }
    w.start_upstream();
    daemon.signal(testkit::Signal::USR1);
    for p in PROJECTS {
        w.wait_status(p, Duration::from_secs(60), "synced after SIGUSR1", |s| s["state"] == "success");
        assert_eq!(served(&w.local(p)), snapshot(&w.upstream(p)), "{p}");
    }
    assert!(daemon.text().contains("SIGUSR1: every project now"), "{}", daemon.text());
    assert_eq!(daemon.text().matches("\"SIGUSR1\"").count(), 3, "{}", daemon.text());
}

#[test]
fn a_tree_the_sync_user_cannot_write_fails_before_the_upstream_is_asked_anything() {
    // An adopted box on trial: the tree is still the old system's admin's, and the sync runs as
    // its own user. Here the tree is root's and the sync runs as nobody.
    use std::os::unix::fs::{chown, PermissionsExt};
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let w = World::new();
    fill_upstream(&w);
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(w.local("fixture-arch")).unwrap();
    for own in [w.state(), w.dir.path().join("logs")] {
        std::fs::create_dir_all(&own).unwrap();
        chown(&own, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let log = testkit::peers::rsync_log(w.dir.path(), w.port);
    // A request names its module; the daemon's own readiness probe names none.
    let asked = || std::fs::read_to_string(&log).unwrap_or_default().matches("fixture-arch").count();
    let before = asked();

    let out = w.sync_cmd().args(["run", "fixture-arch"]).uid(NOBODY).gid(NOBODY).stdin(Stdio::null()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    let dest = w.local("fixture-arch");
    assert!(text.contains(&format!("{} is not writable by this user (uid {NOBODY})", dest.display())), "{text}");
    assert!(text.contains(&format!("chown -R mirror-sync: {}", dest.display())), "the fix is named: {text}");
    let status = w.status("fixture-arch");
    assert_eq!(status["state"], "failed", "{status}");
    assert!(status["error"].as_str().is_some_and(|e| e.contains("not writable")), "{status}");
    assert_eq!(asked(), before, "the upstream was asked nothing:\n{}", std::fs::read_to_string(&log).unwrap());
    assert!(std::fs::read_dir(&dest).unwrap().next().is_none(), "nothing was written into the tree");
}

#[test]
fn bytes_of_a_large_upstream_file_are_never_served_half_written() {
    // rsync's --delay-updates keeps a file out of place until the pass ends: a reader of the
    // served tree sees the old bytes or the new ones, never a mix. (The fixture is checked by
    // content, as a client would.)
    let w = World::with(|p| p.push_str("bwlimit_mbit = 16\n"));
    let up = w.upstream("fixture-rpm");
    write(&up.join("Packages/big.rpm"), &bytes(2 << 20, 1));
    assert!(w.run("fixture-rpm").0);
    let old = std::fs::read(w.local("fixture-rpm").join("Packages/big.rpm")).unwrap();
    let new = bytes(2 << 20, 2);
    write(&up.join("Packages/big.rpm"), &new);
    let mut run =
        w.sync_cmd().args(["run", "fixture-rpm"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut looks = 0;
    while run.try_wait().unwrap().is_none() {
        let seen = std::fs::read(w.local("fixture-rpm").join("Packages/big.rpm")).unwrap();
        assert!(seen == old || seen == new, "a half-written file was in place");
        looks += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(looks > 10, "the reader looked only {looks} times");
    assert_eq!(std::fs::read(w.local("fixture-rpm").join("Packages/big.rpm")).unwrap(), new);
}

#[test]
fn the_schedule_keeps_its_footing_when_the_clock_steps_a_day_forward_and_back() {
    const DAY: i64 = 86_400;
    let w = World::new();
    fill_upstream(&w);
    for p in PROJECTS {
        assert!(w.run(p).0);
    }
    let mut clock = testkit::clock::SteppedClock::new(w.dir.path());
    let daemon = w.daemon_with(&["--interval-hours", "1", "--retry-after", "2"], &clock.env());
    // Synced just now: the next runs are an hour out (less up to a tenth of it).
    for p in PROJECTS {
        let st = w.wait_status(p, Duration::from_secs(30), "the plan recorded", |s| s["next_attempt"].is_i64());
        let ahead = st["next_attempt"].as_i64().unwrap() - clock.now();
        assert!((3000..=3600).contains(&ahead), "{p}: next run in {ahead} s: {st}");
    }

    // A day forward: every project is overdue and runs once, then plans an hour from the new now.
    clock.step(DAY);
    for p in PROJECTS {
        let st = w.wait_status(p, Duration::from_secs(60), "a run after the jump", |s| {
            s["state"] == "success" && s["last_success"].as_i64().is_some_and(|t| t > clock.now() - 600)
        });
        assert_eq!(w.runs_logged(p), 2, "{p} ran once, not again and again");
        let planned = w.wait_status(p, Duration::from_secs(30), "the new plan", |s| {
            s["next_attempt"].as_i64() > st["last_success"].as_i64()
        });
        assert!(planned["next_attempt"].as_i64().unwrap() - clock.now() <= 3600, "{planned}");
    }

    // Two days back: the last successes now lie in the future, and still the next runs are at
    // most an hour away, not a day and an hour.
    clock.step(-2 * DAY);
    for p in PROJECTS {
        let st = w.wait_status(p, Duration::from_secs(30), "a plan within an hour of the new now", |s| {
            s["next_attempt"].as_i64().is_some_and(|t| t - clock.now() <= 3600 + 60)
        });
        assert!(st["last_success"].as_i64().unwrap() > clock.now(), "the success is in the clock's future: {st}");
        assert_eq!(w.runs_logged(p), 2, "{p}: no run for a success that looks recent");
    }
    assert!(!daemon.text().contains("panicked"), "{}", daemon.text());
}
