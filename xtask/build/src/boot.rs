//! Stage 4: the boot files. The initramfs is made by the distro's own tool inside the tree
//! (initramfs-tools on Debian, dracut on AlmaLinux) with the hardware class's and QEMU's drivers; the
//! kernel, initramfs, command line and os-release (with the image's IMAGE_ID and IMAGE_VERSION)
//! are appended to systemd's EFI stub as one Unified Kernel Image, and systemd-boot, which
//! counts each new version's boots, is taken from the base or the build host.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::version::{Version, IMAGE_ID};
use schema::profile::{Distro, LoadedProfile};

use crate::cmd::{self, cmd};
use crate::progress;

/// Drivers every image carries besides its hardware class's: QEMU's (the boot tests run any
/// site's image), the file systems and efivarfs.
const COMMON_DRIVERS: &[&str] = &["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "ext4", "xfs", "efivarfs"];

/// Hardware watchdogs (QEMU's i6300esb, the T620's and T740's sp5100_tco, Intel's iTCO_wdt),
/// loaded before systemd takes over so its RuntimeWatchdogSec finds /dev/watchdog0.
pub const WATCHDOGS: &[&str] = &["i6300esb", "sp5100_tco", "iTCO_wdt"];

/// The storage and NIC drivers the box needs before its root is mounted: its hardware class's
/// (every class's when it names none), then the common ones.
pub fn initrd_drivers(site: &LoadedProfile) -> Vec<String> {
    let class = match site.profile.site.hardware_class() {
        Some(c) => c.drivers.clone(),
        None => schema::hardware::all_drivers(),
    };
    let mut v = class;
    for d in COMMON_DRIVERS {
        if !v.iter().any(|x| x == d) {
            v.push(d.to_string());
        }
    }
    v
}

const HOST_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const HOST_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What goes on the ESP: the loader and the version's UKI.
pub struct BootFiles {
    pub loader: Vec<u8>,
    pub uki: Vec<u8>,
}

/// The kernel command line: the root slot labelled with this version (so each UKI boots its own
/// root, whichever slot the updater wrote), the version for the updater, consoles on screen and
/// serial port, and a reboot ten seconds after a panic (nobody is there to press a key).
pub fn cmdline(site: &LoadedProfile, version: &Version) -> String {
    let mut c = format!(
        "root=PARTLABEL={} rw rootwait micromirror.version={version} console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=1",
        version.slot_label()
    );
    if site.profile.base.distro == Distro::Almalinux9 {
        // SELinux: the tree is not labelled at build time (no policy tools on the build host
        // run in it); /.autorelabel labels it on first boot, then /etc/selinux/config enforces.
        c.push_str(" selinux=1");
    }
    c
}

/// The UKI's .osrel: the base's os-release plus the image's identity, which systemd-boot sorts
/// entries by (newest IMAGE_VERSION first) and which the box reads back as its version.
pub fn os_release(base: &str, version: &Version) -> String {
    let mut text: String = base
        .lines()
        .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("IMAGE_ID={IMAGE_ID}\nIMAGE_VERSION={version}\n"));
    text
}

/// What marks a good boot: without it a new version could never be blessed and would always
/// roll back.
const BLESS_BOOT: &str = "usr/lib/systemd/systemd-bless-boot";

