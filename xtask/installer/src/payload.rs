//! What the stick carries, as `cargo xtask installer` writes it and the installer reads it.
//! The stick's partitions, by GPT label:
//! - `ESP_LABEL`: FAT; \EFI\BOOT\BOOTX64.EFI is the site's UKI with the installer's command
//!   line, and `FOLDER/` holds this payload's description (`MANIFEST`), the installer program
//!   and the files the box's ESP gets (systemd-boot, its settings, the site's UKI);
//! - `ROOT_LABEL`: the site's root image (EROFS and its hash tree), the installer's own root
//!   and the bytes written into root slot A;
//! - `DISK_LABEL`: the site's disk image up to the end of slot A (GPT, ESP, slot A), written
//!   over a disk that cannot be kept (the clean flash), with `BACKUP_GPT` at its place.

use serde::{Deserialize, Serialize};

pub const ESP_LABEL: &str = "mminstall-esp";
pub const ROOT_LABEL: &str = "mminstall-root";
pub const DISK_LABEL: &str = "mminstall-disk";
/// The folder on the stick's ESP.
pub const FOLDER: &str = "micromirror-installer";
pub const MANIFEST: &str = "installer.json";
pub const PROGRAM: &str = "micromirror-installer";
pub const UKI: &str = "uki.efi";
pub const LOADER: &str = "systemd-bootx64.efi";
pub const LOADER_CONF: &str = "loader.conf";
pub const BACKUP_GPT: &str = "gpt-backup.bin";
/// What the installer's command line adds to the site's: this mode, its own target (no mirror
/// service, no network, no login), and none of the box's partitions made or mounted (the
/// state and data partitions belong to the disk being converted, not to the stick).
pub const CMDLINE_EXTRA: &str = "micromirror.installer systemd.unit=micromirror-installer.target \
     systemd.mask=systemd-repart.service systemd.mask=efi.mount systemd.mask=srv-mirror.mount \
     systemd.mask=var-lib-micromirror.mount systemd.mask=var-log-journal.mount \
     systemd.mask=micromirror-state.service";

/// A run of bytes with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub site: String,
    pub hostname: String,
    pub version: String,
    /// The site's profile (TOML), for the checks adopt makes.
    pub profile: String,
    /// The root image on `ROOT_LABEL`.
    pub root_image: Blob,
    /// The head of the site's disk image on `DISK_LABEL`.
    pub disk_head: Blob,
    /// Where the image's backup GPT (`BACKUP_GPT`) lies, and its hash.
    pub backup_gpt_offset: u64,
    pub backup_gpt: Blob,
    /// The site's disk image's size: a disk for a clean flash holds at least this.
    pub image_size: u64,
    /// Free bytes a kept ESP must have for systemd-boot and the UKIs.
    pub esp_needs: u64,
}

impl Payload {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Payload, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The installer's kernel command line from the site's: its root is the stick's copy of the
/// root image (a slot of the box's disk may carry the version's label), in installer mode.
pub fn installer_cmdline(site_cmdline: &str) -> String {
    let mut args: Vec<String> = site_cmdline
        .split_whitespace()
        .map(|a| if a.starts_with("micromirror.slot=") { format!("micromirror.slot={ROOT_LABEL}") } else { a.into() })
        .collect();
    args.extend(CMDLINE_EXTRA.split_whitespace().map(String::from));
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installer_boots_the_sticks_root_in_its_own_mode() {
        let site = "root=/dev/mapper/root ro micromirror.slot=micromirror_20261206.120000 micromirror.roothash=ab \
                    console=ttyS0,115200n8\n";
        let line = installer_cmdline(site);
        assert!(line.contains("micromirror.slot=mminstall-root ") && !line.contains("micromirror_2026"), "{line}");
        assert!(line.contains("micromirror.roothash=ab") && line.contains("console=ttyS0,115200n8"), "{line}");
        assert!(line.contains(" micromirror.installer systemd.unit=micromirror-installer.target "), "{line}");
        assert!(line.contains("systemd.mask=systemd-repart.service") && line.ends_with("micromirror-state.service"));
    }
}
