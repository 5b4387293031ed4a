//! The pipeline without booting, through the build library: the AlmaLinux base against a local
//! signed RPM repository (AlmaLinux's own repositories are unreachable here), reproducible bytes,
//! a failed build that leaves the previous outputs alone, an IPv6-only site's rendered tree, each
//! hardware class's drivers, and flashing the image onto a disk. The demo image is built once
//! for this binary (target/e2e/image/) and shared by the tests that need one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use build::{Built, Request, Stage};
use e2e::{own_folder, scratch_profiles, workspace};
use testkit::images::{demo_profile, request};
use testkit::sha256_file;

struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's http.server on loopback, serving `dir`.
fn serve(dir: &Path) -> (HttpServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (HttpServer(child), port)
}

fn almalinux_packages() -> Vec<String> {
    let list = std::fs::read_to_string(workspace().join("xtask/build/packages/almalinux-9.txt")).unwrap();
    list.lines().map(|l| l.split('#').next().unwrap_or("").trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// An AlmaLinux-shaped mirror: {root}/9/BaseOS/x86_64/os with every base package (tiny
/// stand-ins, signed or not) and an empty AppStream.
fn alma_mirror(root: &Path, sign: bool) {
    let baseos = root.join("9/BaseOS/x86_64/os");
    let script = workspace().join("tests/fixtures/make-rpm-repo.sh");
    let mut c = Command::new("sh");
    c.arg(&script).arg(&baseos);
    if sign {
        c.arg("--sign");
    }
    // htop: an operator's tool the profile adds (base.packages).
    let out = c.args(almalinux_packages()).arg("htop").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let appstream = root.join("9/AppStream/x86_64/os");
    std::fs::create_dir_all(&appstream).unwrap();
    assert!(Command::new("createrepo_c").arg("--quiet").arg(&appstream).status().unwrap().success());
}

/// A scratch profiles folder with one AlmaLinux site, alma-lab, which adds htop to its base.
fn alma_profiles(dir: &Path, mirror: &str, key: &str) -> PathBuf {
    let alma = demo_profile().replace("name = \"demo\"", "name = \"alma-lab\"").replace(
        "distro = \"debian-12\"",
        &format!("distro = \"almalinux-9\"\nmirror = \"{mirror}\"\ngpg_keys = [\"{key}\"]\npackages = [\"htop\"]"),
    );
    scratch_profiles(&dir.join("profiles"), &[("alma-lab", alma)])
}

/// Builds alma-lab's base only; the cached archive, or the build's error as text.
fn alma_base(dir: &Path, profiles: &Path) -> Result<PathBuf, String> {
    let mut r = request(dir, profiles, "alma-lab");
    r.until = Some(Stage::Base);
    r.refresh_base = true;
    match build::run(&r) {
        Ok(Built::Base(archive)) => Ok(archive),
        Ok(other) => panic!("--until base made {other:?}"),
        Err(e) => Err(format!("{e:#}")),
    }
}

#[test]
fn almalinux_base_installs_with_dnf_from_a_signed_repository_and_refuses_unsigned_packages() {
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("signed");
    alma_mirror(&signed, true);
    let (_http, port) = serve(&signed);
    let url = format!("http://127.0.0.1:{port}");
    let p = alma_profiles(dir.path(), &url, &format!("{url}/9/BaseOS/x86_64/os/RPM-GPG-KEY-test"));
    let archive = alma_base(dir.path(), &p).unwrap_or_else(|e| panic!("{e}"));
    let listing = Command::new("tar").args(["--zstd", "-tf"]).arg(&archive).output().unwrap();
    let files = String::from_utf8_lossy(&listing.stdout).into_owned();
    let _ = std::fs::remove_file(&archive);
    for pkg in ["kernel-core", "rsync-daemon", "NetworkManager", "cryptsetup", "htop"] {
        assert!(
            files.contains(&format!("usr/share/mm-test/{pkg}")),
            "{pkg} not installed; archive has:\n{}",
            e2e::tail(&files, 30)
        );
    }
    assert!(
        files.lines().any(|l| l.contains("var/lib/rpm") || l.contains("usr/lib/sysimage/rpm")),
        "no rpm database in the base"
    );
    assert!(!files.contains("var/cache/dnf/"), "dnf's cache leaked into the base");

    // The same packages unsigned, checked against that key: dnf must refuse them.
    let unsigned = dir.path().join("unsigned");
    alma_mirror(&unsigned, false);
    std::fs::copy(signed.join("9/BaseOS/x86_64/os/RPM-GPG-KEY-test"), unsigned.join("RPM-GPG-KEY-test")).unwrap();
    let (_http2, port2) = serve(&unsigned);
    let url2 = format!("http://127.0.0.1:{port2}");
    let p2 = alma_profiles(&dir.path().join("u"), &url2, &format!("{url2}/RPM-GPG-KEY-test"));
    let out = alma_base(&dir.path().join("u"), &p2).map(|a| a.display().to_string()).unwrap_err();
    assert!(out.contains("dnf could not install the AlmaLinux base"), "{out}");
    assert!(
        out.to_lowercase().contains("gpg") || out.to_lowercase().contains("signature") || out.contains("not signed"),
        "{out}"
    );
}

#[test]
fn an_unreachable_package_mirror_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = alma_profiles(dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9/key");
    let out = alma_base(dir.path(), &p).map(|a| a.display().to_string()).unwrap_err();
    assert!(
        out.contains("cannot reach the baseos repository: http://127.0.0.1:9/9/BaseOS/x86_64/os/repodata/repomd.xml"),
        "{out}"
    );
    assert!(out.contains("base.mirror"), "{out}");
}

/// The demo, built once for this binary.
fn demo() -> PathBuf {
    e2e::demo_image(env!("CARGO_CRATE_NAME"))
}

#[test]
fn two_builds_of_one_profile_give_identical_images_and_a_failed_build_keeps_the_last() {
    let image = demo();
    let first = sha256_file(&image);
    let update = image.with_file_name("update");
    let signed =
        |dir: &Path, name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("update/{name}: {e}"));
    // The second build, into a folder of its own, also writes the .img.zst (concatenated frames,
    // the update's root.zst among them): it must restore the image byte for byte.
    let own = own_folder("image-second-build");
    let mut second = request(&own, &e2e::demo_folder(env!("CARGO_CRATE_NAME")).join("profiles"), "demo");
    second.compress = true;
    let again = testkit::images::build(&second);
    assert_eq!(sha256_file(&again), first, "the second build differs from the first");
    let zst = again.with_extension("img.zst");
    let restored =
        Command::new("sh").arg("-c").arg(format!("zstd -dc {} | sha256sum", zst.display())).output().unwrap();
    let restored = String::from_utf8_lossy(&restored.stdout).split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(restored, first, "the .img.zst does not restore the image");
    let update2 = again.with_file_name("update");
    assert_eq!(signed(&update2, "SHA256SUMS"), signed(&update, "SHA256SUMS"), "the update's artifacts differ");
    assert_eq!(
        signed(&update2, "SHA256SUMS.gpg"),
        signed(&update, "SHA256SUMS.gpg"),
        "the same key and inputs give the same signature"
    );
    let manifest = std::fs::read_to_string(again.with_file_name("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(v["artifacts"][0]["sha256"], first, "the manifest names the image's hash");
    assert!(v["packages"]["systemd"].is_string(), "the manifest lists package versions");

    // A build that fails half-way (its base cannot be installed: the package mirror does not
    // answer) leaves the last outputs as they were.
    let broken = demo_profile()
        .replace("distro = \"debian-12\"", "distro = \"debian-12\"\nmirror = \"http://127.0.0.1:9/debian\"");
    let p = scratch_profiles(&own.join("broken-profiles"), &[("demo", broken)]);
    let failing = Request { profiles: p, refresh_base: true, ..second.clone() };
    let err = format!("{:#}", build::run(&failing).unwrap_err());
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert_eq!(sha256_file(&again), first, "the failed build touched the last image");
    let names: Vec<String> = std::fs::read_dir(&second.out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| ["demo.img", "demo.img.zst", "manifest.json", "update"].contains(&n.as_str())),
        "partial files left: {names:?}"
    );
    assert!(!failing.work().exists(), "the failed build left its scratch space: {}", failing.work().display());
}

#[test]
fn an_ipv6_only_site_renders_its_network_and_firewall_from_the_profile() {
    let own = own_folder("image-lab6");
    let mut r = request(&own, &workspace().join("profiles"), "lab6");
    r.until = Some(Stage::Overlay);
    let root = match build::run(&r) {
        Ok(Built::Tree(root)) => root,
        other => panic!("--until overlay gave {other:?}"),
    };
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let link = read("etc/systemd/network/10-wan0.link");
    assert!(link.contains("MACAddress=52:54:00:12:34:56") && link.contains("Name=wan0"), "{link}");
    let network = read("etc/systemd/network/20-wan0.network");
    assert!(network.contains("Address=2001:db8:6::10/64") && network.contains("Gateway=fe80::1"), "{network}");
    assert!(!network.contains("Address=192."), "an IPv6-only site got an IPv4 address:\n{network}");
    let nft = read("etc/nftables.conf");
    assert!(
        nft.contains("elements = { 198.51.100.0/24 }") && nft.contains("elements = { 2001:db8:bad::/48 }"),
        "{nft}"
    );
    assert!(nft.contains("ip6 saddr { 2001:db8:6::/48 } tcp dport 9100 accept"), "{nft}");
    assert_eq!(read("etc/hostname"), "lab6.mm.example.net\n");
    assert_eq!(read("etc/ssh/authorized_keys/ops").lines().count(), 1);
    assert!(read("etc/sudoers.d/micromirror").starts_with("ops ALL=(ALL) NOPASSWD: ALL"));
    assert_eq!(
        std::fs::read_link(root.join("etc/localtime")).unwrap(),
        PathBuf::from("../usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"", "machine-id must be made on first boot");
    assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists(), "SSH host keys must be made on first boot");
    assert!(read("etc/rsyncd.conf").contains("[kdeftp]") || read("etc/rsyncd.conf").contains("[kde]"));
}

/// The kernel modules inside a UKI's initramfs, by name (`r8169`, `mlx4_en`, …).
fn initramfs_modules(uki: &Path, work: &Path) -> Vec<String> {
    let initrd = work.join(format!("{}.initrd", uki.file_name().unwrap().to_string_lossy()));
    let status = Command::new("objcopy")
        .arg(format!("--dump-section=.initrd={}", initrd.display()))
        .arg(uki)
        .arg(work.join("scratch.efi"))
        .status()
        .unwrap();
    assert!(status.success(), "no .initrd section in {}", uki.display());
    let out = Command::new("lsinitramfs").arg(&initrd).output().unwrap();
    assert!(out.status.success(), "lsinitramfs {}: {}", initrd.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|f| f.split_once(".ko").map(|(name, _)| name.replace('-', "_")))
        .collect()
}

#[test]
fn each_hardware_class_builds_with_its_drivers_in_the_uki_initramfs() {
    let dir = tempfile::tempdir().unwrap();
    let classes = ["t620", "t740", "r220"];
    let sites: Vec<(String, String)> = classes
        .iter()
        .map(|class| {
            let text = demo_profile()
                .replace("name = \"demo\"", &format!("name = \"hw-{class}\""))
                .replace("disk_gb = 64", &format!("disk_gb = 64\nhardware = \"{class}\""));
            (format!("hw-{class}"), text)
        })
        .collect();
    let named: Vec<(&str, String)> = sites.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let own = own_folder("image-hardware");
    let p = scratch_profiles(&own.join("profiles"), &named);
    let modules = |site: &str| {
        let image = testkit::images::build(&request(&own, &p, site));
        let update = image.with_file_name("update");
        let uki = std::fs::read_dir(&update)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "efi"))
            .unwrap_or_else(|| panic!("no UKI in {}", update.display()));
        initramfs_modules(&uki, dir.path())
    };
    let has = |m: &[String], name: &str| m.iter().any(|x| x == name);
    let t620 = modules("hw-t620");
    assert!(has(&t620, "r8169") && has(&t620, "ahci") && has(&t620, "virtio_blk"), "{t620:?}");
    assert!(!has(&t620, "mlx4_en") && !has(&t620, "ixgbe"), "a T620 carries no 10 GbE drivers: {t620:?}");
    let t740 = modules("hw-t740");
    assert!(has(&t740, "mlx4_en") && has(&t740, "nvme") && has(&t740, "r8169"), "{t740:?}");
    let r220 = modules("hw-r220");
    assert!(has(&r220, "ixgbe") && has(&r220, "tg3") && has(&r220, "megaraid_sas"), "{r220:?}");
    let _ = std::fs::remove_dir_all(&own);
}

/// `cargo xtask flash`: writes only what the image holds, zeroes the rest of its span (old data
/// on the target must not show through), verifies by reading back, and refuses unsafe targets.
#[test]
fn flash_writes_and_verifies_and_refuses_unsafe_targets() {
    let image = demo();
    let image_len = std::fs::metadata(&image).unwrap().len();
    let dir = tempfile::tempdir().unwrap();

    // A "disk" full of old data where the image has holes.
    let disk = dir.path().join("disk.img");
    let mut f = std::fs::File::create(&disk).unwrap();
    f.set_len(image_len + (512 << 20)).unwrap();
    for mib in [0u64, 300, 1000, 2000] {
        f.seek(SeekFrom::Start(mib << 20)).unwrap();
        f.write_all(&vec![0xA5u8; 4 << 20]).unwrap();
    }
    drop(f);
    build::flash::flash(&image, &disk, true).unwrap();
    let mut a = std::fs::File::open(&image).unwrap();
    let mut b = std::fs::File::open(&disk).unwrap();
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for mib in 0..image_len >> 20 {
        a.read_exact(&mut x).unwrap();
        b.read_exact(&mut y).unwrap();
        assert!(x == y, "MiB {mib} differs after flashing");
    }

    // Refusals: the disk this system runs from, and a disk smaller than the image.
    let root = Command::new("findmnt").args(["-no", "SOURCE", "/"]).output().unwrap();
    let root_dev = String::from_utf8_lossy(&root.stdout).trim().to_string();
    if root_dev.starts_with("/dev/") {
        let err = format!("{:#}", build::flash::flash(&image, Path::new(&root_dev), true).unwrap_err());
        assert!(err.contains("refusing") || err.contains("mounted") || err.contains("partition"), "{err}");
    }
    let small = dir.path().join("small.img");
    std::fs::File::create(&small).unwrap().set_len(image_len / 2).unwrap();
    let err = format!("{:#}", build::flash::flash(&image, &small, true).unwrap_err());
    assert!(err.contains("the image needs"), "{err}");
    // Without confirmation and without a terminal nothing is written.
    let err = format!("{:#}", build::flash::flash(&image, &disk, false).unwrap_err());
    assert!(err.contains("pass --yes"), "{err}");
}

/// `cargo xtask publish`: the served pair switches whole (a publish that died leaves what boxes
/// see untouched), a pair that no longer verifies is repaired by running it again, and boxes'
/// gpgv accepts the pair.
#[test]
fn a_second_publish_repairs_a_list_whose_signature_does_not_match() {
    let image = demo();
    let profiles = e2e::demo_folder(env!("CARGO_CRATE_NAME")).join("profiles");
    let site = build::load::load(&profiles, "demo").unwrap();
    let served = tempfile::tempdir().unwrap();
    let publication = build::publish::Publication {
        site: &site,
        built: &image.with_file_name("update"),
        to: served.path(),
        keep: 2,
        epoch: testkit::images::epoch(),
        signing_home: Some(&testkit::images::demo_signing_home()),
    };
    let said = build::publish::publish(&publication).unwrap();
    assert!(said.starts_with("published "), "{said}");
    let dir = served.path().join("demo");
    let gpgv = || {
        let keyring = served.path().join("keyring.gpg");
        let out = Command::new("gpg")
            .args(["--batch", "--dearmor", "--yes", "--output"])
            .arg(&keyring)
            .arg(workspace().join("profiles/keys/demo-updates.asc"))
            .output()
            .unwrap();
        assert!(out.status.success());
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&keyring)
            .arg(dir.join("SHA256SUMS.gpg"))
            .arg(dir.join("SHA256SUMS"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(gpgv(), "the published pair verifies");
    assert!(dir.symlink_metadata().unwrap().file_type().is_symlink(), "DIR/demo is the link to a generation");
    // A publish that died before its switch left a half-made generation: boxes do not see it.
    let half_made = served.path().join("demo.generations/000009");
    std::fs::create_dir_all(&half_made).unwrap();
    std::fs::write(half_made.join("SHA256SUMS"), "half a list\n").unwrap();
    assert!(gpgv(), "the pair boxes see is untouched by a publish that died");
    // The list changed under its signature (by hand, or a copy of the tree cut short).
    let mut sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    sums.push_str(&format!("{}  micromirror_20200101.000000.efi\n", "0".repeat(64)));
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    assert!(!gpgv(), "the broken pair is refused");
    let said = build::publish::publish(&publication).unwrap();
    assert!(said.contains("repaired") && said.contains("left out 20200101.000000"), "{said}");
    assert!(gpgv(), "after the second publish the pair verifies again");
    assert!(!half_made.exists(), "the half-made generation is removed");
}
