//! Stage 6: the disk. The ESP (FAT32 holding systemd-boot and the version's UKI), root slot A
//! (the read-only root image with its hash tree, `slot_image`) and root slot B (a hole,
//! labelled `_empty`) are written into one sparse file behind a GPT.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::disk::{self, Layout, MIB, SLOT_SIZE};
use image::version::Version;
use schema::profile::LoadedProfile;

use crate::boot::BootFiles;
use crate::progress;
use crate::slot_image::SlotImage;

/// Room for systemd-boot and two UKIs (the running version and the one being installed) with
/// more than half to spare: a UKI is 40–80 MiB depending on the base's kernel and drivers.
pub const ESP_SIZE: u64 = 256 * MIB;

/// systemd-boot's settings: no menu unless a key is held, no editing of the command line, and no
/// `default`: the newest entry with tries left boots, which is what makes rollback work.
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

pub struct Disk {
    pub image: PathBuf,
    pub layout: Layout,
    /// The root image's size (file system and hash tree): the first bytes of slot A, and what
    /// an update writes.
    pub root_fs_size: u64,
}

pub fn assemble(
    site: &LoadedProfile,
    slot: &SlotImage,
    boot: &BootFiles,
    version: &Version,
    staging: &Path,
) -> Result<Disk> {
    let stage = progress::stage("disk", "writing ESP, root slot and GPT");
    let name = &site.profile.site.name;
    fs_err::create_dir_all(staging)?;
    let image_path = staging.join(format!("{name}.img"));
    let layout = disk::plan(ESP_SIZE, SLOT_SIZE);
    if slot.size > layout.root_size {
        bail!("the root image ({} bytes) is larger than a root slot ({} bytes)", slot.size, layout.root_size);
    }

    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image_path)
        .with_context(|| format!("creating {}", image_path.display()))?;
    file.set_len(layout.disk_size)?;
    disk::write_gpt(&mut file, &layout, name, &version.slot_label())?;

    let volume_id =
        u32::from_le_bytes(disk::seeded_uuid(name, "esp-volume").as_bytes()[..4].try_into().unwrap_or([0; 4]));
    // The first version is the one tested before shipping: its entry is written blessed (no
    // boot counter). Every update arrives counted and must prove itself.
    let entry = format!("EFI/Linux/{}", version.entry_name(None));
    let mut files = [
        image::esp::EspFile { path: "EFI/BOOT/BOOTX64.EFI", data: &boot.loader },
        image::esp::EspFile { path: &entry, data: &boot.uki },
        image::esp::EspFile { path: "loader/loader.conf", data: LOADER_CONF.as_bytes() },
    ];
    let esp = image::esp::build_esp(layout.esp_size as usize, volume_id, &mut files)?;
    disk::write_sparse(&mut file, layout.esp_offset, &esp)?;
    copy_into(&slot.file, slot.size, &mut file, layout.root_offset)?;
    file.sync_all()?;
    drop(file);
    stage.done(&format!(
        "{} disk, root slot {} of {} used",
        progress::human_bytes(layout.disk_size),
        progress::human_bytes(slot.size),
        progress::human_bytes(layout.root_size)
    ));
    Ok(Disk { image: image_path, layout, root_fs_size: slot.size })
}

/// Copies the first `len` bytes of `from` into `to` at `offset`, leaving its holes unwritten.
fn copy_into(from: &Path, len: u64, to: &mut File, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let source = fs_err::File::open(from)?;
    let extents = crate::sparse::data_extents(source.file(), len);
    let mut at = offset;
    let mut failed = None;
    crate::sparse::feed(&source, &extents, 0, len, &mut |bytes, hole| {
        if !hole && failed.is_none() {
            failed = to.write_all_at(bytes, at).err();
        }
        at += bytes.len() as u64;
    })?;
    match failed {
        Some(e) => Err(e).context("writing the root slot into the disk image"),
        None => Ok(()),
    }
}
