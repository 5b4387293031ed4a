//! Stage 5: the disk. The ESP (FAT32 holding the UKI) and the root filesystem (ext4 made from
//! the tree by mkfs.ext4 -d, never mounted) are written into one sparse file behind a GPT.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::disk::{self, Layout, MIB};
use schema::profile::LoadedProfile;

use super::tree;
use crate::cmd::{self, cmd};
use crate::progress;

pub const ESP_SIZE: u64 = 256 * MIB;

pub struct Disk {
    pub image: PathBuf,
    pub layout: Layout,
}

/// Root filesystem size: the tree plus room for logs, updates and state, at least 2 GiB.
pub fn root_size(tree_bytes: u64) -> u64 {
    let wanted = tree_bytes + (tree_bytes / 2).max(1024 * MIB);
    wanted.max(2048 * MIB).div_ceil(64 * MIB) * 64 * MIB
}

pub fn assemble(site: &LoadedProfile, root: &Path, uki: &[u8], epoch: i64, staging: &Path) -> Result<Disk> {
    let stage = progress::stage("disk", "writing ESP, root filesystem and GPT");
    let name = &site.profile.site.name;
    fs_err::create_dir_all(staging)?;
    let image_path = staging.join(format!("{name}.img"));
    let used = tree::allocated_size(root)?;
    let layout = disk::plan(ESP_SIZE, root_size(used));

    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image_path)
        .with_context(|| format!("creating {}", image_path.display()))?;
    file.set_len(layout.disk_size)?;
    disk::write_gpt(&mut file, &layout, name)?;

    let volume_id =
        u32::from_le_bytes(disk::seeded_uuid(name, "esp-volume").as_bytes()[..4].try_into().unwrap_or([0; 4]));
    let mut files = [image::esp::EspFile { path: "EFI/BOOT/BOOTX64.EFI", data: uki }];
    let esp = image::esp::build_esp(layout.esp_size as usize, volume_id, &mut files)?;
    disk::write_sparse(&mut file, layout.esp_offset, &esp)?;
    file.sync_all()?;
    drop(file);

    tree::pin_timestamps(root, epoch)?;
    stage.message("mkfs.ext4 -d (root filesystem from the tree)");
    make_root_fs(site, root, &image_path, &layout, epoch)?;
    stage.done(&format!(
        "{} disk, root {} of {} used",
        progress::human_bytes(layout.disk_size),
        progress::human_bytes(used),
        progress::human_bytes(layout.root_size)
    ));
    Ok(Disk { image: image_path, layout })
}

fn make_root_fs(site: &LoadedProfile, root: &Path, image_path: &Path, layout: &Layout, epoch: i64) -> Result<()> {
    let uuid = disk::seeded_uuid(&site.profile.site.name, "rootfs");
    let seed = disk::seeded_uuid(&site.profile.site.name, "rootfs-hash");
    let uuid = uuid.to_string();
    let options = format!("offset={},hash_seed={seed},root_owner=0:0,lazy_itable_init=1", layout.root_offset);
    let size = format!("{}k", layout.root_size / 1024);
    let sh = cmd::shell()?;
    let mkfs =
        cmd!(sh, "mkfs.ext4 -q -F -b 4096 -L root -T default -U {uuid} -E {options} -d {root} {image_path} {size}");
    cmd::run(mkfs.env("E2FSPROGS_FAKE_TIME", epoch.to_string())).context("making the root filesystem")?;
    pin_inode_change_times(root, image_path, layout, epoch)
}

/// mkfs.ext4 -d copies each file's ctime, which no one can set (the kernel stamps "now");
/// e2fsprogs 1.47.0 has no option for it. debugfs rewrites every inode's ctime to the epoch so
/// two builds give the same bytes.
fn pin_inode_change_times(root: &Path, image_path: &Path, layout: &Layout, epoch: i64) -> Result<()> {
    let mut script = String::new();
    script.push_str(&format!("sif / ctime @{epoch}\n"));
    for path in tree::walk(root)? {
        let rel = path.strip_prefix(root).context("tree path outside the root")?;
        let text = rel.to_str().with_context(|| format!("{} is not UTF-8", rel.display()))?;
        if text.contains(['"', '\n']) {
            anyhow::bail!("{text}: a name debugfs cannot quote; remove it from the base or overlay");
        }
        script.push_str(&format!("sif \"/{text}\" ctime @{epoch}\n"));
    }
    let commands = image_path.with_extension("debugfs");
    fs_err::write(&commands, script)?;
    let target = format!("{}?offset={}", image_path.display(), layout.root_offset);
    let sh = cmd::shell()?;
    let out = cmd::run(cmd!(sh, "debugfs -w -f {commands} {target}").env("E2FSPROGS_FAKE_TIME", epoch.to_string()));
    let _ = fs_err::remove_file(&commands);
    let out = out.context("pinning inode change times with debugfs")?;
    if let Some(err) = out.lines().find(|l| l.contains("File not found") || l.contains("Couldn't")) {
        anyhow::bail!("debugfs: {err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_at_least_two_gib_and_leaves_headroom() {
        assert_eq!(root_size(100 * MIB), 2048 * MIB);
        let big = root_size(3000 * MIB);
        assert!(big >= 4500 * MIB && big.is_multiple_of(64 * MIB));
    }
}