pub fn make_boot_files(site: &LoadedProfile, root: &Path, epoch: i64, version: &Version) -> Result<BootFiles> {
    if !root.join(BLESS_BOOT).exists() {
        bail!(
            "the base has no /{BLESS_BOOT} (Debian 12: package systemd-boot; AlmaLinux 9.2+: systemd-udev), \
             so no new version could ever be marked good: add the package to xtask/build/packages/"
        );
    }
    let stage = progress::stage("boot", "building the initramfs");
    let kver = kernel_version(root)?;
    let initrd_path = root.join("boot/initrd.micromirror");
    make_initramfs(site, root, &kver, epoch)?;
    let initrd = fs_err::read(&initrd_path).with_context(|| format!("reading {}", initrd_path.display()))?;
    // The initramfs lives in the UKI only; a copy in the root filesystem would be dead weight.
    fs_err::remove_file(&initrd_path)?;
    let kernel_path = kernel_image(root, &kver)?;
    let linux = fs_err::read(&kernel_path).with_context(|| format!("reading {}", kernel_path.display()))?;
    let base_release =
        fs_err::read_to_string(root.join("usr/lib/os-release")).context("reading the base's os-release")?;
    let os_release = os_release(&base_release, version);
    let stub_path = from_base_or_host(root, HOST_STUB);
    let stub = fs_err::read(&stub_path).with_context(|| format!("reading the EFI stub {}", stub_path.display()))?;
    let loader_path = from_base_or_host(root, HOST_LOADER);
    let loader =
        fs_err::read(&loader_path).with_context(|| format!("reading systemd-boot {}", loader_path.display()))?;
    let line = cmdline(site, version);
    stage.message("assembling the UKI");
    let uki = image::uki::build_uki(
        &stub,
        &image::uki::UkiParts {
            os_release: os_release.as_bytes(),
            cmdline: line.as_bytes(),
            initrd: &initrd,
            linux: &linux,
        },
    )?;
    stage.done(&format!(
        "UKI {} (kernel {kver}, initramfs {}), version {version}",
        progress::human_bytes(uki.len() as u64),
        progress::human_bytes(initrd.len() as u64)
    ));
    Ok(BootFiles { loader, uki })
}

fn kernel_version(root: &Path) -> Result<String> {
    let dir = root.join("usr/lib/modules");
    let mut versions: Vec<String> = fs_err::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.len() {
        1 => Ok(versions.remove(0)),
        0 => bail!("the base has no kernel (nothing in /usr/lib/modules)"),
        _ => bail!("the base has several kernels ({}); expected one", versions.join(", ")),
    }
}

fn kernel_image(root: &Path, kver: &str) -> Result<PathBuf> {
    let candidates = [root.join(format!("boot/vmlinuz-{kver}")), root.join(format!("usr/lib/modules/{kver}/vmlinuz"))];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| format!("no kernel image for {kver} in /boot or /usr/lib/modules"))
}

/// The base's own EFI binary (stub or loader) when the distro ships one, else the build host's.
fn from_base_or_host(root: &Path, host_path: &str) -> PathBuf {
    let in_tree = root.join(host_path.trim_start_matches('/'));
    if in_tree.exists() {
        in_tree
    } else {
        PathBuf::from(host_path)
    }
}

fn make_initramfs(site: &LoadedProfile, root: &Path, kver: &str, epoch: i64) -> Result<()> {
    let distro = site.profile.base.distro;
    let out = "/boot/initrd.micromirror";
    let command: Vec<String> = match distro {
        Distro::Debian12 => vec!["mkinitramfs".into(), "-o".into(), out.into(), kver.into()],
        Distro::Almalinux9 => vec![
            "dracut".into(),
            "--no-hostonly".into(),
            "--reproducible".into(),
            "--force".into(),
            "--add-drivers".into(),
            initrd_drivers(site).join(" "),
            "--force-drivers".into(),
            WATCHDOGS.join(" "),
            "--kver".into(),
            kver.into(),
            out.into(),
        ],
    };
    in_chroot(root, &command, &[("SOURCE_DATE_EPOCH", epoch.to_string())])
}

/// Runs a command inside the tree with /proc, /sys and /dev mounted, in a private mount
/// namespace so nothing stays mounted if we are interrupted.
pub fn in_chroot(root: &Path, command: &[String], env: &[(&str, String)]) -> Result<()> {
    let script = r#"set -e; r="$1"; shift
mount -t proc proc "$r/proc"; mount -t sysfs sys "$r/sys"; mount --rbind /dev "$r/dev"
exec chroot "$r" "$@""#;
    let sh = cmd::shell()?;
    let c = cmd!(sh, "unshare --mount --propagation private sh -c {script} sh {root} {command...}");
    cmd::run(c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").envs(env.iter().map(|(k, v)| (k, v)))).map(|_| ())
}
