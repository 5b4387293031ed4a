//! The pipeline without booting: the AlmaLinux base against a local signed RPM repository
//! (AlmaLinux's own repositories are unreachable here), reproducible bytes, and a failed build
//! that leaves the previous outputs alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{target, workspace};

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
    let list = std::fs::read_to_string(workspace().join("xtask/packages/almalinux-9.txt")).unwrap();
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
    let out = c.args(almalinux_packages()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let appstream = root.join("9/AppStream/x86_64/os");
    std::fs::create_dir_all(&appstream).unwrap();
    assert!(Command::new("createrepo_c").arg("--quiet").arg(&appstream).status().unwrap().success());
}

/// A scratch profiles folder with what profiles refer to: the real catalog and the CA files.
fn scratch_profiles(dir: &Path) -> PathBuf {
    let p = dir.join("profiles");
    std::fs::create_dir_all(&p).unwrap();
    for sub in ["projects", "certs", "keys"] {
        let status = Command::new("cp").arg("-r").arg(workspace().join("profiles").join(sub)).arg(&p).status().unwrap();
        assert!(status.success(), "copying profiles/{sub}");
    }
    p
}

/// A scratch profiles folder with one AlmaLinux site.
fn profiles(dir: &Path, mirror: &str, key: &str) -> PathBuf {
    let p = scratch_profiles(dir);
    let demo = std::fs::read_to_string(workspace().join("profiles/demo.toml")).unwrap();
    let alma = demo.replace("name = \"demo\"", "name = \"alma-lab\"").replace(
        "distro = \"debian-12\"",
        &format!("distro = \"almalinux-9\"\nmirror = \"{mirror}\"\ngpg_keys = [\"{key}\"]"),
    );
    std::fs::write(p.join("alma-lab.toml"), alma).unwrap();
    p
}

fn xtask_with_profiles(profiles: &Path, args: &[&str]) -> (bool, String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .env("MICROMIRROR_PROFILES", profiles)
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn archive_from(output: &str) -> PathBuf {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("base tree: "))
        .unwrap_or_else(|| panic!("no base tree in:\n{output}"));
    PathBuf::from(line.trim())
}

