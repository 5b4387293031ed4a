//! Adoption of a running fleet box, under QEMU, against the Debian stand-in laid out like the
//! fleet's kickstart disks (`e2e::standin`): `cargo xtask adopt` as an operator runs it, over
//! SSH to the stand-in's forwarded port.
//!
//! 1. One box, checked then adopted: the preflight on the demo's profile (which matches the
//!    stand-in) passes and maps swap to slot A, /boot to slot B and the root XFS to the data; on
//!    a profile whose address the box lacks it refuses, naming the key and the fix, with the
//!    partition table, ESP and swap unchanged; `--fill-profile` writes the live values into an
//!    imported profile's placeholders. Then the adoption: the trial boot, the commit, the same
//!    SSH host key, every file of /data/mirror served byte for byte by mirror-server, the old
//!    system's files gone, and the first sync fetching only what the upstream changed; then the
//!    box updates itself like any other: v2 lands in root slot B (the old /boot) and boots.
//! 2. A version that fails its health check: adopt says so and where the log is, and the box is
//!    back on its old system by itself, nginx serving every file as before.
//! 3. The USB installer (`cargo xtask installer`): the stand-in booted from the stick is
//!    converted in one boot (the same checks and scripts as adopt, in a chroot of the old
//!    system) and powered off; without the stick the disk boots the image, which commits itself
//!    once healthy, with the box's SSH host key and every file of /data/mirror served. (The
//!    stand-in has not booted before, so its firmware holds no entry of its own: the disk's
//!    \EFI\BOOT loader is its old system's way back.)
//! 4. The USB installer on a disk without an old system: it asks on the console, writes the
//!    image over the disk only once ERASE is typed, and the disk then boots the image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{standin, Guest};
use testkit::bin;
use testkit::fixtures::{publish_debian, snapshot};
use testkit::peers::{mosquitto, publish, rsync_daemon, rsync_log};
use testkit::server::MirrorServer;

const DISK: u64 = (1 + standin::ESP_MIB + standin::BOOT_MIB + standin::ROOT_MIB + standin::SWAP_MIB + 1) << 20;

/// `cargo xtask adopt --site demo …` against the stand-in at `ssh_port`, with the profiles in
/// `profiles` and the built image under `images_root`: (succeeded, what it printed).
fn adopt(key: &Path, profiles: &Path, images_root: &Path, ssh_port: u16, extra: &[&str]) -> (bool, String) {
    let out = Command::new(bin("xtask"))
        .args(["adopt", "--site", "demo", "--host", &format!("mirror@127.0.0.1:{ssh_port}")])
        .arg("--identity")
        .arg(key)
        .args(["--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null"])
        .args(["--ssh-option", "LogLevel=ERROR"])
        .args(extra)
        .env("MICROMIRROR_PROFILES", profiles)
        .env("CARGO_TARGET_DIR", images_root)
        .output()
        .expect("cargo xtask adopt runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- adopt {extra:?}\n{text}");
    (out.status.success(), text)
}

/// The bytes adopt would change: the partition table (first MiB and the backup at the end),
/// the ESP and the swap partition.
fn written_regions(disk: &Path) -> String {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(disk).unwrap();
    let len = file.metadata().unwrap().len();
    let swap_at = (1 + standin::ESP_MIB + standin::BOOT_MIB + standin::ROOT_MIB) << 20;
    let regions = [
        (0, 1 << 20),
        (len - (1 << 20), 1 << 20),
        (1 << 20, standin::ESP_MIB << 20),
        (swap_at, standin::SWAP_MIB << 20),
    ];
    let mut all = Vec::new();
    for (at, size) in regions {
        let mut buf = vec![0u8; size as usize];
        file.read_exact_at(&mut buf, at).unwrap();
        all.push(standin::sha256_hex(&buf));
    }
    all.join(" ")
}

fn demo_profile_with(change: impl Fn(&str) -> String) -> String {
    change(&std::fs::read_to_string(e2e::workspace().join("profiles/demo.toml")).unwrap())
}

/// The folder whose images/demo/ holds `image` (what CARGO_TARGET_DIR names for xtask).
fn images_root(image: &Path) -> PathBuf {
    image.ancestors().nth(3).expect("…/images/demo/demo.img").to_path_buf()
}

