//! Stage 6: the update a box installs to move to this version, in the outputs' update/:
//! the root filesystem (slot A's first bytes) compressed with zstd, the UKI, SHA256SUMS listing
//! both, and SHA256SUMS.gpg, a detached signature by the profile's signing key when the
//! operator's keyring holds it (`cargo xtask publish` signs later otherwise). The layout and
//! names follow systemd-sysupdate's conventions (ARCHITECTURE.md says where they differ).

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::version::Version;
use schema::profile::LoadedProfile;

use crate::boot::BootFiles;
use crate::disk::Disk;
use crate::progress;
use crate::signing::SigningKey;
use crate::sparse::sha256_file;

pub const SUMS: &str = "SHA256SUMS";
pub const SIGNATURE: &str = "SHA256SUMS.gpg";

/// zstd level for the root image, with a 128 MiB window and no long-distance matching. Measured
/// on the demo's 2 GiB root (one core): level 3 takes 3.6 s for 180 MB; level 6 with long
/// matching took 13.2 s for 166 MB. The root is compressed once per site and per build, so a
/// 44-site fleet build pays the difference 44 times, for 9 % fewer bytes per update.
const ROOT_LEVEL: i32 = 3;

pub struct Update {
    /// (file name, sha256, size) of each artifact, in SHA256SUMS order.
    pub artifacts: Vec<(String, String, u64)>,
    pub signed: bool,
    /// The compressed root filesystem: one zstd frame of exactly the image's slot-A bytes, which
    /// the .img.zst reuses as its middle frame instead of compressing them again.
    pub root_frame: PathBuf,
}

/// The signing key a profile names, resolved beside the profile; its private half is looked
/// for in `home` (a GnuPG home; gpg's default without one).
pub fn signing_key(site: &LoadedProfile, home: Option<&Path>) -> Result<Option<SigningKey>> {
    let Some(update) = &site.profile.update else { return Ok(None) };
    let dir = site.path.parent().unwrap_or(Path::new("."));
    SigningKey::read(&dir.join(&update.signing_key), home)
        .with_context(|| format!("update.signing_key in {}", site.path.display()))
        .map(Some)
}

pub fn make(
    site: &LoadedProfile,
    signing_home: Option<&Path>,
    disk: &Disk,
    boot: &BootFiles,
    version: &Version,
    epoch: i64,
    staging: &Path,
) -> Result<Option<Update>> {
    let Some(key) = signing_key(site, signing_home)? else { return Ok(None) };
    let stage = progress::stage("update", "compressing the root filesystem");
    let dir = staging.join("update");
    fs_err::create_dir_all(&dir)?;
    let root = dir.join(version.root_artifact());
    compress_root(&disk.image, disk.layout.root_offset, disk.root_fs_size, &root)?;
    fs_err::write(dir.join(version.uki_artifact()), &boot.uki)?;
    let mut artifacts = Vec::new();
    for name in [version.root_artifact(), version.uki_artifact()] {
        let path = dir.join(&name);
        artifacts.push((name, sha256_file(&path)?, fs_err::metadata(&path)?.len()));
    }
    artifacts.sort();
    fs_err::write(dir.join(SUMS), sums_text(&artifacts))?;
    let signed = key.can_sign();
    if signed {
        key.sign(&dir.join(SUMS), &dir.join(SIGNATURE), epoch)?;
        key.verify(&dir.join(SUMS), &dir.join(SIGNATURE))?;
    } else {
        eprintln!(
            "warning: no private key {} in the signing keyring: the update in {} is unsigned, and \
             boxes refuse it until `cargo xtask publish` signs it where the key is",
            key.fingerprint,
            dir.display()
        );
    }
    let total: u64 = artifacts.iter().map(|a| a.2).sum();
    stage.done(&format!(
        "update {version}: {} to download{}",
        progress::human_bytes(total),
        if signed { ", signed" } else { ", NOT signed" }
    ));
    Ok(Some(Update { artifacts, signed, root_frame: root }))
}

/// SHA256SUMS as sha256sum writes it (and systemd-sysupdate reads it): "HASH  NAME" lines.
pub fn sums_text(artifacts: &[(String, String, u64)]) -> String {
    artifacts.iter().map(|(name, sha, _)| format!("{sha}  {name}\n")).collect()
}

fn compress_root(image: &Path, offset: u64, size: u64, dest: &Path) -> Result<()> {
    let mut input = fs_err::File::open(image)?;
    input.seek(SeekFrom::Start(offset))?;
    let mut input = input.take(size);
    let out = BufWriter::new(fs_err::File::create(dest)?);
    let mut enc = zstd::Encoder::new(out, ROOT_LEVEL)?;
    enc.set_pledged_src_size(Some(size))?;
    enc.include_contentsize(true)?;
    enc.window_log(image::version::ROOT_ZSTD_WINDOW_LOG)?;
    enc.multithread(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))?;
    std::io::copy(&mut input, &mut enc).with_context(|| format!("compressing the root into {}", dest.display()))?;
    enc.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_read_like_sha256sum_output() {
        let text = sums_text(&[("a.efi".into(), "00ff".into(), 3), ("a.root.zst".into(), "11ee".into(), 4)]);
        assert_eq!(text, "00ff  a.efi\n11ee  a.root.zst\n");
    }
}
