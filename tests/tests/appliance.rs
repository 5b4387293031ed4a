//! The demo appliance end to end, on the image this binary builds once: its partition table
//! (ESP and two equal root slots, `sgdisk -v` clean); booted under QEMU with an rsync daemon, a mosquitto broker,
//! an ACME CA (Pebble) and a watchtower (rsyslog over TLS) on the host, reachable from the guest
//! only through guestfwd rules (user networking with restrict=on). From outside: the first sync,
//! downloads over HTTP, HTTPS and rsync, an MQTT push that publishes a new version without ever
//! serving an index naming a missing file, request records at the watchtower, SSH with the
//! profile's key only, the listening ports and firewall, and a reboot that keeps data, state and
//! the certificate. Each boot is clean (systemd-boot, no failed unit, no restart loop, no
//! ordering cycle, health check passed, the shipped version blessed); the first makes the state
//! partition and grows the data partition to the disk's end, and the second leaves the table as
//! it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{field, http_when_ready, partitions, sgdisk_verify, Guest};
use testkit::fixtures::{bytes, publish_debian, write_file};
use testkit::peers::{mosquitto, publish, rsync_daemon, Pebble, Rsyslog, TestCa};
use testkit::{free_port, http};
use vm::Vm;

const PROJECTS: [&str; 3] = ["fixture-debian", "fixture-rpm", "fixture-arch"];

const DISK: u64 = 16 << 30;
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// A boot's report line, checked as clean: running, no failed unit, no restart loop, no
/// ordering cycle, the shipped version blessed with nothing in the other slot, health passed.
fn assert_clean_boot(vm: &mut Vm) -> String {
    let line = vm.wait_for_line("MICROMIRROR-BOOT", BOOT_LIMIT).unwrap();
    println!("{line}");
    let tail = || vm.console_tail(60);
    assert_eq!(field(&line, "state"), Some("running"), "{line}\n{}", tail());
    assert_eq!(field(&line, "failed"), Some("0"), "{line}\n{}", tail());
    assert_eq!(field(&line, "restarts"), Some("0"), "{line}\n{}", tail());
    assert_eq!(field(&line, "cycles"), Some("0"), "an ordering cycle dropped a unit: {line}");
    assert_eq!(field(&line, "blessed"), Some("yes"), "the shipped version boots blessed: {line}");
    assert_eq!(field(&line, "other"), Some("empty"), "{line}");
    assert!(field(&line, "data").unwrap_or("").starts_with("/dev/vda5:"), "data not at /srv/mirror: {line}");
    assert!(vm.console().contains("MICROMIRROR-HEALTH ok"), "{}", tail());
    line
}

fn upstream(dir: &Path) -> PathBuf {
    let up = dir.join("upstream");
    publish_debian(&up.join("fixture-debian"), 1, 200_000);
    write_file(&up.join("fixture-rpm/repodata/repomd.xml"), b"<?xml version=\"1.0\"?>\n<repomd>v1</repomd>\n");
    write_file(&up.join("fixture-rpm/Packages/a/app-1.0.noarch.rpm"), &bytes(1 << 20, 42));
    // Bigger than every buffer between the guest's server and a slow client: killing the server
    // cuts its download.
    write_file(&up.join("fixture-rpm/Packages/b/big-1.0.iso"), &bytes(32 << 20, 43));
    write_file(&up.join("fixture-arch/lastsync"), b"1700000000\n");
    write_file(&up.join("fixture-arch/lastupdate"), b"1700000000\n");
    write_file(&up.join("fixture-arch/core/os/x86_64/core.db"), &bytes(5000, 7));
    up
}

fn get(vm: &Vm, path: &str) -> (u16, Vec<u8>) {
    match http(vm.port(80), "GET", path, &[]) {
        Ok((s, _, b)) => (s, b),
        Err(_) => (0, Vec::new()),
    }
}