fn host_key(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-T", "10", "-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(2).unwrap_or_else(|| panic!("no host key from 127.0.0.1:{port}: {text}")).to_string()
}

/// The stand-in's files, as the upstream first published them: (path, sha256).
fn v1_files(dir: &Path) -> Vec<(String, String)> {
    standin::upstream_v1(dir);
    snapshot(dir)
}

/// Every file is served at /PATH with the bytes of `files`.
fn assert_served(port: u16, files: &[(String, String)]) {
    for (path, sha) in files {
        let (status, _, body) = e2e::http(port, "GET", &format!("/{path}"), &[]).unwrap();
        assert_eq!(status, 200, "/{path}");
        assert_eq!(&standin::sha256_hex(&body), sha, "/{path} is served byte for byte");
    }
}

/// The demo built at `epoch` with another sponsor name, into target/e2e/adopt/NAME.
fn demo_build(name: &str, epoch: i64) -> build::Request {
    let folder = testkit::images::own_folder(env!("CARGO_CRATE_NAME")).join(name);
    let text = testkit::images::demo_profile().replace("Example Networks", &format!("Example Networks {name}"));
    let profiles = e2e::scratch_profiles(&folder.join("profiles"), &[("demo", text)]);
    let mut request = testkit::images::request(&folder, &profiles, "demo");
    request.epoch = epoch;
    testkit::images::build(&request);
    request
}

