//! The demo box updates itself under QEMU (OVMF, TCG, a 64 GiB sparse disk), with its update
//! server (mirror-server on the host, serving the tree `cargo xtask publish` made), its MQTT
//! broker, rsync upstream and ACME CA reached through guestfwd, and checked from outside:
//! 1. v1 boots; its SSH host key, machine id, a marker under /srv/mirror, its certificate's
//!    serial and its sync state are recorded;
//! 2. v2 (another sponsor name) is released (`cargo xtask release`, the box and a canned canary
//!    in the canary ring, a third site in the rest) and pushed: the box installs it, reboots
//!    into it, blesses it, and everything recorded is unchanged; the third site gets v2 only
//!    once the box blessed it;
//! 3. a v3 with a bad signature, then one whose root does not match SHA256SUMS, are refused
//!    with nothing written; the real v3 is found by the timer, its download is cut half-way and
//!    resumes; v3 (whose server never starts) fails its health check on the one boot v2 gives
//!    it, v2 comes back by itself and stays, with v3 named as failed; v3's release stops,
//!    naming the box, and the third site stays on v2.
//!
//! The three versions are built through the build library into target/e2e/update/. Each step
//! prints the elapsed time (also kept in target/e2e-logs/steps/update.log, which `cargo xtask
//! test` shows at its end), so a slow run shows where its minutes went.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::release::{offered, CannedCanary, ReleaseRun};
use e2e::{field, own_folder, scratch_profiles, Guest};
use testkit::fixtures::{bytes, publish_debian, write_file};
use testkit::peers::{mosquitto, publish, rsync_daemon, Pebble, TestCa};
use testkit::server::MirrorServer;
use testkit::{free_port, http};
use vm::Vm;

const HOST: &str = "demo.mm.example.net";
const TOPIC: &str = "micromirror/updates/demo";

/// The version a build at `epoch` gets.
fn version_at(epoch: i64) -> String {
    image::version::Version::from_epoch(epoch).unwrap().to_string()
}

/// A profiles folder whose demo.toml is the workspace's, edited by `change`, in the canary
/// ring, beside two more sites for `cargo xtask release`: `canned`, a canary whose metrics are
/// canned, and `rest`, in the main ring ([update] is the profile's last section).
fn profiles_with(dir: &Path, name: &str, change: impl Fn(String) -> String) -> PathBuf {
    let demo = change(testkit::images::demo_profile());
    let renamed = |site: &str| demo.replace("name = \"demo\"", &format!("name = \"{site}\""));
    scratch_profiles(
        &dir.join(name),
        &[
            ("demo", format!("{demo}ring = \"canary\"\n")),
            ("canned", format!("{}ring = \"canary\"\n", renamed("canned"))),
            ("rest", renamed("rest")),
        ],
    )
}

/// An images folder for `cargo xtask release --no-build` holding `build` as the demo's, and
/// its update as `canned`'s and `rest`'s (the same files: what a box is offered is all the
/// release handles).
fn images_of(dir: &Path, build: &build::Request) -> PathBuf {
    let images = dir.join(format!("images-{}", build.epoch));
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&build.out, images.join("demo")).unwrap();
    for site in ["canned", "rest"] {
        std::fs::create_dir_all(images.join(site)).unwrap();
        let ok = Command::new("cp").arg("-rl").arg(build.out.join("update")).arg(images.join(site)).status();
        assert!(ok.unwrap().success(), "linking the update for {site}");
    }
    images
}

