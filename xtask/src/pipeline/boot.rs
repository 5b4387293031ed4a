//! Stage 4: the Unified Kernel Image. The initramfs is made by the distro's own tool inside the
//! tree (initramfs-tools on Debian, dracut on AlmaLinux) with the T620's and QEMU's drivers; the
//! kernel, initramfs, command line and os-release are then appended to systemd's EFI stub.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use schema::profile::{Distro, LoadedProfile};

use crate::cmd::{self, cmd};
use crate::progress;

/// Storage, filesystem and NIC drivers the box needs before the root is mounted: the T620's
/// (ahci, sd_mod, r8169) and QEMU's (virtio) and common NVMe for bigger boxes.
pub const INITRD_DRIVERS: &[&str] = &[
    "ahci",
    "sd_mod",
    "nvme",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "r8169",
    "ext4",
    "xfs",
    "efivarfs",
];

const HOST_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The kernel command line: root by partition UUID, consoles on screen and serial port, and a
/// reboot ten seconds after a panic (nobody is there to press a key).
pub fn cmdline(site: &LoadedProfile) -> String {
    let root_uuid = image::disk::seeded_uuid(&site.profile.site.name, image::disk::ROOT_LABEL);
    let mut c =
        format!("root=PARTUUID={root_uuid} rw rootwait console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=1");
    if site.profile.base.distro == Distro::Almalinux9 {
        // SELinux: the tree is not labelled at build time (no policy tools on the build host
        // run in it); /.autorelabel labels it on first boot, then /etc/selinux/config enforces.
        c.push_str(" selinux=1");
    }
    c
}

pub fn make_uki(site: &LoadedProfile, root: &Path, epoch: i64) -> Result<Vec<u8>> {
    let stage = progress::stage("boot", "building the initramfs");
    let kver = kernel_version(root)?;
    let distro = site.profile.base.distro;
    let initrd_path = root.join("boot/initrd.micromirror");
    make_initramfs(distro, root, &kver, epoch)?;
    let initrd = fs_err::read(&initrd_path).with_context(|| format!("reading {}", initrd_path.display()))?;
    // The initramfs lives in the UKI only; a copy in the root filesystem would be dead weight.
    fs_err::remove_file(&initrd_path)?;
    let kernel_path = kernel_image(root, &kver)?;
    let linux = fs_err::read(&kernel_path).with_context(|| format!("reading {}", kernel_path.display()))?;
    let os_release = fs_err::read(root.join("usr/lib/os-release")).context("reading the base's os-release")?;
    let stub_path = stub(root);
    let stub = fs_err::read(&stub_path).with_context(|| format!("reading the EFI stub {}", stub_path.display()))?;
    let line = cmdline(site);
    stage.message("assembling the UKI");
    let uki = image::uki::build_uki(
        &stub,
        &image::uki::UkiParts { os_release: &os_release, cmdline: line.as_bytes(), initrd: &initrd, linux: &linux },
    )?;
    stage.done(&format!(
        "UKI {} (kernel {kver}, initramfs {})",
        progress::human_bytes(uki.len() as u64),
        progress::human_bytes(initrd.len() as u64)
    ));
    Ok(uki)
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

/// The base's own stub when the distro ships one, else the build host's (plain EFI either way).
fn stub(root: &Path) -> PathBuf {
    let in_tree = root.join(HOST_STUB.trim_start_matches('/'));
    if in_tree.exists() {
        in_tree
    } else {
        PathBuf::from(HOST_STUB)
    }
}

fn make_initramfs(distro: Distro, root: &Path, kver: &str, epoch: i64) -> Result<()> {
    let out = "/boot/initrd.micromirror";
    let command: Vec<String> = match distro {
        Distro::Debian12 => vec!["mkinitramfs".into(), "-o".into(), out.into(), kver.into()],
        Distro::Almalinux9 => vec![
            "dracut".into(),
            "--no-hostonly".into(),
            "--reproducible".into(),
            "--force".into(),
            "--add-drivers".into(),
            INITRD_DRIVERS.join(" "),
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