#[test]
fn a_fleet_box_is_checked_then_adopted_keeping_its_identity_and_its_data() {
    let started = e2e::steps_begin("adopt");
    let step = |what: &str| e2e::step("adopt", started, what);
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let old = standin::disk();
    let v2 = demo_build("v2", testkit::images::epoch() + 60);
    let v2_version = image::version::Version::from_epoch(v2.epoch).unwrap().to_string();
    step("the demo image, v2 and the stand-in are built");
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("adopt-").tempdir_in(e2e::target()).unwrap();
    let up = work.path().join("upstream");
    let v1 = v1_files(&work.path().join("v1"));
    standin::upstream_v1(&up);
    let modules: Vec<(&str, PathBuf)> = standin::PROJECTS.iter().map(|p| (*p, up.join(p))).collect();
    let (_rsyncd, rsync_port) = rsync_daemon(work.path(), &modules);
    let (_broker, mqtt_port) = mosquitto(work.path());
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let update_port = testkit::free_port();
    let _updates = MirrorServer::start_on(&served, update_port, &[]);
    let fwd = [
        format!("tcp:192.0.2.2:873-cmd:socat - TCP:127.0.0.1:{rsync_port}"),
        format!("tcp:192.0.2.2:1883-cmd:socat - TCP:127.0.0.1:{mqtt_port}"),
        format!("tcp:192.0.2.2:8080-cmd:socat - TCP:127.0.0.1:{update_port}"),
    ];
    let disk = work.path().join("oldbox.img");
    vm::disk_copy(&old, &disk, DISK).unwrap();
    let port_base = vm::free_port_base();
    let mut vm = e2e::boot(&disk, &e2e::console_log("adopt.log"), &fwd, port_base, true);
    vm.wait_for_line(standin::READY, Duration::from_secs(400)).unwrap();
    step("the stand-in is up");
    assert_served(vm.port(80), &v1);
    let before = written_regions(&disk);
    let key = e2e::admin_key(work.path());
    std::fs::copy(e2e::workspace().join("tests/fixtures/demo_ed25519.pub"), work.path().join("id_ed25519.pub"))
        .unwrap();
    let host_key_before = host_key(vm.port(22));
    let images = images_root(&image);

    // 1. The preflight: passes on the matching profile, refuses a wrong address, fills placeholders.
    let matching = e2e::scratch_profiles(&work.path().join("matching"), &[("demo", demo_profile_with(str::to_string))]);
    let (ok, said) = adopt(&key, &matching, &images, vm.port(22), &["--preflight-only"]);
    assert!(ok, "the demo's profile matches the stand-in:\n{said}");
    let row = |node: &str| said.lines().find(|l| l.starts_with(node)).unwrap_or_default().to_string();
    assert!(row("/dev/vda4").contains("swap") && row("/dev/vda4").contains("root slot A"), "{said}");
    assert!(row("/dev/vda2").contains("xfs at /boot") && row("/dev/vda2").contains("root slot B"), "{said}");
    assert!(row("/dev/vda3").contains("xfs at /") && row("/dev/vda3").contains("data"), "{said}");
    assert!(row("/dev/vda1").contains("kept"), "{said}");
    let wrong = work.path().join("wrong");
    e2e::scratch_profiles(&wrong, &[("demo", demo_profile_with(|t| t.replace("192.0.2.10/24", "192.0.2.99/24")))]);
    let (ok, said) = adopt(&key, &wrong, &images, vm.port(22), &[]);
    assert!(!ok, "a profile whose address the box lacks is refused:\n{said}");
    assert!(said.contains("refused (ipv4)") && said.contains("network.ipv4 = \"192.0.2.10/24\""), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    let imported = e2e::scratch_profiles(
        &work.path().join("imported"),
        &[(
            "demo",
            demo_profile_with(|t| {
                t.replace("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"TODO: the sponsor's IPv4 address/prefix\"")
                    .replace("ipv6_gateway = \"2001:db8:0:1::1\"", "ipv6_gateway = \"TODO: the IPv6 gateway\"")
            }),
        )],
    );
    let (ok, said) = adopt(&key, &imported, &images, vm.port(22), &["--fill-profile", "--preflight-only"]);
    assert!(ok, "filled from the live box, the profile passes:\n{said}");
    assert!(said.contains("[profile] network.ipv4 = \"192.0.2.10/24\""), "{said}");
    let filled = std::fs::read_to_string(imported.join("demo.toml")).unwrap();
    assert!(filled.contains("ipv6_gateway = \"2001:db8:0:1::1\"") && !filled.contains("TODO:"), "{filled}");
    assert_eq!(written_regions(&disk), before, "the preflight wrote nothing to the table, the ESP or the swap");
    step("preflight: passes, refuses a wrong address, fills placeholders; nothing written");

    // 2. The adoption, while the upstream publishes a new version of one project.
    publish_debian(&up.join("fixture-debian"), 2, 200_000);
    let http = format!("http://127.0.0.1:{}/", vm.port(80));
    // What the upstream sends from here on: the trial's runs and the first sync's.
    let log = rsync_log(work.path(), rsync_port);
    let sent_before =
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(" send ")).count();
    let (ok, said) = adopt(&key, &matching, &images, vm.port(22), &["--http", &http, "--trial-minutes", "20"]);
    assert!(ok, "the stand-in is adopted:\n{said}\n{}", vm.console_tail(60));
    step(said.lines().rfind(|l| l.starts_with("[trial]") && l.contains(" serves ")).unwrap_or("serving"));
    step(said.lines().rfind(|l| l.starts_with("adopted:")).unwrap_or("adopted"));
    assert_eq!(host_key(vm.port(22)), host_key_before, "the box kept its SSH host key");
    assert_served(vm.port(80), &v1);
    step("same host key; every file of /data/mirror served byte for byte by mirror-server");

    // 3. The commit starts the first sync by itself, and it moves only what the upstream changed.
    // (The trial's runs fail before asking the upstream: the tree is not yet the sync's.)
    // One SSH connection that waits on the box: the firewall allows ten new ones a minute.
    let until_synced = standin::PROJECTS
        .map(|p| {
            format!("until grep -qs '\"state\": \"success\"' /var/lib/micromirror/sync/{p}.json; do sleep 1; done")
        })
        .join("; ");
    let out = vm.ssh(&key, &[], &format!("sudo timeout 300 sh -c '{}'", until_synced.replace('\'', "'\\''")));
    assert!(
        out.status.success(),
        "the commit started the first sync of every project within 300 s: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&vm.ssh(&key, &[], "mirror-sync status").stdout)
    );
    let out = vm.ssh(
        &key,
        &[],
        "ls -A /run/mmdisk && stat -c %U /srv/mirror/fixture-debian && sudo sh -c 'cat \
         /var/lib/micromirror/acme/certbot/accounts/acme-v02.api.letsencrypt.org/directory/*/regr.json'",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("data\nmicromirror-state\nmirror-sync"),
        "only the tree and the state stay, the tree the sync's:\n{text}"
    );
    assert!(text.ends_with(standin::STANDIN_REGR), "certbot's account is kept in the state:\n{text}");
    // Each `send` line ends with the file's path in its module and its length.
    let lines: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" send "))
        .skip(sent_before)
        .map(|l| l.split_whitespace().rev().take(2).map(str::to_string).collect())
        .collect();
    let sent: Vec<String> = lines.iter().map(|w| w[1].clone()).collect();
    let sent_bytes: u64 = lines.iter().filter_map(|w| w[0].parse::<u64>().ok()).sum();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(
        sent_sorted,
        ["dists/stable/Release", "dists/stable/main/binary-amd64/Packages", "pool/main/h/hello/hello_2_all.deb"],
        "the first sync fetched only what changed upstream"
    );
    let (status, _, _) =
        e2e::http(vm.port(80), "GET", "/fixture-debian/pool/main/h/hello/hello_1_all.deb", &[]).unwrap();
    assert_eq!(status, 404, "what the upstream removed is gone");
    step(&format!("the first sync fetched {} files ({sent_bytes} bytes): only what the upstream changed", sent.len()));

    // 4. It updates itself like any other box: v2 goes into slot B, the old /boot, and boots.
    let adopted_at = vm.console().len();
    let site = build::load::load(&v2.profiles, "demo").unwrap();
    build::publish::publish(&build::publish::Publication {
        site: &site,
        built: &v2.out.join("update"),
        to: &served,
        keep: 2,
        epoch: v2.epoch,
        signing_home: v2.signing_home.as_deref(),
    })
    .unwrap();
    publish(mqtt_port, "micromirror/updates/demo");
    vm.wait_for(Duration::from_secs(900), "v2 booted from slot B", || {
        vm.console()[adopted_at..]
            .lines()
            .any(|l| l.contains("MICROMIRROR-BOOT") && l.contains(&format!("image={v2_version}")))
    })
    .unwrap();
    step(&format!("v2 published and booted ({v2_version})"));
    let out = vm.ssh(&key, &[], "lsblk -no PARTLABEL /dev/vda2; sudo mirror-update status --fields");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.lines().any(|l| l.trim() == format!("micromirror_{v2_version}")), "v2 is in the old /boot:\n{text}");
    assert!(text.contains("blessed=yes") && text.contains("other=previous:"), "{text}");
    step(&format!("v2 installed into the old /boot (slot B) and blessed: {}", text.lines().last().unwrap_or_default()));
}

