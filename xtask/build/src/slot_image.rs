//! Stage 5: the root slot's image. The finished tree becomes a read-only, compressed EROFS
//! (mkfs.erofs, lz4: both bases' kernels read it; Debian 12's has no LZMA for EROFS), and its
//! dm-verity hash tree is appended after it (veritysetup format, salt and UUID seeded by the
//! site, so two builds give the same bytes). The root hash goes onto the UKI's command line: the signed update pins every byte of
//! the root, and the kernel refuses a block that does not match it at read time.
//!
//! This module only makes the file; where it goes (slot A, the update's root artifact) is the
//! disk's and the update's business.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::disk::{self, SLOT_SIZE};
use schema::profile::{Distro, LoadedProfile};

use crate::cmd::{self, cmd};
use crate::{installed, progress};

/// What the kernel command line needs to open the slot as a verified device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// The hash tree's root, hex.
    pub root_hash: String,
    /// Where the hash tree starts in the slot: the file system's size.
    pub hash_offset: u64,
}

pub struct SlotImage {
    /// The file system followed by its hash tree.
    pub file: PathBuf,
    /// The file's size: what slot A holds and what an update writes.
    pub size: u64,
    pub verity: Verity,
    /// The file system alone, and the tree's own size before compression (for the report).
    pub fs_size: u64,
}

/// The share of a slot the image may fill: the rest is headroom for the bases to grow over a
/// box's life, since the slots never move on a shipped disk.
pub const FILL_LIMIT: f64 = 0.85;

pub fn make(site: &LoadedProfile, root: &Path, epoch: i64, staging: &Path) -> Result<SlotImage> {
    let stage = progress::stage("root", "mkfs.erofs (read-only root) and its dm-verity hash tree");
    fs_err::create_dir_all(staging)?;
    let file = staging.join("root.slot");
    let name = &site.profile.site.name;
    let uuid = disk::seeded_uuid(name, "rootfs").to_string();
    let time = epoch.to_string();
    // SELinux (AlmaLinux): the labels are written at build time from the base's own policy,
    // since a read-only root cannot be relabelled on the box.
    let contexts = root.join("etc/selinux/targeted/contexts/files/file_contexts");
    let labels: Vec<String> = if site.profile.base.distro == Distro::Almalinux9 && contexts.exists() {
        vec![format!("--file-contexts={}", contexts.display())]
    } else {
        Vec::new()
    };
    let sh = cmd::shell()?;
    // Plain lz4 in 4 KiB physical clusters. Measured on the demo's base with its unused
    // modules left out (2026-12-06, one core): lz4 1.2 s for 227 MiB (149 MiB as the update's
    // zstd); 64 KiB clusters saved 12 MiB and nothing of the update, but a page fault then
    // decompresses, and dm-verity hashes, sixteen blocks instead of one (systemd took 4.5 s
    // longer to start under TCG than from ext4); lz4hc level 1 took 9.6 s for 190 MiB (136 MiB).
    let mkfs = cmd!(sh, "mkfs.erofs --quiet -zlz4 -C4096 -T{time} -U{uuid} {labels...} {file} {root}");
    cmd::run(mkfs).context("making the read-only root file system (mkfs.erofs)")?;
    let fs_size = fs_err::metadata(&file)?.len();
    if !fs_size.is_multiple_of(4096) {
        bail!("mkfs.erofs made {fs_size} bytes, not whole 4 KiB blocks: dm-verity needs them");
    }
    let salt = hex(disk::seeded_uuid(name, "verity-salt").as_bytes());
    let verity_uuid = disk::seeded_uuid(name, "verity").to_string();
    let offset = fs_size.to_string();
    let format = cmd!(
        sh,
        "veritysetup format --hash-offset={offset} --salt={salt} --uuid={verity_uuid} --data-block-size=4096 --hash-block-size=4096 {file} {file}"
    );
    let said = cmd::run(format).context("making the dm-verity hash tree (veritysetup format)")?;
    let root_hash = parse_root_hash(&said).with_context(|| format!("veritysetup format said no root hash:\n{said}"))?;
    let size = fs_err::metadata(&file)?.len();
    check_fits(size, fs_size, site.profile.base.distro, root)?;
    stage.done(&format!(
        "root {} ({} file system + {} hash tree) in a {} slot, {:.0} % full",
        progress::human_bytes(size),
        progress::human_bytes(fs_size),
        progress::human_bytes(size - fs_size),
        progress::human_bytes(SLOT_SIZE),
        size as f64 * 100.0 / SLOT_SIZE as f64
    ));
    Ok(SlotImage { file, size, verity: Verity { root_hash, hash_offset: fs_size }, fs_size })
}

/// The `Root hash:` line of veritysetup's report.
pub fn parse_root_hash(said: &str) -> Option<String> {
    let line = said.lines().find(|l| l.trim_start().starts_with("Root hash:"))?;
    let hash = line.split_once(':')?.1.trim();
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash.to_ascii_lowercase())
}

/// A root that leaves too little headroom in its slot is a build error naming the sizes and
/// the largest packages, since a shipped box's slots never grow.
fn check_fits(size: u64, fs_size: u64, distro: Distro, root: &Path) -> Result<()> {
    let limit = (SLOT_SIZE as f64 * FILL_LIMIT) as u64;
    if size <= limit {
        return Ok(());
    }
    let installed = installed::packages(distro, root);
    let largest = installed::largest(&installed, 10);
    bail!(
        "the root image is {} ({} file system + hash tree), more than {:.0} % of its {} slot ({}): \
         drop packages from xtask/build/packages/ or the profile's base.packages. The largest installed packages: {}",
        progress::human_bytes(size),
        progress::human_bytes(fs_size),
        FILL_LIMIT * 100.0,
        progress::human_bytes(SLOT_SIZE),
        progress::human_bytes(limit),
        largest.iter().map(|p| format!("{} {}", p.name, progress::human_bytes(p.size))).collect::<Vec<_>>().join(", ")
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_hash_is_read_from_veritysetup_s_report() {
        let said = "VERITY header information for root.slot\nUUID:            \t6c5d…\nHash type:       \t1\n\
                    Salt:            \t00ff\nRoot hash:      \t4392A1B2c3d4e5f60718293a4b5c6d7e8f9011223344556677889900aabbccdd\n";
        assert_eq!(
            parse_root_hash(said).as_deref(),
            Some("4392a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556677889900aabbccdd")
        );
        assert_eq!(parse_root_hash("Root hash: short"), None);
    }

    #[test]
    fn a_root_over_its_share_of_the_slot_is_refused_with_the_sizes_and_the_largest_packages() {
        let tree = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(tree.path().join("var/lib/dpkg")).unwrap();
        fs_err::write(
            tree.path().join("var/lib/dpkg/status"),
            "Package: firmware-big\nVersion: 1\nInstalled-Size: 300000\n\nPackage: rsync\nVersion: 3\nInstalled-Size: 700\n",
        )
        .unwrap();
        assert!(check_fits(SLOT_SIZE / 2, SLOT_SIZE / 2, Distro::Debian12, tree.path()).is_ok());
        let err = check_fits(SLOT_SIZE - 1, SLOT_SIZE - 4096, Distro::Debian12, tree.path()).unwrap_err().to_string();
        assert!(err.contains("xtask/build/packages") && err.contains("base.packages"), "{err}");
        assert!(err.contains("firmware-big 293.0 MiB, rsync 700.0 KiB"), "{err}");
        assert!(err.contains("1.0 GiB slot"), "{err}");
    }
}
