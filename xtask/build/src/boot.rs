//! Stage 4: the boot files. The initramfs is made by the distro's own tool inside the tree
//! (initramfs-tools on Debian, dracut on AlmaLinux) with the hardware class's and QEMU's drivers,
//! and the read-only root's: dm-verity, EROFS and overlayfs (`prepare`, before the root image
//! is made, since the initramfs is built in the tree and then taken out of it). Once the root
//! image's hash is known (`slot_image`), the kernel, initramfs, command line and os-release (with
//! the image's IMAGE_ID and IMAGE_VERSION) are appended to systemd's EFI stub as one Unified
//! Kernel Image (`BootParts::uki`); systemd-boot, which counts each new version's boots, is
//! taken from the base or the build host.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::version::{Version, IMAGE_ID};
use schema::profile::{Distro, LoadedProfile};

use crate::cmd::{self, cmd};
use crate::progress;
use crate::slot_image::Verity;

/// Drivers every image carries besides its hardware class's and `ROOT_OPENERS`: QEMU's (the boot
/// tests run any site's image), the file systems, efivarfs, and a USB stick's (the USB installer
/// boots this UKI from one).
const COMMON_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "ext4",
    "xfs",
    "efivarfs",
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
    "sd_mod",
];

/// The modules the initramfs loads before udev's coldplug, whatever the hardware: what opens the
/// read-only root (the local-top script runs veritysetup and mounts EROFS, then lays overlayfs
/// over /var) and sha256_ssse3, so verity hashes with the CPU's SSSE3/AVX/SHA instructions
/// rather than generic C. Every other driver of `initrd_drivers` is
/// only carried, and udev loads it when its hardware is there: loading a T740's and an R220's
/// drivers on a T620 (or under TCG) costs seconds of every boot.
pub const ROOT_OPENERS: &[&str] = &["sha256_ssse3", "dm_verity", "erofs", "overlay"];

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
    for d in COMMON_DRIVERS.iter().chain(ROOT_OPENERS) {
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

/// The kernel command line: the root is this version's slot opened as a dm-verity device (the
/// initramfs does it: `micromirror.slot` names the slot by label, so each UKI boots its own
/// root whichever slot the updater wrote; `micromirror.roothash` and `micromirror.hashoffset`
/// pin its bytes), read-only EROFS; the version for the updater; consoles on screen and serial
/// port; and a reboot ten seconds after a panic (nobody is there to press a key).
pub fn cmdline(site: &LoadedProfile, version: &Version, verity: &Verity) -> String {
    let mut c = format!(
        "root=/dev/mapper/root rootfstype=erofs ro micromirror.slot={} micromirror.roothash={} micromirror.hashoffset={} \
         micromirror.version={version} console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=1",
        version.slot_label(),
        verity.root_hash,
        verity.hash_offset
    );
    if site.profile.base.distro == Distro::Almalinux9 {
        // SELinux: the tree is labelled at build time (mkfs.erofs --file-contexts), and
        // /etc/selinux/config enforces.
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

/// What the UKI is made of, gathered from the tree before the root image is made.
pub struct BootParts {
    loader: Vec<u8>,
    stub: Vec<u8>,
    linux: Vec<u8>,
    initrd: Vec<u8>,
    base_release: String,
    kver: String,
}

/// Builds the initramfs in the tree (and takes it out again: it lives in the UKI only) and
/// reads the kernel, the EFI stub and systemd-boot.
pub fn prepare(site: &LoadedProfile, root: &Path, epoch: i64) -> Result<BootParts> {
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
    fs_err::remove_file(&initrd_path)?;
    let kernel_path = kernel_image(root, &kver)?;
    let linux = fs_err::read(&kernel_path).with_context(|| format!("reading {}", kernel_path.display()))?;
    let base_release =
        fs_err::read_to_string(root.join("usr/lib/os-release")).context("reading the base's os-release")?;
    let stub_path = from_base_or_host(root, HOST_STUB);
    let stub = fs_err::read(&stub_path).with_context(|| format!("reading the EFI stub {}", stub_path.display()))?;
    let loader_path = from_base_or_host(root, HOST_LOADER);
    let loader =
        fs_err::read(&loader_path).with_context(|| format!("reading systemd-boot {}", loader_path.display()))?;
    stage.done(&format!("initramfs {} (kernel {kver})", progress::human_bytes(initrd.len() as u64)));
    Ok(BootParts { loader, stub, linux, initrd, base_release, kver })
}

impl BootParts {
    /// The version's UKI, its command line pinning the root image by `verity`.
    pub fn uki(self, site: &LoadedProfile, version: &Version, verity: &Verity) -> Result<BootFiles> {
        let stage = progress::stage("boot", "assembling the UKI");
        let os_release = os_release(&self.base_release, version);
        let line = cmdline(site, version, verity);
        let uki = image::uki::build_uki(
            &self.stub,
            &image::uki::UkiParts {
                os_release: os_release.as_bytes(),
                cmdline: line.as_bytes(),
                initrd: &self.initrd,
                linux: &self.linux,
            },
        )?;
        stage.done(&format!(
            "UKI {} (kernel {}, initramfs {}), version {version}",
            progress::human_bytes(uki.len() as u64),
            self.kver,
            progress::human_bytes(self.initrd.len() as u64)
        ));
        Ok(BootFiles { loader: self.loader, uki })
    }
}

pub(crate) fn kernel_version(root: &Path) -> Result<String> {
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
