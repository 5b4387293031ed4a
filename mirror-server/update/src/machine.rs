//! Where the updater finds the box's parts: the whole disk (found from the running root), the
//! ESP's mount point, its state folder, the kernel command line (which names the running
//! version: /etc/os-release belongs to the distribution's packages and may change under a live
//! package update), the keyring, the machine id kept on the state partition. Every path can be
//! pointed elsewhere, which is how the host tests run the real code on image files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::version::Version;
use schema::paths::Paths;

#[derive(Debug, Clone)]
pub struct Machine {
    /// The whole disk holding both root slots (a block device, or an image file in tests).
    pub disk: PathBuf,
    pub esp: PathBuf,
    /// The updater's own state: status, downloads.
    pub state: PathBuf,
    pub cmdline: PathBuf,
    pub keyring: PathBuf,
    pub site_config: PathBuf,
    /// What reboots the box.
    pub reboot: Vec<String>,
}

pub const KERNEL_ARG: &str = "micromirror.version=";

impl Machine {
    /// The appliance's paths, with the disk found from the mounted root.
    pub fn appliance(disk: Option<PathBuf>) -> Result<Machine> {
        let paths = Paths::appliance();
        let disk = match disk {
            Some(d) => d,
            None => disk_of_root().context("finding the disk the box booted from (or pass --disk)")?,
        };
        Ok(Machine {
            disk,
            esp: PathBuf::from("/efi"),
            state: paths.update_dir(),
            cmdline: PathBuf::from("/proc/cmdline"),
            keyring: paths.update_keyring(),
            site_config: paths.site_profile(),
            reboot: vec!["systemctl".into(), "reboot".into()],
        })
    }

    /// The version the box runs, from `micromirror.version=` on the kernel command line.
    pub fn running(&self) -> Result<Version> {
        let line = std::fs::read_to_string(&self.cmdline)
            .with_context(|| format!("reading the kernel command line {}", self.cmdline.display()))?;
        running_from_cmdline(&line).with_context(|| {
            format!(
                "{} names no {KERNEL_ARG}VERSION: this box was not booted from an A/B image's UKI",
                self.cmdline.display()
            )
        })
    }

    /// The adoption record (`Paths::adoption_file`): beside the updater's folder in the state.
    pub fn adoption_file(&self) -> PathBuf {
        self.state.with_file_name("adoption.json")
    }

    pub fn downloads(&self) -> PathBuf {
        self.state.join("downloads")
    }
}

pub fn running_from_cmdline(line: &str) -> Option<Version> {
    line.split_whitespace().find_map(|arg| arg.strip_prefix(KERNEL_ARG)).and_then(Version::parse)
}

/// The whole-disk device under the root filesystem: /dev/vda2 → /dev/vda, via sysfs. The root
/// is found by its device number (mountinfo's third field), not by the name it was mounted
/// from: the initramfs makes /dev/mapper/root as a node of its own, not udev's link to dm-0.
fn disk_of_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let number = root_device_number(&mounts).context("no root mount in /proc/self/mountinfo")?;
    let mut sys = std::fs::canonicalize(Path::new("/sys/dev/block").join(number))
        .with_context(|| format!("finding the root's device {number} in /sys/dev/block"))?;
    // The root is the slot opened through dm-verity: the partition is the device under it.
    if let Some(under) = only_slave(&sys) {
        sys = std::fs::canonicalize(&under).with_context(|| format!("resolving {}", under.display()))?;
    }
    if !sys.join("partition").exists() {
        bail!("the root (device {number}, {}) is not a partition", sys.display());
    }
    let parent = sys.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).context("no parent disk")?;
    Ok(PathBuf::from("/dev").join(parent))
}

/// The "major:minor" of the file system mounted at / in a mountinfo text.
fn root_device_number(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields.get(4) == Some(&"/")).then(|| fields.get(2).copied()).flatten()
    })
}

/// The one device a device-mapper device is made of (/sys/block/dm-0/slaves/vda2), if it is one.
fn only_slave(sys: &Path) -> Option<PathBuf> {
    let mut slaves = std::fs::read_dir(sys.join("slaves")).ok()?.flatten().map(|e| e.path());
    let first = slaves.next()?;
    slaves.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_found_by_its_device_number() {
        let mountinfo = "22 1 254:0 / / ro,relatime - erofs /dev/mapper/root ro\n\
                         23 22 0:21 / /var rw - overlay overlay rw\n";
        assert_eq!(root_device_number(mountinfo), Some("254:0"));
        assert_eq!(root_device_number("23 22 0:21 / /var rw - overlay overlay rw\n"), None);
    }

    #[test]
    fn the_running_version_comes_from_the_command_line() {
        let line = "root=PARTLABEL=micromirror_20261201.103714 rw micromirror.version=20261201.103714 quiet\n";
        assert_eq!(running_from_cmdline(line).map(|v| v.to_string()), Some("20261201.103714".into()));
        assert_eq!(running_from_cmdline("root=/dev/vda2 rw"), None);
        assert_eq!(running_from_cmdline("micromirror.version=garbage"), None);
    }
}
