//! Stage 7: the outputs in the request's output folder (target/images/SITE/ for `cargo xtask image`): the raw image, its zstd copy, manifest.json and
//! the update folder.
//! Everything is made in a staging folder and swapped in with one atomic rename, so a failed or
//! interrupted build leaves the previous outputs untouched and no partial file.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rustix::fs::{RenameFlags, CWD};
use schema::profile::{Distro, LoadedProfile};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::base::Base;
use crate::cmd;
use crate::disk::Disk;
use crate::sparse::{allocated, data_extents, feed, sha256_file};
use crate::update::Update;
use crate::{progress, tree, Built};

/// What the earlier stages made, for the manifest.
pub struct Parts<'a> {
    pub base: &'a Base,
    pub disk: &'a Disk,
    pub update: Option<&'a Update>,
    pub root: &'a Path,
    pub version: &'a image::version::Version,
    /// Keys fetched from the profile's ssh_key_urls, pinned into the image.
    pub ssh_keys: &'a [super::ssh_keys::Fetched],
    /// The workspace's and the catalog's fingerprints (`source`), for `cargo xtask release`.
    pub source: Option<&'a str>,
    pub catalog: &'a str,
    /// The fingerprint of the site's sync peers (`source::peers`).
    pub peers: &'a str,
}

pub fn finish(
    site: &LoadedProfile,
    parts: &Parts<'_>,
    staging: &Path,
    final_dir: &Path,
    epoch: i64,
    compress: bool,
    started: Instant,
) -> Result<Built> {
    let Parts { base, disk, update, root, version, ssh_keys, source, catalog, peers } = *parts;
    let name = &site.profile.site.name;
    let stage = progress::stage("outputs", "hashing and compressing");
    let zst = compress.then(|| staging.join(format!("{name}.img.zst")));
    let root_region = (disk.layout.root_offset, disk.root_fs_size);
    let root_frame = update.map(|u| (root_region, u.root_frame.as_path()));
    let image_sha = hash_and_compress(&disk.image, disk.layout.disk_size, root_frame, zst.as_deref())?;
    let mut artifacts = vec![
        json!({"file": format!("{name}.img"), "sha256": image_sha, "size": disk.layout.disk_size, "allocated": allocated(&disk.image)?}),
    ];
    if let Some(zst) = &zst {
        artifacts.push(json!({"file": format!("{name}.img.zst"), "sha256": sha256_file(zst)?, "size": fs_err::metadata(zst)?.len()}));
    }
    let manifest = json!({
        "site": name,
        "hostname": site.profile.site.hostname,
        "distro": site.profile.base.distro.as_str(),
        "base": {"key": base.key, "reused_from_cache": base.reused},
        "profile_sha256": crate::source::profile(site),
        "inputs": {"source": source, "catalog": catalog, "peers": peers},
        "build_epoch": epoch,
        "version": version.as_str(),
        "artifacts": artifacts,
        "ssh_keys_from_urls": ssh_keys.iter().map(|f| json!({"url": f.url, "keys": f.keys.len(), "sha256": f.sha256, "from_cache": f.from_cache})).collect::<Vec<_>>(),
        "update": update.map(|u| json!({
            "folder": "update",
            "signed": u.signed,
            "files": u.artifacts.iter().map(|(f, sha, size)| json!({"file": f, "sha256": sha, "size": size})).collect::<Vec<_>>(),
        })),
        "layout": {
            "esp": {"offset": disk.layout.esp_offset, "size": disk.layout.esp_size},
            "root_a": {"offset": disk.layout.root_offset, "size": disk.layout.root_size, "image": disk.root_fs_size, "filesystem": "erofs+dm-verity", "label": version.slot_label()},
            "root_b": {"offset": disk.layout.spare_offset, "size": disk.layout.root_size, "label": image::disk::EMPTY_SLOT_LABEL},
            "state": "created on first boot (label mm-state, ext4, 4 GiB)",
            "data": "created on first boot to fill the rest of the disk (label mirror-data, XFS)",
        },
        "packages": package_versions(site.profile.base.distro, root),
        "tools": tool_versions(),
        "build_seconds": started.elapsed().as_secs(),
    });
    let manifest_path = staging.join("manifest.json");
    fs_err::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    publish(staging, final_dir)?;
    stage.done(&format!("outputs in {}", final_dir.display()));
    Ok(Built::Image { image: final_dir.join(format!("{name}.img")), manifest: final_dir.join("manifest.json") })
}

