//! The "old box" of the adoption tests: a Debian 12 stand-in laid out exactly like the fleet's
//! kickstart disks (AlmaLinux cannot be had here): GPT with an ESP of 600 MiB holding its own
//! loader (a UKI where AlmaLinux has shim and GRUB) and its own UEFI boot entry (made on its first
//! boot, as the installer makes AlmaLinux's), /boot XFS of 1 GiB, the root XFS holding
//! /data/mirror (files of known hashes, owned by `mirror`, served by nginx), and a 2 GiB swap
//! placed last, after the root, so nothing may assume the order. Its mirror data is the demo's
//! fixture projects as the tests' upstream first publishes them (`upstream_v1`). It has the admin user `mirror`
//! with passwordless sudo and the demo's test key, sshd, and the demo profile's addresses.
//!
//! Built once per change of this file (its hash names the disk) under target/e2e/standin/, as
//! root (loop devices over the disk file); a test boots a copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::target;

pub const ESP_MIB: u64 = 600;
pub const BOOT_MIB: u64 = 1024;
pub const ROOT_MIB: u64 = 6144;
pub const SWAP_MIB: u64 = 2048;
/// The console line its first-boot unit prints once sshd and nginx are up.
pub const READY: &str = "STANDIN-READY";

const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    "openssh-server",
    "sudo",
    "xfsprogs",
    "efibootmgr",
    // sfdisk: in util-linux on AlmaLinux, in its own package on Debian.
    "fdisk",
    "nginx-light",
    "iproute2",
    "procps",
];

/// The demo's three fixture projects as the upstream publishes them first, which is what the
/// stand-in's /data/mirror holds: the same bytes and the same times (rsync's quick check
/// compares size and mtime), so a sync after adoption moves only what the upstream changed since.
pub const PROJECTS: [&str; 3] = ["fixture-debian", "fixture-rpm", "fixture-arch"];
const FIXED_MTIME: u64 = 1_700_000_000;

/// The registration of the stand-in's certbot account (adopt keeps it in the new state).
pub const STANDIN_REGR: &str = "{\"body\": {}, \"uri\": \"https://acme-v02.api.letsencrypt.org/acme/acct/123456\"}\n";

