//! Adoption of a running fleet box, under QEMU, against the Debian stand-in laid out like the
//! fleet's kickstart disks (`e2e::standin`): `cargo xtask adopt` as an operator runs it, over
//! SSH to the stand-in's forwarded port.
//!
//! 1. The preflight on the demo's profile (which matches the stand-in) passes and maps swap to
//!    slot A, /boot to slot B and the root XFS to the data; on a profile whose address the box
//!    does not have it refuses, naming the key and the fix; `--fill-profile` writes the live
//!    values into an imported profile's placeholders, after which the preflight passes. The
//!    bytes adopt would write (partition table, ESP, swap) are the same before and after.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{standin, Guest};
use testkit::bin;

const DISK: u64 = (1 + standin::ESP_MIB + standin::BOOT_MIB + standin::ROOT_MIB + standin::SWAP_MIB + 1) << 20;

/// `cargo xtask adopt --site demo …` against the stand-in at `ssh_port`, with the profiles in
/// `profiles` and the demo's built image under `images_root`: (succeeded, what it printed).
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
    let mut all = Vec::new();
    for (at, size) in [
        (0, 1 << 20),
        (len - (1 << 20), 1 << 20),
        (1 << 20, standin::ESP_MIB << 20),
        (swap_at, standin::SWAP_MIB << 20),
    ] {
        let mut buf = vec![0u8; size as usize];
        file.read_exact_at(&mut buf, at).unwrap();
        all.push(standin::sha256_hex(&buf));
    }
    all.join(" ")
}

fn demo_profile_with(change: impl Fn(&str) -> String) -> String {
    change(&std::fs::read_to_string(e2e::workspace().join("profiles/demo.toml")).unwrap())
}