/// Swaps `staging` in as `final_dir` atomically (renameat2 RENAME_EXCHANGE when it exists).
pub fn publish(staging: &Path, final_dir: &Path) -> Result<()> {
    if let Some(parent) = final_dir.parent() {
        fs_err::create_dir_all(parent)?;
    }
    // Staging must be on the same filesystem: move it next to the final folder first.
    let next = final_dir.with_extension("next");
    tree::remove_dir_all_if_exists(&next)?;
    fs_err::rename(staging, &next).with_context(|| format!("moving {} into place", staging.display()))?;
    if final_dir.exists() {
        rustix::fs::renameat_with(CWD, &next, CWD, final_dir, RenameFlags::EXCHANGE)
            .map_err(std::io::Error::from)
            .with_context(|| format!("swapping in {}", final_dir.display()))?;
        tree::remove_dir_all_if_exists(&next)?;
    } else {
        fs_err::rename(&next, final_dir)?;
    }
    Ok(())
}

/// One pass over the sparse image: the SHA-256 of all its bytes and, when `zst` is given, the
/// .img.zst as concatenated zstd frames (which any zstd decoder reads as one stream): the bytes
/// before slot A, slot A's root filesystem, the rest. Where the update already compressed the
/// root filesystem (`root_frame`: its region and its root.zst), that file is the middle frame as
/// is, so the biggest region is compressed once per build, not twice. Holes are hashed from a
/// buffer of zeros rather than read, and become RLE frames rather than compressed zeros.
fn hash_and_compress(
    image: &Path,
    len: u64,
    root_frame: Option<((u64, u64), &Path)>,
    zst: Option<&Path>,
) -> Result<String> {
    let file = fs_err::File::open(image)?;
    let extents = data_extents(file.file(), len);
    let mut hasher = Sha256::new();
    let mut out = zst.map(fs_err::File::create).transpose()?;
    let cuts: Vec<(u64, u64, Option<&Path>)> = match root_frame {
        Some(((off, size), frame)) => vec![(0, off, None), (off, off + size, Some(frame)), (off + size, len, None)],
        None => vec![(0, len, None)],
    };
    for (start, end, frame) in cuts {
        match (&mut out, frame) {
            (Some(out), Some(frame)) => {
                feed(&file, &extents, start, end, &mut |b, _| hasher.update(b))?;
                std::io::copy(&mut fs_err::File::open(frame)?, out)?;
            }
            (Some(out), None) => {
                let mut region = RegionOut { out: Some(out), frame: None, zeros: 0 };
                let mut err = None;
                feed(&file, &extents, start, end, &mut |b, hole| {
                    hasher.update(b);
                    if err.is_none() {
                        err = if hole { region.hole(b.len() as u64) } else { region.data(b) }.err();
                    }
                })?;
                if let Some(e) = err {
                    return Err(e);
                }
                region.finish()?;
            }
            (None, _) => feed(&file, &extents, start, end, &mut |b, _| hasher.update(b))?,
        }
    }
    if let Some(out) = out {
        out.sync_all()?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// One region of the .img.zst: data runs as zstd frames, hole runs as one RLE frame each.
struct RegionOut<'a> {
    /// The file, while no data frame is open.
    out: Option<&'a mut fs_err::File>,
    frame: Option<zstd::Encoder<'static, &'a mut fs_err::File>>,
    /// Zeros not yet written.
    zeros: u64,
}

impl<'a> RegionOut<'a> {
    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(out) = self.out.take() {
            if self.zeros > 0 {
                out.write_all(&image::zeros_frame::zeros_frame(std::mem::take(&mut self.zeros)))?;
            }
            let mut enc = zstd::Encoder::new(out, 3)?;
            enc.multithread(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))?;
            self.frame = Some(enc);
        }
        match &mut self.frame {
            Some(frame) => Ok(frame.write_all(bytes)?),
            None => anyhow::bail!("internal: no open frame for the image's data"),
        }
    }

    fn hole(&mut self, len: u64) -> Result<()> {
        self.close_frame()?;
        self.zeros += len;
        Ok(())
    }

    fn close_frame(&mut self) -> Result<()> {
        if let Some(frame) = self.frame.take() {
            self.out = Some(frame.finish()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.close_frame()?;
        if let (Some(out), true) = (self.out.as_mut(), self.zeros > 0) {
            out.write_all(&image::zeros_frame::zeros_frame(self.zeros))?;
        }
        Ok(())
    }
}

/// name → version of every package in the tree, from the package database.
fn package_versions(distro: Distro, root: &Path) -> serde_json::Value {
    let map = crate::installed::packages(distro, root).into_iter().map(|p| (p.name, json!(p.version))).collect();
    serde_json::Value::Object(map)
}

fn tool_versions() -> serde_json::Value {
    let version = |prog: &str, arg: &str| -> String {
        let output = cmd::shell().ok().and_then(|sh| sh.cmd(prog).arg(arg).quiet().ignore_status().output().ok());
        output
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| "not found".into())
    };
    json!({
        "build": env!("CARGO_PKG_VERSION"),
        "mkfs.erofs": version("mkfs.erofs", "--version"),
        "veritysetup": version("veritysetup", "--version"),
        "mmdebstrap": version("mmdebstrap", "--version"),
        "dnf": version("dnf", "--version"),
        "rustc": version("rustc", "--version"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_hash_equals_plain_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = fs_err::File::create(&p).unwrap();
        f.set_len(5 << 20).unwrap();
        use fs_err::os::unix::fs::FileExt;
        f.write_all_at(b"hello", 3 << 20).unwrap();
        f.write_all_at(b"end", (5 << 20) - 3).unwrap();
        drop(f);
        let plain = format!("{:x}", Sha256::digest(fs_err::read(&p).unwrap()));
        assert_eq!(sha256_file(&p).unwrap(), plain);
    }

    #[test]
    fn the_img_zst_decodes_to_the_sparse_image_with_or_without_the_root_frame() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let len = 9u64 << 20;
        let f = fs_err::File::create(&p).unwrap();
        f.set_len(len).unwrap();
        use fs_err::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 3000], 0).unwrap();
        f.write_all_at(b"root bytes", 4 << 20).unwrap();
        f.write_all_at(b"backup table", len - 12).unwrap();
        drop(f);
        let plain = fs_err::read(&p).unwrap();
        let want_sha = format!("{:x}", Sha256::digest(&plain));
        let zst = dir.path().join("sparse.zst");
        assert_eq!(hash_and_compress(&p, len, None, Some(&zst)).unwrap(), want_sha);
        assert!(zstd::stream::decode_all(&fs_err::read(&zst).unwrap()[..]).unwrap() == plain, "without a root frame");
        let (off, size) = (4u64 << 20, 2u64 << 20);
        let frame = dir.path().join("root.zst");
        let region = &plain[off as usize..(off + size) as usize];
        fs_err::write(&frame, zstd::stream::encode_all(region, 3).unwrap()).unwrap();
        assert_eq!(hash_and_compress(&p, len, Some(((off, size), &frame)), Some(&zst)).unwrap(), want_sha);
        assert!(zstd::stream::decode_all(&fs_err::read(&zst).unwrap()[..]).unwrap() == plain, "with a root frame");
    }
}