#[test]
fn a_version_that_fails_its_trial_leaves_the_box_on_its_old_system() {
    let started = e2e::steps_begin("adopt-fail");
    let step = |what: &str| e2e::step("adopt-fail", started, what);
    // A demo whose server never starts: its health check fails.
    let folder = testkit::images::own_folder(env!("CARGO_CRATE_NAME")).join("broken");
    let profiles = e2e::scratch_profiles(
        &folder.join("profiles"),
        &[("demo", format!("{}test_break_server = true\n", testkit::images::demo_profile()))],
    );
    let broken = testkit::images::build(&testkit::images::request(&folder, &profiles, "demo"));
    let old = standin::disk();
    step("the broken demo and the stand-in are built");
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("adopt-fail-").tempdir_in(e2e::target()).unwrap();
    let v1 = v1_files(&work.path().join("v1"));
    let disk = work.path().join("oldbox.img");
    vm::disk_copy(&old, &disk, DISK).unwrap();
    let port_base = vm::free_port_base();
    let mut vm = e2e::boot(&disk, &e2e::console_log("adopt-fail.log"), &[], port_base, true);
    vm.wait_for_line(standin::READY, Duration::from_secs(400)).unwrap();
    let key = e2e::admin_key(work.path());
    std::fs::copy(e2e::workspace().join("tests/fixtures/demo_ed25519.pub"), work.path().join("id_ed25519.pub"))
        .unwrap();
    step("the stand-in is up");

    let http = format!("http://127.0.0.1:{}/", vm.port(80));
    let (ok, said) =
        adopt(&key, &profiles, &images_root(&broken), vm.port(22), &["--http", &http, "--trial-minutes", "20"]);
    assert!(!ok, "a version that fails its health check is not committed:\n{said}");
    assert!(said.contains("back on its old system"), "adopt says what happened:\n{said}");
    assert!(said.contains("MICROMIRROR-HEALTH failed"), "and what the new system said:\n{said}");
    assert!(said.contains("/var/log/micromirror-adopt.log"), "and where the log is:\n{said}");
    step("adopt says the trial failed and the old system is back");

    let ready = vm.console().matches(standin::READY).count();
    assert!(ready >= 2, "the stand-in booted again by itself");
    assert_served(vm.port(80), &v1);
    let out = vm.ssh(&key, &[], "cat /etc/hostname; sudo efibootmgr | grep BootOrder; ls /data/mirror");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("oldbox\n"), "the old system runs:\n{text}");
    assert!(text.contains("fixture-debian"), "its data is there:\n{text}");
    step("the old system runs and nginx serves every file as before");
}