#[test]
fn the_preflight_reads_a_fleet_box_refuses_a_profile_that_would_lose_it_and_fills_placeholders() {
    let started = e2e::steps_begin("adopt-preflight");
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let images_root: PathBuf = image.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let old = standin::disk();
    e2e::step("adopt-preflight", started, "the demo image and the stand-in are built");
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("adopt-").tempdir_in(e2e::target()).unwrap();
    let disk = work.path().join("oldbox.img");
    vm::disk_copy(&old, &disk, DISK).unwrap();
    let port_base = vm::free_port_base();
    let mut vm = e2e::boot(&disk, &e2e::console_log("adopt-preflight.log"), &[], port_base, false);
    vm.wait_for_line(standin::READY, Duration::from_secs(400)).unwrap();
    e2e::step("adopt-preflight", started, "the stand-in is up");
    let before = written_regions(&disk);
    let key = e2e::admin_key(work.path());
    std::fs::copy(e2e::workspace().join("tests/fixtures/demo_ed25519.pub"), work.path().join("id_ed25519.pub"))
        .unwrap();

    let matching = work.path().join("matching");
    e2e::scratch_profiles(&matching, &[("demo", demo_profile_with(str::to_string))]);
    let (ok, said) = adopt(&key, &matching, &images_root, vm.port(22), &["--preflight-only"]);
    assert!(ok, "the demo's profile matches the stand-in:\n{said}");
    let row = |node: &str| said.lines().find(|l| l.starts_with(node)).unwrap_or_default().to_string();
    assert!(row("/dev/vda4").contains("swap") && row("/dev/vda4").contains("root slot A"), "{said}");
    assert!(row("/dev/vda2").contains("xfs at /boot") && row("/dev/vda2").contains("root slot B"), "{said}");
    assert!(row("/dev/vda3").contains("xfs at /") && row("/dev/vda3").contains("data"), "{said}");
    assert!(row("/dev/vda1").contains("kept"), "{said}");
    assert!(said.contains("preflight passed"), "{said}");
    e2e::step("adopt-preflight", started, "the preflight passes on the matching profile");

    let wrong = work.path().join("wrong");
    e2e::scratch_profiles(&wrong, &[("demo", demo_profile_with(|t| t.replace("192.0.2.10/24", "192.0.2.99/24")))]);
    let (ok, said) = adopt(&key, &wrong, &images_root, vm.port(22), &[]);
    assert!(!ok, "a profile whose address the box lacks is refused:\n{said}");
    assert!(said.contains("refused (ipv4)") && said.contains("network.ipv4 = \"192.0.2.10/24\""), "{said}");
    assert!(said.contains("nothing was written"), "{said}");

    let imported = work.path().join("imported");
    let profiles = e2e::scratch_profiles(
        &imported,
        &[(
            "demo",
            demo_profile_with(|t| {
                t.replace("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"TODO: the sponsor's IPv4 address/prefix\"")
                    .replace("ipv6_gateway = \"2001:db8:0:1::1\"", "ipv6_gateway = \"TODO: the IPv6 gateway\"")
            }),
        )],
    );
    let (ok, said) = adopt(&key, &imported, &images_root, vm.port(22), &["--fill-profile", "--preflight-only"]);
    assert!(ok, "filled from the live box, the profile passes:\n{said}");
    assert!(said.contains("[profile] network.ipv4 = \"192.0.2.10/24\""), "{said}");
    let filled = std::fs::read_to_string(profiles.join("demo.toml")).unwrap();
    assert!(filled.contains("ipv6_gateway = \"2001:db8:0:1::1\"") && !filled.contains("TODO:"), "{filled}");

    assert_eq!(written_regions(&disk), before, "the preflight wrote nothing to the box's table, ESP or swap");
    e2e::step("adopt-preflight", started, "refused on a wrong address, filled from the box; nothing written");
}

#[test]
fn a_box_is_adopted_over_ssh_keeps_its_identity_and_serves_its_data_from_the_image() {
    let started = e2e::steps_begin("adopt");
    let image = e2e::demo_image(env!("CARGO_CRATE_NAME"));
    let images_root: PathBuf = image.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let old = standin::disk();
    let _qemu = e2e::qemu_turn();
    let work = tempfile::Builder::new().prefix("adopt-").tempdir_in(e2e::target()).unwrap();
    let disk = work.path().join("oldbox.img");
    vm::disk_copy(&old, &disk, DISK).unwrap();
    let port_base = vm::free_port_base();
    let mut vm = e2e::boot(&disk, &e2e::console_log("adopt.log"), &[], port_base, true);
    vm.wait_for_line(standin::READY, Duration::from_secs(400)).unwrap();
    e2e::step("adopt", started, "the stand-in is up");
    let key = e2e::admin_key(work.path());
    std::fs::copy(e2e::workspace().join("tests/fixtures/demo_ed25519.pub"), work.path().join("id_ed25519.pub"))
        .unwrap();
    let host_key_before = host_key(vm.port(22));

    let profiles = work.path().join("profiles");
    e2e::scratch_profiles(&profiles, &[("demo", demo_profile_with(str::to_string))]);
    let http = format!("http://127.0.0.1:{}/", vm.port(80));
    let (ok, said) = adopt(&key, &profiles, &images_root, vm.port(22), &["--http", &http, "--trial-minutes", "20"]);
    assert!(ok, "the stand-in is adopted:\n{said}\n{}", vm.console_tail(60));
    e2e::step("adopt", started, said.lines().last().unwrap_or_default());

    assert_eq!(host_key(vm.port(22)), host_key_before, "the box kept its SSH host key");
    for (path, bytes) in standin::mirror_files() {
        let (status, _, body) = e2e::http(vm.port(80), "GET", &format!("/{path}"), &[]).unwrap();
        assert_eq!(status, 200, "/{path}");
        assert_eq!(standin::sha256_hex(&body), standin::sha256_hex(&bytes), "/{path} is served byte for byte");
    }
    let out = vm.ssh(&key, &[], "ls -A /run/mmdisk; stat -c %U /srv/mirror/debian; sudo efibootmgr");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("data\nmicromirror-state\n"), "only the tree and the state stay:\n{text}");
    assert!(text.contains("mirror-sync"), "the tree belongs to the sync service:\n{text}");
    e2e::step("adopt", started, "same host key, every file served byte for byte, the old system's files gone");
}

fn host_key(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-T", "10", "-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(2).unwrap_or_else(|| panic!("no host key from 127.0.0.1:{port}: {text}")).to_string()
}
