//! Stage 5: the root slot's image. The finished tree becomes a read-only EROFS (mkfs.erofs,
//! compressed as the base's kernel can read it: lz4 on Debian 12, none on AlmaLinux 9, whose
//! kernel has EROFS without compression: `Distro::erofs_compression`), and its
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
    let compression = compression_options(site.profile.base.distro);
    let mkfs = cmd!(sh, "mkfs.erofs --quiet {compression...} -T{time} -U{uuid} {labels...} {file} {root}");
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

/// mkfs.erofs's compression options for a base: its kernel's algorithm in 4 KiB clusters, or
/// none where the kernel reads no compressed EROFS (the update's zstd still shrinks the
/// download, and `check_fits` still guards the slot).
fn compression_options(distro: Distro) -> Vec<String> {
    match distro.erofs_compression() {
        Some(algorithm) => vec![format!("-z{algorithm}"), "-C4096".into()],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dump.erofs's feature list of an EROFS made from `tree` with `distro`'s options.
    fn features(distro: Distro, tree: &Path, out: &Path) -> String {
        let made = std::process::Command::new("mkfs.erofs")
            .arg("--quiet")
            .args(compression_options(distro))
            .arg(out)
            .arg(tree)
            .status()
            .expect("mkfs.erofs (cargo xtask test installs erofs-utils)");
        assert!(made.success());
        let said = std::process::Command::new("dump.erofs").arg("-s").arg(out).output().unwrap();
        let text = String::from_utf8_lossy(&said.stdout).into_owned();
        text.lines().find(|l| l.starts_with("Filesystem features:")).unwrap_or_else(|| panic!("{text}")).to_string()
    }

    #[test]
    fn almalinux_roots_are_uncompressed_since_its_kernel_reads_no_compressed_erofs() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir_all(&tree).unwrap();
        fs_err::write(tree.join("compressible"), "a mirror's root\n".repeat(20_000)).unwrap();
        // "0padding" marks an image with compressed (lz4) extents: a kernel without
        // CONFIG_EROFS_FS_ZIP cannot read them.
        let debian = features(Distro::Debian12, &tree, &dir.path().join("debian.erofs"));
        assert!(debian.contains("0padding"), "Debian's root is lz4-compressed: {debian}");
        let alma = features(Distro::Almalinux9, &tree, &dir.path().join("alma.erofs"));
        assert!(!alma.contains("0padding"), "AlmaLinux's root has no compressed extent: {alma}");
    }

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