/// `cargo xtask release --no-build` of `build` into `served`, the demo's metrics at its
/// forwarded 9100, `canned`'s at the canned canary.
fn release(dir: &Path, build: &build::Request, served: &Path, vm: &Vm, canned: &CannedCanary) -> ReleaseRun {
    let images = images_of(dir, build);
    let args: Vec<String> = [
        "--no-build",
        "--to",
        &served.display().to_string(),
        "--dir",
        &build.profiles.display().to_string(),
        "--include-test",
        "--images",
        &images.display().to_string(),
        "--address",
        &format!("demo=127.0.0.1:{}", vm.port(9100)),
        "--address",
        &format!("canned={}", canned.metrics),
        "--poll-seconds",
        "3",
        "--canary-wait-minutes",
        "40",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ReleaseRun::start(&args, &dir.join(format!("release-{}.log", build.epoch)))
}

/// The demo built from `profiles` at `epoch` into target/e2e/update/NAME.
fn build_at(name: &str, profiles: &Path, epoch: i64) -> build::Request {
    let mut request = testkit::images::request(&own_folder("update").join(name), profiles, "demo");
    request.epoch = epoch;
    testkit::images::build(&request);
    request
}

/// Publishes a build's update into `served` (DIR/demo/); says what the tree offers.
fn publish_to(built: &build::Request, served: &Path) -> String {
    let site = build::load::load(&built.profiles, "demo").unwrap();
    build::publish::publish(&build::publish::Publication {
        site: &site,
        built: &built.out.join("update"),
        to: served,
        keep: 2,
        epoch: built.epoch,
        signing_home: built.signing_home.as_deref(),
    })
    .unwrap_or_else(|e| panic!("publishing: {e:#}"))
}

/// What must survive every update.
#[derive(Debug, PartialEq)]
struct Identity {
    host_key: String,
    machine_id: String,
    marker: String,
    certificate_serial: String,
    last_syncs: Vec<(String, Option<i64>)>,
}

fn identity(vm: &Vm, key: &Path) -> Identity {
    let scan =
        Command::new("ssh-keyscan").args(["-t", "ed25519", "-p", &vm.port(22).to_string(), "127.0.0.1"]).output();
    let scan = String::from_utf8_lossy(&scan.unwrap().stdout).into_owned();
    let host_key = scan.lines().find_map(|l| l.split_whitespace().nth(2)).unwrap_or_default().to_string();
    let run = |c: &str| String::from_utf8_lossy(&vm.ssh(key, &[], c).stdout).trim().to_string();
    let serial = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} -servername {HOST} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            vm.port(443)
        ))
        .output()
        .unwrap();
    let syncs: serde_json::Value = serde_json::from_str(&run("mirror-sync status --json")).unwrap_or_default();
    let last_syncs = syncs
        .as_array()
        .map(|rows| {
            rows.iter().map(|r| (r["project"].as_str().unwrap_or("").to_string(), r["last_success"].as_i64())).collect()
        })
        .unwrap_or_default();
    Identity {
        host_key,
        machine_id: run("cat /etc/machine-id"),
        marker: run("cat /srv/mirror/update-marker"),
        certificate_serial: String::from_utf8_lossy(&serial.stdout).trim().to_string(),
        last_syncs,
    }
}

fn update_status(vm: &Vm, key: &Path) -> serde_json::Value {
    let out = vm.ssh(key, &[], "sudo mirror-update status --json");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn step(started: Instant, what: &str) {
    e2e::step("update", started, what);
}

fn lines_with<'a>(console: &'a str, marker: &str) -> Vec<&'a str> {
    console.lines().filter_map(|l| l.find(marker).map(|i| l[i..].trim_end())).collect()
}

/// Waits until the console has `n` lines with `marker`; returns the last.
fn wait_for_nth(vm: &Vm, marker: &str, n: usize, limit: Duration) -> String {
    vm.wait_for(limit, &format!("console line {n} with {marker}"), || lines_with(&vm.console(), marker).len() >= n)
        .unwrap();
    lines_with(&vm.console(), marker)[n - 1].to_string()
}