/// The stand-in's SSH host key (ed25519), read from its root file system on `disk`.
fn standin_host_key(disk: &Path) -> String {
    let root_at = (1 + standin::ESP_MIB + standin::BOOT_MIB) << 20;
    let dir = tempfile::tempdir().unwrap();
    let dev = testkit::run(
        Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset", &root_at.to_string()])
            .args(["--sizelimit", &(standin::ROOT_MIB << 20).to_string()])
            .arg(disk),
    );
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
    let mounted = Command::new("mount").args(["-o", "ro,norecovery", &dev]).arg(dir.path()).status();
    let key = std::fs::read_to_string(dir.path().join("etc/ssh/ssh_host_ed25519_key.pub"));
    let _ = Command::new("umount").arg(dir.path()).status();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(mounted.is_ok_and(|s| s.success()), "mounting the stand-in's root from {}", disk.display());
    key.unwrap().split_whitespace().nth(1).expect("a public key").to_string()
}

/// The demo's USB installer, written once per test binary by `cargo xtask installer`.
fn stick(image: &Path) -> PathBuf {
    static STICK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STICK
        .get_or_init(|| {
            let stick = testkit::images::own_folder(env!("CARGO_CRATE_NAME")).join("demo-installer.img");
            let out = testkit::run(
                Command::new(bin("xtask"))
                    .args(["installer", "--site", "demo", "--out"])
                    .arg(&stick)
                    .arg("--built")
                    .arg(image.parent().unwrap())
                    .env("MICROMIRROR_PROFILES", images_root(image).join("profiles")),
            );
            let said = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(stick.exists() && said.contains("the USB installer for demo"), "{said}");
            println!("{said}");
            stick
        })
        .clone()
}