pub fn upstream_v1(dir: &Path) {
    use testkit::fixtures::{bytes, publish_debian, write_file};
    publish_debian(&dir.join("fixture-debian"), 1, 200_000);
    write_file(&dir.join("fixture-rpm/repodata/repomd.xml"), b"<?xml version=\"1.0\"?>\n<repomd>v1</repomd>\n");
    write_file(&dir.join("fixture-rpm/Packages/a/app-1.0.noarch.rpm"), &bytes(1 << 20, 42));
    write_file(&dir.join("fixture-arch/lastsync"), b"1700000000\n");
    write_file(&dir.join("fixture-arch/core/os/x86_64/core.db"), &bytes(5000, 7));
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(FIXED_MTIME);
    for (path, _) in testkit::fixtures::snapshot(dir) {
        let file = std::fs::File::options().write(true).open(dir.join(path)).expect("a fixture file");
        file.set_modified(when).expect("setting a fixture's mtime");
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    image::digest::sha256_hex(bytes).expect("hashing bytes in memory")
}

/// The stand-in's disk, built when this file changed since the last build.
pub fn disk() -> PathBuf {
    let key = &sha256_hex(include_str!("standin.rs").as_bytes())[..12];
    let dir = target().join("e2e/standin");
    std::fs::create_dir_all(&dir).expect("target/e2e/standin");
    let lock = std::fs::File::create(dir.join(".building")).expect("the stand-in's lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("locking the stand-in's build");
    let disk = dir.join(format!("standin-{key}.img"));
    if !disk.exists() {
        let partial = dir.join(format!(".standin-{key}.partial"));
        build(&partial).unwrap_or_else(|e| panic!("building the stand-in disk: {e:#}"));
        std::fs::rename(&partial, &disk).expect("storing the stand-in disk");
        remove_other_builds(&dir, &disk);
    }
    disk
}

/// Each stand-in disk holds gigabytes: one built from an older version of this file is never
/// used again.
fn remove_other_builds(dir: &Path, keep: &Path) {
    for entry in std::fs::read_dir(dir).expect("target/e2e/standin").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with("standin-") || name.starts_with(".standin-");
        if stale && entry.path() != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn run(c: &mut Command) -> anyhow::Result<String> {
    let out = c.output().map_err(|e| anyhow::anyhow!("{c:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!("{c:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loop device over a byte range of the disk file, detached when dropped.
struct Loop(String);

impl Loop {
    fn over(disk: &Path, offset_mib: u64, size_mib: u64) -> anyhow::Result<Loop> {
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--offset", &(offset_mib << 20).to_string()])
            .args(["--sizelimit", &(size_mib << 20).to_string()])
            .arg(disk))?;
        Ok(Loop(dev.trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Unmounts when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.0).status();
    }
}

fn uuid_of(dev: &str) -> anyhow::Result<String> {
    Ok(run(Command::new("blkid").args(["-o", "value", "-s", "UUID", dev]))?.trim().to_string())
}

fn build(disk: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(disk);
    let total_mib = 1 + ESP_MIB + BOOT_MIB + ROOT_MIB + SWAP_MIB + 1;
    std::fs::File::create(disk)?.set_len(total_mib << 20)?;
    // ESP, /boot, / , swap: swap last, as some of the fleet's boxes have it.
    let (esp_at, boot_at) = (1, 1 + ESP_MIB);
    let (root_at, swap_at) = (boot_at + BOOT_MIB, boot_at + BOOT_MIB + ROOT_MIB);
    let table = format!(
        "label: gpt\n\
         start={}, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System Partition\"\n\
         start={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         start={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         start={}, size={}, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n",
        esp_at * 2048,
        ESP_MIB * 2048,
        boot_at * 2048,
        BOOT_MIB * 2048,
        root_at * 2048,
        ROOT_MIB * 2048,
        swap_at * 2048,
        SWAP_MIB * 2048
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("sfdisk's stdin"), table.as_bytes())?;
    anyhow::ensure!(sfdisk.wait()?.success(), "sfdisk could not write the stand-in's table");

    let boot = Loop::over(disk, boot_at, BOOT_MIB)?;
    let root = Loop::over(disk, root_at, ROOT_MIB)?;
    let swap = Loop::over(disk, swap_at, SWAP_MIB)?;
    run(Command::new("mkfs.xfs").args(["-q", "-L", "boot", &boot.0]))?;
    run(Command::new("mkfs.xfs").args(["-q", "-L", "root", &root.0]))?;
    run(Command::new("mkswap").args(["-q", &swap.0]))?;
    let work = tempfile::Builder::new().prefix("standin-").tempdir_in(target())?;
    let dir = work.path().join("root");
    std::fs::create_dir_all(&dir)?;
    run(Command::new("mount").arg(&root.0).arg(&dir))?;
    let mounted = Mounted(dir.clone());
    run(Command::new("mmdebstrap")
        .args(["--variant=minbase", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr"])
        .args(["--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .args(["bookworm"])
        .arg(&dir)
        .arg("deb http://deb.debian.org/debian bookworm main"))?;

    // /boot on its own XFS, as the kickstart makes it: the kernel and initramfs move there.
    let kernel = only_file(&dir.join("boot"), "vmlinuz-")?;
    let initrd = only_file(&dir.join("boot"), "initrd.img-")?;
    let (linux, initramfs) = (std::fs::read(&kernel)?, std::fs::read(&initrd)?);
    let boot_dir = work.path().join("boot");
    std::fs::create_dir_all(&boot_dir)?;
    run(Command::new("mount").arg(&boot.0).arg(&boot_dir))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "cp -a {0}/boot/. {1}/ && rm -rf {0}/boot/*",
        dir.display(),
        boot_dir.display()
    )))?;
    run(Command::new("umount").arg(&boot_dir))?;

    let (root_uuid, boot_uuid, swap_uuid) = (uuid_of(&root.0)?, uuid_of(&boot.0)?, uuid_of(&swap.0)?);
    let esp_volume: u32 = 0x7a3b_1c2d;
    configure(&dir, &root_uuid, &boot_uuid, &swap_uuid, esp_volume)?;
    drop(mounted);

    // The ESP: its loader (a UKI booting the root by UUID) at AlmaLinux's path and the
    // removable-media path, which OVMF boots before the box has made its own entry.
    let stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")?;
    let cmdline = format!("root=UUID={root_uuid} ro rootfstype=xfs console=ttyS0,115200 net.ifnames=1");
    let os_release = b"NAME=\"Stand-in AlmaLinux\"\nID=debian\nPRETTY_NAME=\"Debian 12 standing in for AlmaLinux 9\"\n";
    let uki = image::uki::build_uki(
        &stub,
        &image::uki::UkiParts { os_release, cmdline: cmdline.as_bytes(), initrd: &initramfs, linux: &linux },
    )?;
    let mut files = [
        image::esp::EspFile { path: "EFI/BOOT/BOOTX64.EFI", data: &uki },
        image::esp::EspFile { path: "EFI/almalinux/grubx64.efi", data: &uki },
    ];
    let esp = image::esp::build_esp((ESP_MIB << 20) as usize, esp_volume, &mut files)?;
    let file = std::fs::OpenOptions::new().write(true).open(disk)?;
    std::os::unix::fs::FileExt::write_all_at(&file, &esp, esp_at << 20)?;
    file.sync_all()?;
    Ok(())
}

fn only_file(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    anyhow::ensure!(found.len() == 1, "{} holds {} files named {prefix}*", dir.display(), found.len());
    Ok(found.remove(0))
}

/// Writes a file of the tree at `root`. A symlink there is replaced, never followed: the
/// packages' absolute links (nginx's sites-enabled/default) would lead out to the host's files.
fn write(root: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().expect("a parent"))?;
    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&p)?;
    }
    std::fs::write(&p, text)?;
    Ok(())
}

fn configure(dir: &Path, root_uuid: &str, boot_uuid: &str, swap_uuid: &str, esp_volume: u32) -> anyhow::Result<()> {
    let esp_uuid = format!("{:04X}-{:04X}", esp_volume >> 16, esp_volume & 0xffff);
    write(
        dir,
        "/etc/fstab",
        &format!(
            "UUID={root_uuid} / xfs defaults 0 0\nUUID={boot_uuid} /boot xfs defaults 0 0\n\
             UUID={esp_uuid} /boot/efi vfat umask=0077,shortname=winnt 0 2\nUUID={swap_uuid} none swap defaults 0 0\n"
        ),
    )?;
    std::fs::create_dir_all(dir.join("boot/efi"))?;
    write(dir, "/etc/hostname", "oldbox\n")?;
    write(dir, "/etc/resolv.conf", "nameserver 192.0.2.3\n")?;
    write(
        dir,
        "/etc/systemd/network/10-wan.network",
        "[Match]\nDriver=virtio_net\n\n[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\n\
         Address=2001:db8:0:1::10/64\nGateway=2001:db8:0:1::1\nDNS=192.0.2.3\nIPv6AcceptRA=no\n",
    )?;
    write(dir, "/etc/sudoers.d/mirror", "mirror ALL=(ALL) NOPASSWD: ALL\n")?;
    write(dir, "/etc/ssh/sshd_config.d/keys-only.conf", "PasswordAuthentication no\nPermitRootLogin no\n")?;
    write(
        dir,
        "/etc/nginx/sites-enabled/default",
        "server {\n    listen 80 default_server;\n    listen [::]:80 default_server;\n    root /data/mirror;\n    autoindex on;\n}\n",
    )?;
    // The installer's boot entry, made once from the running system (efivarfs is only there).
    write(
        dir,
        "/usr/local/sbin/standin-boot-entry",
        "#!/bin/sh\nset -e\nefibootmgr -c -d /dev/vda -p 1 -L AlmaLinux -l '\\EFI\\almalinux\\grubx64.efi'\n\
         touch /var/lib/standin-boot-entry\n",
    )?;
    run(Command::new("chmod").arg("755").arg(dir.join("usr/local/sbin/standin-boot-entry")))?;
    write(
        dir,
        "/etc/systemd/system/standin-boot-entry.service",
        "[Unit]\nDescription=The stand-in's own UEFI boot entry, as AlmaLinux's installer leaves one\n\
         ConditionPathExists=!/var/lib/standin-boot-entry\n\n[Service]\nType=oneshot\n\
         ExecStart=/usr/local/sbin/standin-boot-entry\n\n[Install]\nWantedBy=multi-user.target\n",
    )?;
    write(
        dir,
        "/etc/systemd/system/standin-ready.service",
        &format!(
            "[Unit]\nDescription=Tell the console the stand-in is up\nAfter=ssh.service nginx.service standin-boot-entry.service\n\n\
             [Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo {READY} > /dev/ttyS0'\n\n[Install]\nWantedBy=multi-user.target\n"
        ),
    )?;
    // certbot's account as the playbook's certbot leaves it (a JWK RSA key, its registration).
    let account = "/etc/letsencrypt/accounts/acme-v02.api.letsencrypt.org/directory/5f0c8d2e";
    write(dir, &format!("{account}/regr.json"), STANDIN_REGR)?;
    write(dir, &format!("{account}/private_key.json"), "{\"kty\": \"RSA\", \"n\": \"standin\", \"e\": \"AQAB\"}\n")?;
    let key = std::fs::read_to_string(crate::workspace().join("tests/fixtures/demo_ed25519.pub"))?;
    let chroot = |args: &[&str]| run(Command::new("chroot").arg(dir).args(args)).map(|_| ());
    chroot(&["useradd", "--create-home", "--shell", "/bin/bash", "mirror"])?;
    chroot(&["systemctl", "enable", "systemd-networkd", "standin-boot-entry", "standin-ready", "serial-getty@ttyS0"])?;
    write(dir, "/home/mirror/.ssh/authorized_keys", &key)?;
    upstream_v1(&dir.join("data/mirror"));
    chroot(&["chown", "-R", "mirror:mirror", "/home/mirror", "/data/mirror"])?;
    chroot(&["chmod", "700", "/home/mirror/.ssh"])?;
    chroot(&["chmod", "755", "/data", "/data/mirror"])?;
    Ok(())
}
