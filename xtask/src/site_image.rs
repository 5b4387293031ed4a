//! A site's built image as `cargo xtask image` left it in target/images/SITE/: its manifest's
//! version and sizes, the files adopt and the USB installer take from it. Reads only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths;

/// The built image's sizes that the preflight checks against the box, and its files.
pub struct Built {
    pub version: String,
    pub root_image_bytes: u64,
    pub uki_bytes: u64,
    pub root_zst: PathBuf,
    pub uki: PathBuf,
    pub disk: PathBuf,
    pub esp_offset: u64,
    pub esp_size: u64,
    /// Where slot A starts in the disk image, and the image's size.
    pub root_offset: u64,
    pub disk_size: u64,
}

impl Built {
    /// Free bytes a box's ESP needs: the running UKI and the one an update installs,
    /// systemd-boot and its settings.
    pub fn esp_needs(&self) -> u64 {
        2 * self.uki_bytes + (4 << 20)
    }
}

/// The site's image in target/images/SITE.
pub fn built(site: &str) -> Result<Built> {
    built_in(&paths::images(site), site)
}

/// The site's image in `dir` (a build's output folder).
pub fn built_in(dir: &Path, site: &str) -> Result<Built> {
    let manifest_path = dir.join("manifest.json");
    let text = fs_err::read(&manifest_path)
        .with_context(|| format!("no built image for {site}; build it first: cargo xtask image --site {site}"))?;
    let m: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", manifest_path.display()))?;
    let root_image_bytes = m["layout"]["root_a"]["image"]
        .as_u64()
        .with_context(|| format!("{} has no layout.root_a.image: rebuild the image", manifest_path.display()))?;
    let uki_bytes = m["update"]["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["file"].as_str().is_some_and(|n| n.ends_with(".efi"))))
        .and_then(|f| f["size"].as_u64())
        .with_context(|| format!("{} names no UKI: rebuild the image", manifest_path.display()))?;
    let version = m["version"].as_str().context("the manifest has no version")?.to_string();
    let v = image::version::Version::parse(&version).context("the manifest's version")?;
    Ok(Built {
        root_zst: dir.join("update").join(v.root_artifact()),
        uki: dir.join("update").join(v.uki_artifact()),
        disk: dir.join(format!("{site}.img")),
        esp_offset: m["layout"]["esp"]["offset"].as_u64().context("the manifest has no layout.esp")?,
        esp_size: m["layout"]["esp"]["size"].as_u64().context("the manifest has no layout.esp")?,
        root_offset: m["layout"]["root_a"]["offset"].as_u64().context("the manifest has no layout.root_a")?,
        disk_size: m["artifacts"][0]["size"].as_u64().context("the manifest names no disk image")?,
        version,
        root_image_bytes,
        uki_bytes,
    })
}

/// Files of the built image's ESP (systemd-boot, its settings), the ESP read once.
pub fn esp_files<const N: usize>(built: &Built, paths: [&str; N]) -> Result<[Vec<u8>; N]> {
    use std::io::{Read, Seek};
    let mut disk = fs_err::File::open(&built.disk)?;
    disk.seek(std::io::SeekFrom::Start(built.esp_offset))?;
    let mut esp = vec![0u8; built.esp_size as usize];
    disk.read_exact(&mut esp)?;
    let mut out = Vec::with_capacity(N);
    for path in paths {
        out.push(
            image::esp::read_file(&esp, path)
                .with_context(|| format!("{path} in the ESP of {}", built.disk.display()))?,
        );
    }
    out.try_into().map_err(|_| anyhow::anyhow!("internal: one file per path"))
}