#[test]
fn almalinux_base_installs_with_dnf_from_a_signed_repository_and_refuses_unsigned_packages() {
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("signed");
    alma_mirror(&signed, true);
    let (_http, port) = serve(&signed);
    let url = format!("http://127.0.0.1:{port}");
    let p = profiles(dir.path(), &url, &format!("{url}/9/BaseOS/x86_64/os/RPM-GPG-KEY-test"));
    let (ok, out) = xtask_with_profiles(&p, &["image", "--site", "alma-lab", "--until", "base", "--refresh-base"]);
    assert!(ok, "{out}");
    let archive = archive_from(&out);
    let listing = Command::new("tar").args(["--zstd", "-tf"]).arg(&archive).output().unwrap();
    let files = String::from_utf8_lossy(&listing.stdout).into_owned();
    let _ = std::fs::remove_file(&archive);
    for pkg in ["kernel-core", "rsync-daemon", "NetworkManager", "dnf-automatic"] {
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
    let p2 = profiles(&dir.path().join("u"), &url2, &format!("{url2}/RPM-GPG-KEY-test"));
    let (ok, out) = xtask_with_profiles(&p2, &["image", "--site", "alma-lab", "--until", "base", "--refresh-base"]);
    assert!(!ok, "unsigned packages were installed:\n{out}");
    assert!(out.contains("dnf could not install the AlmaLinux base"), "{out}");
    assert!(
        out.to_lowercase().contains("gpg") || out.to_lowercase().contains("signature") || out.contains("not signed"),
        "{out}"
    );
}

#[test]
fn an_unreachable_package_mirror_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = profiles(dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9/key");
    let (ok, out) = xtask_with_profiles(&p, &["image", "--site", "alma-lab", "--until", "base"]);
    assert!(!ok);
    assert!(
        out.contains("cannot reach the baseos repository: http://127.0.0.1:9/9/BaseOS/x86_64/os/repodata/repomd.xml"),
        "{out}"
    );
    assert!(out.contains("base.mirror"), "{out}");
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn two_builds_of_one_profile_give_identical_images_and_a_failed_build_keeps_the_last() {
    let image = e2e::build_image("demo").unwrap();
    let first = sha256(&image);
    let manifest = std::fs::read_to_string(image.with_file_name("manifest.json")).unwrap();
    let update = image.with_file_name("update");
    let signed = |name: &str| std::fs::read(update.join(name)).unwrap_or_else(|e| panic!("update/{name}: {e}"));
    let (sums, signature) = (signed("SHA256SUMS"), signed("SHA256SUMS.gpg"));
    // The second build also writes the .img.zst (concatenated frames, the update's root.zst
    // among them): it must restore the image byte for byte.
    e2e::xtask(&["image", "--site", "demo"]).unwrap();
    assert_eq!(sha256(&image), first, "the second build differs from the first");
    let zst = image.with_extension("img.zst");
    let restored =
        Command::new("sh").arg("-c").arg(format!("zstd -dc {} | sha256sum", zst.display())).output().unwrap();
    let restored = String::from_utf8_lossy(&restored.stdout).split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(restored, first, "the .img.zst does not restore the image");
    assert_eq!(signed("SHA256SUMS"), sums, "the update's artifacts differ between builds");
    assert_eq!(signed("SHA256SUMS.gpg"), signature, "the same key and inputs give the same signature");
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(v["artifacts"][0]["sha256"], first, "the manifest names the image's hash");
    assert!(v["packages"]["systemd"].is_string(), "the manifest lists package versions");

    // A profile that fails half-way (at the overlay) leaves target/images/demo as it was.
    let dir = tempfile::tempdir().unwrap();
    let p = scratch_profiles(dir.path());
    let demo = std::fs::read_to_string(workspace().join("profiles/demo.toml")).unwrap();
    std::fs::write(p.join("demo.toml"), demo.replace("timezone = \"UTC\"", "timezone = \"Mars/Olympus_Mons\""))
        .unwrap();
    let (ok, out) = xtask_with_profiles(&p, &["image", "--site", "demo", "--no-compress"]);
    assert!(!ok, "{out}");
    assert!(out.contains("Mars/Olympus_Mons"), "{out}");
    let outputs = target().join("images/demo");
    assert_eq!(sha256(&outputs.join("demo.img")), first, "the failed build touched the last image");
    let names: Vec<String> =
        std::fs::read_dir(&outputs).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(
        names.iter().all(|n| ["demo.img", "demo.img.zst", "manifest.json", "update"].contains(&n.as_str())),
        "partial files left: {names:?}"
    );
}

#[test]
fn an_ipv6_only_site_renders_its_network_and_firewall_from_the_profile() {
    let out = e2e::xtask(&["image", "--site", "lab6", "--until", "overlay"]).unwrap();
    let root = PathBuf::from(
        out.lines().find_map(|l| l.strip_prefix("tree with overlay: ")).unwrap_or_else(|| panic!("{out}")).trim(),
    );
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
    let p = scratch_profiles(dir.path());
    let demo = std::fs::read_to_string(workspace().join("profiles/demo.toml")).unwrap();
    let classes = ["t620", "t740", "r220"];
    for class in classes {
        let text = demo
            .replace("name = \"demo\"", &format!("name = \"hw-{class}\""))
            .replace("disk_gb = 64", &format!("disk_gb = 64\nhardware = \"{class}\""));
        std::fs::write(p.join(format!("hw-{class}.toml")), text).unwrap();
    }
    let sites: Vec<String> = classes.iter().map(|c| format!("hw-{c}")).collect();
    let out =
        e2e::xtask_with(&["image", "--sites", &sites.join(","), "--no-compress"], &[("MICROMIRROR_PROFILES", &p)])
            .unwrap_or_else(|e| panic!("{e:#}"));
    for site in &sites {
        assert!(
            out.lines().any(|l| l.starts_with(site.as_str()) && l.ends_with(" ok")),
            "{site} not in the table as built:\n{out}"
        );
    }
    let modules = |site: &str| {
        let update = target().join("images").join(site).join("update");
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
    for site in &sites {
        let _ = std::fs::remove_dir_all(target().join("images").join(site));
    }
}