#[test]
fn demo_appliance_syncs_serves_takes_pushes_and_keeps_state_across_reboot() {
    let started = e2e::steps_begin("appliance");
    let step = |what: &str| e2e::step("appliance", started, what);
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    step("image built");
    let report = sgdisk_verify(&image).unwrap();
    assert!(report.contains("No problems found"), "sgdisk -v on the image:\n{report}");
    let table = partitions(&image).unwrap();
    let labels: Vec<&str> = table.iter().map(|(l, _, _)| l.as_str()).collect();
    assert_eq!(labels.len(), 3, "the image carries the ESP and two root slots: {table:?}");
    assert!(labels[1].starts_with("micromirror_") && labels[2] == "_empty", "{table:?}");
    assert_eq!(table[1].2, table[2].2, "both root slots are the same size");

    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("appliance-").tempdir_in(e2e::target()).unwrap();
    let up = upstream(work.path());
    let modules: Vec<(&str, PathBuf)> = PROJECTS.iter().map(|p| (*p, up.join(p))).collect();
    let (_rsyncd, rsync_port) = rsync_daemon(work.path(), &modules);
    let (_broker, mqtt_port) = mosquitto(work.path());
    // Pebble validates HTTP-01 on the guest's port 80 as forwarded on the host; its API and the
    // watchtower present certificates from the CA the demo profile trusts.
    let port_base = vm::free_port_base();
    let demo_ca = TestCa::demo(&work.path().join("ca"));
    let guest_side = ["IP:192.0.2.2", "IP:127.0.0.1"];
    let pebble = Pebble::start(work.path(), &demo_ca, &guest_side, port_base + 80, 3600);
    let watchtower_port = free_port();
    let watchtower = Rsyslog::start(work.path(), &demo_ca, &guest_side, watchtower_port);
    // The demo profile's peers live at 192.0.2.2 inside QEMU's user network.
    let fwd = vec![
        format!("tcp:192.0.2.2:873-cmd:socat - TCP:127.0.0.1:{rsync_port}"),
        format!("tcp:192.0.2.2:1883-cmd:socat - TCP:127.0.0.1:{mqtt_port}"),
        format!("tcp:192.0.2.2:14000-cmd:socat - TCP:127.0.0.1:{}", pebble.port),
        format!("tcp:192.0.2.2:6514-cmd:socat - TCP:127.0.0.1:{watchtower_port}"),
    ];
    let disk = work.path().join("disk.img");
    vm::disk_copy(&image, &disk, DISK).unwrap();
    let key = e2e::admin_key(work.path());

    // First boot: repart makes the state and data partitions, everything starts, HTTP answers.
    let mut vm = e2e::boot(&disk, &e2e::console_log("appliance-boot-1.log"), &fwd, port_base, false);
    let line = assert_clean_boot(&mut vm);
    step(&format!("first boot: {line}"));
    let (status, head, _) = http_when_ready(vm.port(80), "/", Duration::from_secs(60)).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Server: mirror-server"), "{head}");

    // 5. Only the expected ports listen, behind a default-drop firewall.
    let ports = vm.wait_for_line("MICROMIRROR-PORTS", Duration::from_secs(30)).unwrap();
    assert_eq!(field(&ports, "tcp"), Some("22,80,443,873,9100"), "{ports}");
    let tuning = vm.wait_for_line("MICROMIRROR-TUNING", Duration::from_secs(30)).unwrap();
    assert_eq!(field(&tuning, "congestion"), Some("bbr"), "{tuning}");
    assert_eq!(field(&tuning, "qdisc"), Some("fq_codel"), "{tuning}");
    assert_eq!(field(&tuning, "wmem_max"), Some("134217728"), "{tuning}");
    assert_eq!(field(&tuning, "ntp"), Some("yes"), "time sync is not enabled: {tuning}");
    // The ruleset is printed before the security line: wait for that line, then read it all.
    let security = vm.wait_for_line("MICROMIRROR-SECURITY", Duration::from_secs(30)).unwrap();
    let console = vm.console();
    let ruleset: Vec<&str> = console.lines().filter_map(|l| l.split("MICROMIRROR-NFT ").nth(1)).collect();
    let joined = ruleset.join("\n");
    assert!(joined.contains("type filter hook input priority filter; policy drop;"), "{joined}");
    assert!(joined.contains("tcp dport { 22, 80, 443, 873 } accept"), "{joined}");
    assert!(joined.contains("ip dscp set cs1"), "{joined}");
    println!("{security}");
    for unit in ["mirror-server.service", "mirror-sync.service"] {
        let score: f64 = field(&security, unit).and_then(|s| s.parse().ok()).unwrap_or(99.0);
        assert!(score <= 3.0, "systemd-analyze security: {unit} exposure {score} > 3.0 ({security})");
    }

    // 1. The first sync brings every fixture project over from the host's rsync daemon.
    vm.wait_for(Duration::from_secs(240), "the first sync", || {
        PROJECTS.iter().all(|p| get(&vm, &format!("/{p}/")).0 == 200)
            && get(&vm, "/fixture-arch/lastsync").1 == b"1700000000\n"
    })
    .unwrap_or_else(|e| panic!("{e:#}\nthe guest's sync service:\n{}", e2e::sync_report(&vm, &key)));

    step("first sync done");

    // 2. Downloads: byte-identical over HTTP, a range, HEAD 200, and over the public rsync.
    let rpm = "/fixture-rpm/Packages/a/app-1.0.noarch.rpm";
    let original = std::fs::read(up.join("fixture-rpm/Packages/a/app-1.0.noarch.rpm")).unwrap();
    vm.wait_for(Duration::from_secs(120), "the rpm fixture", || get(&vm, rpm).1 == original).unwrap();
    let (status, head, body) = http(vm.port(80), "GET", rpm, &[("Range", "bytes=1000-1999")]).unwrap();
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, &original[1000..2000]);
    let (status, head, _) = http(vm.port(80), "HEAD", rpm, &[]).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains(&format!("Content-Length: {}", original.len())), "{head}");
    let fetched = work.path().join("via-rsync.rpm");
    let out = Command::new("rsync")
        .arg(format!("rsync://127.0.0.1:{}/fixture-rpm/Packages/a/app-1.0.noarch.rpm", vm.port(873)))
        .arg(&fetched)
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync from the guest: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&fetched).unwrap(), original);

    // 8. mirror-server killed with SIGKILL in the middle of downloads: systemd has it serving
    // again within seconds, and a cut download resumes with a range, byte for byte.
    let iso = "/fixture-rpm/Packages/b/big-1.0.iso";
    let big = std::fs::read(up.join("fixture-rpm/Packages/b/big-1.0.iso")).unwrap();
    vm.wait_for(Duration::from_secs(120), "the big fixture", || {
        http(vm.port(80), "HEAD", iso, &[]).is_ok_and(|r| r.0 == 200)
    })
    .unwrap();
    let url = format!("http://127.0.0.1:{}{iso}", vm.port(80));
    let partials: Vec<PathBuf> = (0..3).map(|i| work.path().join(format!("partial-{i}.rpm"))).collect();
    let mut slow: Vec<_> = partials
        .iter()
        .map(|p| {
            Command::new("curl")
                .args(["-sS", "--limit-rate", "512K", "-o"])
                .arg(p)
                .arg(&url)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    vm.wait_for(Duration::from_secs(60), "the slow downloads under way", || {
        partials.iter().all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20))
    })
    .unwrap();
    let out = vm.ssh(&key, &[], "sudo systemctl kill --signal=KILL mirror-server.service");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = Instant::now();
    vm.wait_for(Duration::from_secs(60), "mirror-server serving again after SIGKILL", || get(&vm, rpm).0 == 200)
        .unwrap();
    let back_after = killed.elapsed();
    println!("mirror-server answered again {back_after:.1?} after SIGKILL");
    assert!(back_after < Duration::from_secs(30), "systemd brought it back in {back_after:?}");
    // The clients read what was in flight, then find their transfers cut.
    for c in &mut slow {
        let _ = c.wait();
    }
    // Sockets on both sides of QEMU's user network buffer megabytes, so a download can still
    // arrive whole after the kill; only the cut ones resume (a range from a whole file's end is
    // rightly a 416). The whole ones must be right too.
    let (cut, whole): (Vec<&PathBuf>, Vec<&PathBuf>) =
        partials.iter().partition(|p| std::fs::metadata(p).is_ok_and(|m| (m.len() as usize) < big.len()));
    assert!(!cut.is_empty(), "the kill cut none of the downloads short");
    println!("the kill cut {} of {} downloads short", cut.len(), partials.len());
    for p in whole {
        assert!(std::fs::read(p).unwrap() == big, "{} arrived whole, byte for byte", p.display());
    }
    for p in cut {
        let out = Command::new("curl").args(["-sS", "--fail", "-C", "-", "-o"]).arg(p).arg(&url).output().unwrap();
        assert!(out.status.success(), "resuming {}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(p).unwrap() == big, "{} resumed byte for byte", p.display());
    }
    let restarts = vm.ssh(&key, &[], "systemctl show -P NRestarts mirror-server.service");
    assert_eq!(String::from_utf8_lossy(&restarts.stdout).trim(), "1", "systemd restarted it once");

    // 7. HTTPS with the certificate the box obtained over ACME, and a record of every request
    // at the watchtower (TLS checked against the profile's CA).
    let acme_root = pebble.issuing_root();
    vm.wait_for(Duration::from_secs(240), "HTTPS with an ACME certificate", || {
        vm.https_get(&acme_root, "demo.mm.example.net", rpm).is_some_and(|b| b == original)
    })
    .unwrap();
    let got = watchtower.received_with("tls=\"TLSv1.3\"", Duration::from_secs(60));
    let record = got
        .lines()
        .find(|l| l.contains("project=\"fixture-rpm\"") && l.contains("tls=\"TLSv1.3\""))
        .unwrap_or_else(|| panic!("no HTTPS record at the watchtower:\n{got}"));
    assert!(record.starts_with("demo.mm.example.net mirror-server request [request@32473 "), "{record}");
    let sent: usize = field(record, "bytes").and_then(|b| b.trim_matches('"').parse().ok()).unwrap_or(0);
    assert!(sent > original.len(), "the whole file and its head were sent: {record}");

    step("HTTPS with an ACME certificate, records at the watchtower");

    // 3. A new version upstream and an MQTT push: served soon, never half-published.
    vm.wait_for(Duration::from_secs(60), "the debian fixture", || {
        get(&vm, "/fixture-debian/dists/stable/Release").0 == 200
    })
    .unwrap();
    publish_debian(&up.join("fixture-debian"), 2, 2 << 20);
    publish(mqtt_port, "rsync/upstream.example.net/fixture-debian");
    let started = Instant::now();
    let mut checks = 0;
    loop {
        let (s, index) = get(&vm, "/fixture-debian/dists/stable/main/binary-amd64/Packages");
        if s == 200 {
            let text = String::from_utf8_lossy(&index).into_owned();
            for file in text.lines().filter_map(|l| l.strip_prefix("Filename: ")) {
                let (status, _, _) = http(vm.port(80), "HEAD", &format!("/fixture-debian/{file}"), &[]).unwrap_or((
                    0,
                    String::new(),
                    vec![],
                ));
                assert_eq!(status, 200, "the index names {file}, which the mirror does not serve");
            }
            checks += 1;
            if text.contains("Version: 2") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the push did not bring version 2 within 180 s; console:\n{}",
            e2e::tail(&vm.console(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("version 2 served {:.0?} after the push ({checks} consistent index checks)", started.elapsed());
    assert_eq!(
        get(&vm, "/fixture-debian/pool/main/h/hello/hello_2_all.deb").1,
        std::fs::read(up.join("fixture-debian/pool/main/h/hello/hello_2_all.deb")).unwrap()
    );
    let trace = get(&vm, "/fixture-debian/trace/demo.mm.example.net");
    assert_eq!(trace.0, 200, "the trace file of a complete run");
    let got = watchtower.received_with("release=\"stable\"", Duration::from_secs(30));
    assert!(got.contains("project=\"fixture-debian\" release=\"stable\""), "the catalog's release rule: {got}");

    step("version 2 served after the push");

    // 4. SSH: the profile's key logs in as the admin; passwords are refused.
    let out = vm.ssh(&key, &[], "id -un && sudo -n true && echo sudo-ok");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("mirror") && text.contains("sudo-ok"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vm.ssh(
        &key,
        &["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"],
        "true",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 5. The root is read-only and verified: even root cannot write to it; the root is the
    // dm-verity device of this version's slot; /var takes writes (in memory).
    let out = vm.ssh(
        &key,
        &[],
        "sudo touch /probe 2>&1; echo rc=$?; findmnt -no SOURCE,FSTYPE,OPTIONS /; sudo veritysetup status root | grep -E '^ *status:'; sudo touch /var/tmp/probe && echo var-ok",
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("Read-only file system") && !said.contains("rc=0"), "a write to / fails: {said}");
    let root_mount =
        said.lines().find(|l| l.starts_with("/dev/mapper/root")).map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert!(
        root_mount.as_ref().is_some_and(|f| f.len() >= 3 && f[1] == "erofs" && f[2].split(',').any(|o| o == "ro")),
        "the root is the verified slot, read-only: {said}"
    );
    assert!(said.contains("status:") && said.contains("verified"), "dm-verity checks it: {said}");
    assert!(said.contains("var-ok"), "/var takes writes: {said}");
    let out = vm.ssh(&key, &[], "mirror-sync status");
    let status_table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{status_table}");
    assert!(
        PROJECTS.iter().all(|p| status_table.lines().any(|l| l.starts_with(p) && l.contains(" ok "))),
        "{status_table}"
    );

    // 6. A reboot keeps the data and the sync state.
    let _ = vm.ssh(&key, &[], "sudo systemctl poweroff");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && http(vm.port(80), "GET", "/", &[]).is_ok() {
        std::thread::sleep(Duration::from_millis(500));
    }
    vm.stop();
    let after_first = partitions(&disk).unwrap();
    assert_eq!(after_first.len(), 5, "{after_first:?}");
    assert_eq!((after_first[3].0.as_str(), after_first[3].2 * 512), ("mm-state", 4 << 30), "{after_first:?}");
    let (label, start, size) = &after_first[4];
    assert_eq!(label, "mirror-data");
    let end_bytes = (start + size) * 512;
    assert!(end_bytes > DISK - (2 << 20), "the data partition should reach the end of the disk: {end_bytes} of {DISK}");
    let report = sgdisk_verify(&disk).unwrap();
    assert!(report.contains("No problems found"), "sgdisk -v after the first boot:\n{report}");

    // Second boot of the same disk: clean, repart leaves the table alone.
    let mut vm = e2e::boot(&disk, &e2e::console_log("appliance-boot-2.log"), &fwd, vm::free_port_base(), false);
    let line = assert_clean_boot(&mut vm);
    step(&format!("second boot: {line}"));
    vm.wait_for(Duration::from_secs(60), "HTTP after the reboot", || {
        get(&vm, "/fixture-arch/lastsync").1 == b"1700000000\n"
    })
    .unwrap();
    // The stored certificate serves at once (Pebble could not validate a new order: it still
    // knows the first boot's port).
    vm.wait_for(Duration::from_secs(30), "HTTPS after the reboot", || {
        vm.https_get(&acme_root, "demo.mm.example.net", "/fixture-arch/lastsync").is_some_and(|b| b == b"1700000000\n")
    })
    .unwrap();
    let out = vm.ssh(&key, &[], "mirror-sync status");
    let after = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        PROJECTS.iter().all(|p| after.lines().any(|l| l.starts_with(p) && !l.contains("never"))),
        "the sync state was lost:\n{after}"
    );
    vm.stop();
    assert_eq!(partitions(&disk).unwrap(), after_first, "the second boot changed the partition table");
    step("appliance test done");
}

/// The physical offset, inside the root file system, of the first compressed extent of `path`,
/// as dump.erofs reports it.
fn first_extent(fs: &Path, path: &str) -> u64 {
    let out = Command::new("dump.erofs").args(["-e", &format!("--path={path}")]).arg(fs).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "   0:        0..  113279 |  113279 :   23412736..  23478272 |   65536"
    text.lines()
        .find(|l| l.trim_start().starts_with("0:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|phys| phys.split("..").next())
        .and_then(|start| start.trim().parse().ok())
        .unwrap_or_else(|| panic!("no extent of {path} in dump.erofs's report:\n{text}"))
}

#[test]
fn a_flipped_bit_in_the_root_slot_is_refused_at_read_time_and_the_box_says_why() {
    let started = e2e::steps_begin("appliance-corrupt");
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("corrupt-").tempdir_in(e2e::target()).unwrap();
    let disk = work.path().join("disk.img");
    vm::disk_copy(&image, &disk, DISK).unwrap();
    // Slot A's file system, read out of the disk for dump.erofs, which finds where
    // mirror-server's first bytes lie; one bit of them is flipped on the disk.
    let table = partitions(&disk).unwrap();
    let (_, start, sectors) = table[1].clone();
    let slot = work.path().join("slot.img");
    let mut from = std::fs::File::open(&disk).unwrap();
    std::io::Seek::seek(&mut from, std::io::SeekFrom::Start(start * 512)).unwrap();
    let mut to = std::fs::File::create(&slot).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut from, sectors * 512), &mut to).unwrap();
    let at = start * 512 + first_extent(&slot, "/usr/bin/mirror-server") + 100;
    let mut bytes = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
    let mut byte = [0u8; 1];
    std::io::Seek::seek(&mut bytes, std::io::SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut bytes, &mut byte).unwrap();
    byte[0] ^= 0x10;
    std::io::Seek::seek(&mut bytes, std::io::SeekFrom::Start(at)).unwrap();
    std::io::Write::write_all(&mut bytes, &byte).unwrap();
    drop(bytes);
    e2e::step("appliance-corrupt", started, &format!("one bit flipped at byte {at} (mirror-server's first extent)"));

    let port_base = vm::free_port_base();
    let mut vm = e2e::boot(&disk, &e2e::console_log("appliance-corrupt.log"), &[], port_base, false);
    let health = vm.wait_for_line("MICROMIRROR-HEALTH", BOOT_LIMIT).unwrap();
    e2e::step("appliance-corrupt", started, &health);
    assert!(health.contains("MICROMIRROR-HEALTH failed"), "{health}");
    assert!(health.contains("root: dm-verity refused corrupted blocks"), "the verdict says why: {health}");
    let console = vm.console();
    assert!(
        console.contains("device-mapper: verity") && console.contains("is corrupted"),
        "the kernel names the block:\n{}",
        vm.console_tail(80)
    );
    assert_ne!(http(vm.port(80), "GET", "/", &[]).map(|r| r.0).unwrap_or(0), 200, "nothing serves from it");
}