#[test]
fn the_usb_installer_converts_a_box_in_one_boot_and_the_disk_then_boots_the_image() {
    let started = e2e::steps_begin("installer");
    let step = |what: &str| e2e::step("installer", started, what);
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let old = standin::disk();
    let stick = stick(&image);
    step("the stick is written");
    let work = tempfile::Builder::new().prefix("installer-").tempdir_in(e2e::target()).unwrap();
    let _qemu = e2e::qemu_turn();
    let v1 = v1_files(&work.path().join("v1"));
    let disk = work.path().join("oldbox.img");
    vm::disk_copy(&old, &disk, DISK).unwrap();
    let old_key = standin_host_key(&old);
    let mut config = vm::Config::new(&disk, e2e::demo_network(), vm::Serial::File(e2e::console_log("installer.log")));
    config.usb = Some(stick);
    let vm = vm::Vm::start(&config).unwrap();
    vm.wait_for(Duration::from_secs(900), "the installer's verdict", || {
        let c = vm.console();
        c.contains("MICROMIRROR-INSTALLER done") || c.contains("MICROMIRROR-INSTALLER failed")
    })
    .unwrap();
    let console = vm.console();
    assert!(console.contains("MICROMIRROR-INSTALLER done"), "{}", vm.console_tail(60));
    let said: Vec<&str> =
        console.lines().filter(|l| l.starts_with("MICROMIRROR-INSTALLER") || l.starts_with("[box]")).collect();
    let said = said.join("\n");
    assert!(said.contains("/dev/vda3 on /dev/vda holds an old system with /data/mirror"), "{said}");
    assert!(said.contains("slot A reads back as written"), "{said}");
    assert!(said.contains("boots once (BootNext)"), "{said}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while vm.running() {
        assert!(std::time::Instant::now() < deadline, "the installer did not power the box off");
        std::thread::sleep(Duration::from_millis(500));
    }
    step("the installer converted the disk in one boot and powered off");
    drop(vm);

    // The stick is out: the disk boots the image, which commits itself once healthy.
    let vm = e2e::boot(&disk, &e2e::console_log("installer-boot.log"), &[], vm::free_port_base(), true);
    vm.wait_for(Duration::from_secs(600), "the new system's report", || {
        vm.console().lines().any(|l| l.contains("MICROMIRROR-BOOT") && l.contains("blessed=yes"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.console_tail(60)));
    let console = vm.console();
    assert!(console.contains("MICROMIRROR-ADOPT committed"), "it committed itself:\n{}", vm.console_tail(60));
    let report = console.lines().find(|l| l.contains("MICROMIRROR-BOOT")).unwrap_or_default().to_string();
    assert!(report.contains("other=empty") && report.contains("data=/dev/vda3[/data/mirror]"), "{report}");
    step("the disk boots the image; healthy, it committed itself (old /boot now slot B)");
    assert_eq!(host_key(vm.port(22)), old_key, "the box kept its SSH host key");
    assert_served(vm.port(80), &v1);
    step("same SSH host key; every file of /data/mirror served byte for byte");
}

#[test]
fn the_usb_installer_flashes_a_disk_without_data_once_erase_is_typed() {
    let started = e2e::steps_begin("installer-flash");
    let step = |what: &str| e2e::step("installer-flash", started, what);
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let stick = stick(&image);
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("installer-flash-").tempdir_in(e2e::target()).unwrap();
    let disk = work.path().join("blank.img");
    std::fs::File::create(&disk).unwrap().set_len(8 << 30).unwrap();
    let log = e2e::console_log("installer-flash.log");
    let mut config = vm::Config::new(&disk, e2e::demo_network(), vm::Serial::File(log));
    config.usb = Some(stick);
    config.keyboard = true;
    let mut vm = vm::Vm::start(&config).unwrap();
    vm.wait_for_line("Type ERASE and Enter", Duration::from_secs(600)).unwrap();
    let console = vm.console();
    assert!(console.contains("/dev/vda cannot be kept: no partition of it holds an old system"), "{console}");
    assert!(!console.contains("MICROMIRROR-INSTALLER writing"), "nothing is written before the answer");
    step("the installer asks before a clean flash");
    vm.type_on_console("ERASE\r").unwrap();
    vm.wait_for(Duration::from_secs(600), "the installer's verdict", || {
        let c = vm.console();
        c.contains("MICROMIRROR-INSTALLER done") || c.contains("MICROMIRROR-INSTALLER failed")
    })
    .unwrap();
    assert!(vm.console().contains("MICROMIRROR-INSTALLER done"), "{}", vm.console_tail(40));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while vm.running() {
        assert!(std::time::Instant::now() < deadline, "the installer did not power the box off");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(vm);
    let parts = e2e::partitions(&disk).unwrap();
    assert!(parts.len() >= 3, "the image's table is on the disk: {parts:?}");
    step("ERASE typed: the image written over the disk, the box powered off");

    let vm = e2e::boot(&disk, &e2e::console_log("installer-flash-boot.log"), &[], vm::free_port_base(), true);
    vm.wait_for(Duration::from_secs(600), "the flashed disk's first boot report", || {
        vm.console().lines().any(|l| l.contains("MICROMIRROR-BOOT") && l.contains("blessed=yes"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.console_tail(60)));
    let (status, _, _) = e2e::http_when_ready(vm.port(80), "/", Duration::from_secs(60)).unwrap();
    assert_eq!(status, 200, "the flashed box serves");
    step("the flashed disk boots the image, blessed, and serves");
}
