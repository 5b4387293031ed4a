//! Stage 5: the disk. The ESP (FAT32 holding systemd-boot and the version's UKI), root slot A
//! (ext4 made from the tree by mkfs.ext4 -d, never mounted) and root slot B (a hole, labelled
//! `_empty`) are written into one sparse file behind a GPT.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::disk::{self, Layout, MIB, SLOT_SIZE};
use image::version::Version;
use schema::profile::LoadedProfile;

use crate::boot::BootFiles;
use crate::cmd::{self, cmd};
use crate::progress;
use crate::tree;

/// Room for systemd-boot and two UKIs (the running version and the one being installed) with
/// more than half to spare: a UKI is 40–80 MiB depending on the base's kernel and drivers.
pub const ESP_SIZE: u64 = 256 * MIB;

/// systemd-boot's settings: no menu unless a key is held, no editing of the command line, and no
/// `default`: the newest entry with tries left boots, which is what makes rollback work.
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

pub struct Disk {
    pub image: PathBuf,
    pub layout: Layout,
    /// The root filesystem's size: the first bytes of slot A, and what an update writes.
    pub root_fs_size: u64,
}

/// Root filesystem size: the tree plus room for package updates, at least 2 GiB.
pub fn root_size(tree_bytes: u64) -> u64 {
    let wanted = tree_bytes + (tree_bytes / 2).max(1024 * MIB);
    wanted.max(2048 * MIB).div_ceil(64 * MIB) * 64 * MIB
}

/// The root filesystem's size for a tree, or why it does not fit a root slot.
pub fn root_fs_size(tree_bytes: u64) -> Result<u64> {
    let size = root_size(tree_bytes);
    if size > SLOT_SIZE {
        bail!(
            "the root tree needs {} with its headroom, but a root slot holds {}: drop packages from \
             xtask/build/packages/ (slots cannot grow on boxes already shipped)",
            progress::human_bytes(size),
            progress::human_bytes(SLOT_SIZE)
        );
    }
    Ok(size)
}

pub fn assemble(
    site: &LoadedProfile,
    root: &Path,
    boot: &BootFiles,
    version: &Version,
    epoch: i64,
    staging: &Path,
) -> Result<Disk> {
    let stage = progress::stage("disk", "writing ESP, root filesystem and GPT");
    let name = &site.profile.site.name;
    fs_err::create_dir_all(staging)?;
    let image_path = staging.join(format!("{name}.img"));
    let used = tree::allocated_size(root)?;
    let root_fs_size = root_fs_size(used)?;
    let layout = disk::plan(ESP_SIZE, SLOT_SIZE);

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
    file.sync_all()?;
    drop(file);

    tree::pin_timestamps(root, epoch)?;
    stage.message("mkfs.ext4 -d (root filesystem from the tree)");
    make_root_fs(site, root, &image_path, layout.root_offset, root_fs_size, epoch)?;
    stage.done(&format!(
        "{} disk, root {} of {} used, slot {}",
        progress::human_bytes(layout.disk_size),
        progress::human_bytes(used),
        progress::human_bytes(root_fs_size),
        progress::human_bytes(layout.root_size)
    ));
    Ok(Disk { image: image_path, layout, root_fs_size })
}

fn make_root_fs(
    site: &LoadedProfile,
    root: &Path,
    image_path: &Path,
    offset: u64,
    size: u64,
    epoch: i64,
) -> Result<()> {
    let uuid = disk::seeded_uuid(&site.profile.site.name, "rootfs");
    let seed = disk::seeded_uuid(&site.profile.site.name, "rootfs-hash");
    let uuid = uuid.to_string();
    let options = format!("offset={offset},hash_seed={seed},root_owner=0:0,lazy_itable_init=1");
    let size_k = format!("{}k", size / 1024);
    let sh = cmd::shell()?;
    let mkfs =
        cmd!(sh, "mkfs.ext4 -q -F -b 4096 -L root -T default -U {uuid} -E {options} -d {root} {image_path} {size_k}");
    cmd::run(mkfs.env("E2FSPROGS_FAKE_TIME", epoch.to_string())).context("making the root filesystem")?;
    pin_inode_change_times(root, image_path, offset, epoch)
}

/// mkfs.ext4 -d copies each file's ctime, which no one can set (the kernel stamps "now");
/// e2fsprogs 1.47.0 has no option for it. debugfs rewrites every inode's ctime to the epoch so
/// two builds give the same bytes.
fn pin_inode_change_times(root: &Path, image_path: &Path, offset: u64, epoch: i64) -> Result<()> {
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
    let target = format!("{}?offset={offset}", image_path.display());
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

    #[test]
    fn a_tree_too_big_for_a_slot_is_refused_with_the_sizes() {
        assert_eq!(root_fs_size(700 * MIB).unwrap(), 2048 * MIB);
        let err = root_fs_size(3000 * MIB).unwrap_err().to_string();
        assert!(err.contains("root slot holds 4.0 GiB") && err.contains("xtask/build/packages"), "{err}");
    }
}