/// Body bytes the server sent of `file`, in the log's lines after byte `from`.
fn bytes_sent(log: &Path, from: u64, file: &str) -> u64 {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    text.lines()
        .filter(|l| l.contains(file))
        .filter_map(|l| l.split('"').nth(2)?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn demo_updates_itself_rolls_back_a_broken_version_and_keeps_its_identity() {
    let started = e2e::steps_begin("update");
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("update-").tempdir_in(e2e::target()).unwrap();
    let w = work.path();
    let e0 = testkit::images::epoch();
    let (v1, v2, v3) = (version_at(e0), version_at(e0 + 60), version_at(e0 + 120));

    // v1 is the demo image (the run's shared build); the box is a 64 GiB disk holding it.
    let disk = w.join("disk.img");
    vm::disk_copy(&e2e::demo_image(env!("CARGO_CRATE_NAME")), &disk, 64 << 30).unwrap();

    let up = w.join("upstream");
    publish_debian(&up.join("fixture-debian"), 1, 100_000);
    write_file(&up.join("fixture-rpm/repodata/repomd.xml"), b"<repomd>v1</repomd>\n");
    write_file(&up.join("fixture-rpm/Packages/a/app-1.0.noarch.rpm"), &bytes(1 << 20, 42));
    write_file(&up.join("fixture-arch/lastsync"), b"1700000000\n");
    let modules: Vec<(&str, PathBuf)> =
        ["fixture-debian", "fixture-rpm", "fixture-arch"].iter().map(|p| (*p, up.join(p))).collect();
    let (_rsyncd, rsync_port) = rsync_daemon(w, &modules);
    let (_broker, mqtt_port) = mosquitto(w);
    let port_base = vm::free_port_base();
    let ca = TestCa::demo(&w.join("ca"));
    let pebble = Pebble::start(w, &ca, &["IP:192.0.2.2", "IP:127.0.0.1"], port_base + 80, 3600);
    let served = w.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let update_port = free_port();
    let mut updates = Some(MirrorServer::start_on(&served, update_port, &[]));
    let fwd = vec![
        format!("tcp:192.0.2.2:873-cmd:socat - TCP:127.0.0.1:{rsync_port}"),
        format!("tcp:192.0.2.2:1883-cmd:socat - TCP:127.0.0.1:{mqtt_port}"),
        format!("tcp:192.0.2.2:14000-cmd:socat - TCP:127.0.0.1:{}", pebble.port),
        format!("tcp:192.0.2.2:8080-cmd:socat - TCP:127.0.0.1:{update_port}"),
    ];
    let key = e2e::admin_key(w);

    // 1. v1 boots (while v2 builds beside it); its identity is recorded once it has synced and
    // holds a certificate.
    let vm = e2e::boot(&disk, &e2e::console_log("update.log"), &fwd, port_base, true);
    // v2 downloads its updates at 40 Mbit/s (the demo's [update] ends with its limit): v3's root
    // then takes half a minute to arrive, long enough to cut it at a third however slowly the
    // test's status polls answer under TCG. v2 gives a new version one boot, not the demo's
    // two: v3's second failing boot would prove nothing more and cost four minutes of TCG.
    let profiles_v2 = profiles_with(w, "profiles-v2", |t| {
        let t = t.replace("Example Networks", "Example Networks v2").replace("boot_tries = 2", "boot_tries = 1");
        assert!(t.contains("boot_tries = 1"), "the demo's [update] is expected to say boot_tries = 2");
        match t.rsplit_once("bwlimit_mbit = 200") {
            Some((head, tail)) => format!("{head}bwlimit_mbit = 40{tail}"),
            None => t,
        }
    });
    let v2_build = build_at("v2", &profiles_v2, e0 + 60);
    // v3 breaks its server; built now, while v1 boots, rather than while the box waits.
    let profiles_v3 = profiles_with(w, "profiles-v3", |t| {
        // [update] is the profile's last section.
        format!("{}test_break_server = true\n", t.replace("Example Networks", "Example Networks v3"))
    });
    let v3_build = build_at("v3", &profiles_v3, e0 + 120);
    step(started, "v2 and v3 built");
    let boot = wait_for_nth(&vm, "MICROMIRROR-BOOT", 1, Duration::from_secs(600));
    step(started, &boot);
    assert_eq!((field(&boot, "image"), field(&boot, "blessed")), (Some(v1.as_str()), Some("yes")), "{boot}");
    let root = pebble.issuing_root();
    vm.wait_for(Duration::from_secs(300), "the first sync and a certificate", || {
        http(vm.port(80), "GET", "/fixture-arch/lastsync", &[]).is_ok_and(|r| r.0 == 200)
            && vm.https_get(&root, HOST, "/fixture-arch/lastsync").is_some()
    })
    .unwrap_or_else(|e| panic!("{e:#}\nthe guest's sync service:\n{}", e2e::sync_report(&vm, &key)));
    assert!(vm.ssh(&key, &[], "echo kept | sudo tee /srv/mirror/update-marker").status.success());
    let before = identity(&vm, &key);
    step(started, &format!("v1 synced and certified: {before:?}"));
    assert!(!before.host_key.is_empty() && before.machine_id.len() == 32 && !before.certificate_serial.is_empty());
    assert!(before.last_syncs.iter().all(|(_, t)| t.is_some()), "{before:?}");

    // 2. v2 is released (the demo and `canned` are its canaries, `rest` the rest) and pushed:
    // installed, booted, blessed, and nothing recorded changed; `rest` gets v2 only then.
    let canned = CannedCanary::start(w, &v1);
    let mut v2_release = release(w, &v2_build, &served, &vm, &canned);
    v2_release.wait_until(Duration::from_secs(300), "v2 published to the canaries", |_| {
        offered(&served, "demo") == Some(v2.clone()) && offered(&served, "canned") == Some(v2.clone())
    });
    assert_eq!(offered(&served, "rest"), None, "the rest waits for the canaries");
    canned.report(&v2, true, None);
    let pushed = Instant::now();
    publish(mqtt_port, TOPIC);
    let boot = wait_for_nth(&vm, "MICROMIRROR-BOOT", 2, Duration::from_secs(900));
    step(started, &format!("v2 serving {:.0?} after the push: {boot}", pushed.elapsed()));
    assert_eq!(field(&boot, "image"), Some(v2.as_str()), "{boot}");
    assert_eq!(field(&boot, "other"), Some(format!("previous:{v1}").as_str()), "{boot}");
    vm.wait_for(Duration::from_secs(120), "v2 blessed", || {
        let blessed = update_status(&vm, &key)["running_blessed"] == true;
        // Read after the box's own word: `rest` may have v2 only once the box blessed it.
        assert!(blessed || offered(&served, "rest").is_none(), "v2 went to the rest before the canary blessed it");
        blessed
    })
    .unwrap();
    let (ok, said) = v2_release.finish(Duration::from_secs(120));
    assert!(ok && said.contains("every canary runs its latest build, blessed: publishing to the rest"), "{said}");
    assert!(said.contains("canary demo: runs the new version, blessed"), "{said}");
    assert_eq!(offered(&served, "rest"), Some(v2.clone()));
    step(started, "v2 released: the canaries blessed it, then the rest got it");
    let journal = vm.ssh(&key, &[], "sudo journalctl -b -1 -u mirror-update -o cat");
    assert!(String::from_utf8_lossy(&journal.stdout).contains("push: a new update is announced"), "found by push");
    let (_, _, listing) = http(vm.port(80), "GET", "/", &[]).unwrap();
    assert!(String::from_utf8_lossy(&listing).contains("Example Networks v2"), "the listing shows v2's sponsor");
    vm.wait_for(Duration::from_secs(60), "HTTPS on v2", || {
        vm.https_get(&root, HOST, "/fixture-arch/lastsync").is_some()
    })
    .unwrap();
    assert_eq!(identity(&vm, &key), before, "v2 kept the box's identity and state");

    step(started, "v2 blessed, identity kept");

    // 3. v3 is published first with a bad signature, then with a root that does not match
    // SHA256SUMS: both refused with nothing written.
    let staged = w.join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    let cp = |from: &Path, to: &Path| {
        // -L: the served folder is a link to its current generation; the copy is its files.
        let ok = Command::new("cp").arg("-rL").arg(from).arg(to).status().unwrap().success();
        assert!(ok, "cp -rL {} {}", from.display(), to.display());
    };
    cp(&served.join("demo"), &staged);
    publish_to(&v3_build, &staged);
    let root_file = format!("micromirror_{v3}.root.zst");
    let (good_root, good_sig) = (staged.join("demo").join(&root_file), staged.join("demo/SHA256SUMS.gpg"));
    for name in [root_file.clone(), format!("micromirror_{v3}.efi"), "SHA256SUMS".into()] {
        std::fs::copy(staged.join("demo").join(&name), served.join("demo").join(&name)).unwrap();
    }
    let mut sig = std::fs::read(&good_sig).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 0x5a;
    std::fs::write(served.join("demo/SHA256SUMS.gpg"), &sig).unwrap();
    publish(mqtt_port, TOPIC);
    vm.wait_for(Duration::from_secs(180), "the bad signature refused", || {
        update_status(&vm, &key)["last_error"].as_str().is_some_and(|e| e.contains("not a valid signature"))
    })
    .unwrap();
    std::fs::copy(&good_sig, served.join("demo/SHA256SUMS.gpg")).unwrap();
    let mut bad = std::fs::read(&good_root).unwrap();
    bad[4096] ^= 1;
    std::fs::write(served.join("demo").join(&root_file), &bad).unwrap();
    publish(mqtt_port, TOPIC);
    vm.wait_for(Duration::from_secs(600), "the bad payload refused", || {
        update_status(&vm, &key)["last_error"].as_str().is_some_and(|e| e.contains("does not match SHA256SUMS"))
    })
    .unwrap();
    let st = update_status(&vm, &key);
    assert_eq!(
        (st["other_version"].as_str(), st["other_slot"].as_str()),
        (Some(v1.as_str()), Some("previous")),
        "{st}"
    );
    let esp = String::from_utf8_lossy(&vm.ssh(&key, &[], "sudo ls /efi/EFI/Linux").stdout).into_owned();
    assert!(!esp.contains(&v3), "no v3 entry was written: {esp}");
    step(started, "bad signature and bad payload refused");

    // The real v3, found by the timer; its download is cut half-way and resumes. A release of
    // v3 watches the demo (its tree offers v3 already: the release publishes nothing there but
    // still waits for it) and publishes v3 to `canned`, which takes it well.
    std::fs::copy(&good_root, served.join("demo").join(&root_file)).unwrap();
    let v3_release = release(w, &v3_build, &served, &vm, &canned);
    canned.report(&v3, true, None);
    let size = std::fs::metadata(&good_root).unwrap().len();
    vm.wait_for(Duration::from_secs(400), "a third of v3's root downloaded", || {
        let st = update_status(&vm, &key);
        let activity = st["activity"].as_str().unwrap_or("").to_string();
        activity.contains(&root_file)
            && activity
                .split_whitespace()
                .nth(2)
                .and_then(|m| m.parse::<u64>().ok())
                .is_some_and(|mib| mib << 20 > size / 3)
    })
    .unwrap();
    drop(updates.take());
    // The refused payload's error is still there: wait for the cut's own.
    vm.wait_for(Duration::from_secs(120), "the cut download noticed", || {
        update_status(&vm, &key)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&root_file) && !e.contains("does not match"))
    })
    .unwrap();
    // The new server appends to the same access log (same port): count only its lines.
    let log_path = served.parent().unwrap().join(format!("access-{update_port}.log"));
    let log_offset = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let server = MirrorServer::start_on(&served, update_port, &[]);
    step(started, "v3's download cut; the update server is back");
    let health = wait_for_nth(&vm, &format!("MICROMIRROR-HEALTH failed version={v3}"), 1, Duration::from_secs(900));
    step(started, &health);
    let resent = bytes_sent(&server.log, log_offset, &root_file);
    println!("after the cut the server sent {resent} of {size} bytes of {root_file}");
    assert!(resent > 0 && resent < size, "the download resumed instead of starting over ({resent} of {size})");

    // v2 comes back by itself, names v3 failed, and stays: a check after the return installs
    // nothing and reboots nothing.
    let failed_at = vm.console().rfind(&format!("MICROMIRROR-HEALTH failed version={v3}")).unwrap_or(0);
    let since_rollback = |vm: &Vm| vm.console()[failed_at..].to_string();
    let back = vm.wait_for(Duration::from_secs(600), "v2 back after the rollback", || {
        lines_with(&since_rollback(&vm), "MICROMIRROR-BOOT").iter().any(|l| field(l, "image") == Some(v2.as_str()))
    });
    if back.is_err() {
        // The steps reach CI's summary when a panic's console is cut off: say where it stood.
        let rollback = lines_with(&since_rollback(&vm), "MICROMIRROR-ROLLBACK").join(" | ");
        let tail: Vec<String> = vm.console_tail(12).lines().map(|l| l.trim().to_string()).collect();
        step(started, &format!("v2 not back; rollback said: {rollback}; console ends: {}", tail.join(" / ")));
    }
    back.unwrap();
    let boot = lines_with(&since_rollback(&vm), "MICROMIRROR-BOOT")[0].to_string();
    step(started, &boot);
    // The release saw its canary roll back: it stopped, naming it, and `rest` stays on v2.
    let (ok, said) = v3_release.finish(Duration::from_secs(300));
    assert!(!ok, "a release whose canary rolled back fails:\n{said}");
    assert!(
        said.contains(&format!("release stopped: canary demo rolled back: {v3} failed its health check")),
        "{said}"
    );
    assert!(said.contains("demo: nothing newer to publish"), "the demo's tree was left as it was: {said}");
    assert_eq!(offered(&served, "rest"), Some(v2.clone()), "nothing more was published");
    assert_eq!(offered(&served, "canned"), Some(v3.clone()));
    assert_eq!(field(&boot, "image"), Some(v2.as_str()), "{boot}");
    assert_eq!(field(&boot, "other"), Some(format!("failed:{v3}").as_str()), "{boot}");
    assert_eq!(field(&boot, "failed"), Some("0"), "{boot}");
    // A push asks for that check now rather than at the next timer (the timer found v3 above).
    let back = update_status(&vm, &key)["last_check"].as_i64().unwrap_or(0);
    publish(mqtt_port, TOPIC);
    vm.wait_for(Duration::from_secs(400), "a check after the rollback", || {
        update_status(&vm, &key)["last_check"].as_i64().unwrap_or(0) > back
    })
    .unwrap();
    let st = update_status(&vm, &key);
    assert_eq!(st["failed_versions"], serde_json::json!([v3]), "{st}");
    assert_eq!((st["newest_available"].as_str(), st["last_error"].as_str()), (Some(v3.as_str()), None), "{st}");
    assert!(st["activity"].is_null(), "nothing under way after the check: {st}");
    assert_eq!(lines_with(&since_rollback(&vm), "MICROMIRROR-BOOT").len(), 1, "no further reboot");
    assert_eq!(lines_with(&vm.console(), "MICROMIRROR-HEALTH failed").len(), 1, "v3 booted once, no more");
    assert_eq!(identity(&vm, &key), before, "the rollback kept the box's identity and state");
    step(started, "v2 back and staying, v3 named failed: update test done");
}
