//! An adopted box (a fleet box moved onto the image by `cargo xtask adopt`): the record adopt
//! left in the state folder, and `mirror-update adopt-commit`, which adopt runs over SSH once the
//! new system has passed its health check: the new system first in the firmware's BootOrder,
//! the old /boot retyped and relabelled as the empty root slot B, the record marked committed,
//! then the old system's files removed from the data file system, the mirror tree handed to the
//! sync service's user and that service asked to sync now, so the first sync follows. That
//! order keeps a box that is cut off at any step booting: until BootOrder changes the old system
//! is first and whole; after it the new one is, and the old files are removed only once nothing
//! can boot them any more. A USB installer's adoption has nobody outside to commit it: its
//! record says so, and its first healthy boot commits itself.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use gpt::partition_types::LINUX_ROOT_X64;
use image::disk::EMPTY_SLOT_LABEL;
use schema::adoption::{Adoption, Phase};

use crate::health::say;
use crate::machine::Machine;

/// What stays on the data file system: the mirror tree and this system's state.
const KEPT: [&str; 2] = ["data", "micromirror-state"];

/// The sync service's user, which owns the mirror tree on every box.
const SYNC_USER: &str = "mirror-sync";

pub fn record(m: &Machine) -> Option<Adoption> {
    Adoption::load(&m.adoption_file())
}

/// Where the adopted data file system is mounted (the generator's run-mmdisk.mount).
pub const DATA_ROOT: &str = "/run/mmdisk";

/// Whether this boot is a trial that commits itself once healthy (the USB installer's).
pub fn commits_itself(m: &Machine) -> bool {
    record(m).is_some_and(|a| a.phase == Phase::Trial && a.self_commit)
}

/// Whether this boot is an adoption's trial (the old system boots after it, whatever happens).
pub fn on_trial(m: &Machine) -> bool {
    record(m).is_some_and(|a| a.phase == Phase::Trial)
}

fn step(what: &str) {
    say(&format!("MICROMIRROR-ADOPT {what}"));
}

/// `adopt-commit`: makes the adoption permanent; `data_root` is where the adopted data file
/// system is mounted (/run/mmdisk).
pub fn commit(m: &Machine, data_root: &Path) -> Result<()> {
    let Some(mut record) = record(m) else {
        bail!("{} has no adoption record: this box was not adopted", m.adoption_file().display());
    };
    let running = m.running()?;
    if record.version != running.to_string() {
        bail!("the adoption wrote {} but {running} runs: commit from the adopted version only", record.version);
    }
    if record.phase == Phase::Trial {
        first_in_boot_order()?;
        step("boot order: this system first");
        crate::slots::set_type_and_label(&m.disk, record.old_boot_partition, LINUX_ROOT_X64, EMPTY_SLOT_LABEL)?;
        step(&format!("partition {} (the old /boot) is root slot B, {EMPTY_SLOT_LABEL}", record.old_boot_partition));
        record.phase = Phase::Committed;
        record.committed_at = Some(jiff::Timestamp::now().as_second());
        let (path, partial) = (m.adoption_file(), m.adoption_file().with_extension("json.partial"));
        std::fs::write(&partial, record.to_json()).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
        step("recorded as committed");
    }
    let removed = remove_old_system(data_root)?;
    step(&format!("the old system's files removed ({removed} entries at the top of the data file system)"));
    let tree = data_root.join("data/mirror");
    let out = Command::new("chown").args(["-R", &format!("{SYNC_USER}:{SYNC_USER}")]).arg(&tree).output()?;
    if !out.status.success() {
        bail!("chown of {}: {}", tree.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    step(&format!("the mirror tree belongs to {SYNC_USER}"));
    start_syncing_now();
    step("committed");
    Ok(())
}

/// The sync service's runs failed during the trial (the tree was not yet its user's) and wait
/// out their backoff, minutes; SIGUSR1 (to its main process only, not to an rsync of it) asks
/// it to sync every project now. A failure here is only said: the backoff's retry still comes,
/// and the box is committed either way.
fn start_syncing_now() {
    let signal = ["kill", "--kill-whom=main", "--signal=SIGUSR1", "mirror-sync.service"];
    match Command::new("systemctl").args(signal).output() {
        Ok(out) if out.status.success() => step("mirror-sync asked to sync every project now"),
        Ok(out) => step(&format!(
            "mirror-sync not reached ({}): it syncs at its next retry",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => step(&format!("mirror-sync not reached ({e}): it syncs at its next retry")),
    }
}

/// Puts the entry the firmware booted this system from (BootCurrent) first in BootOrder.
fn first_in_boot_order() -> Result<()> {
    let out = Command::new("efibootmgr").output().context("running efibootmgr")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let order = boot_order_with_current_first(&text)
        .with_context(|| format!("efibootmgr says no BootCurrent or BootOrder:\n{text}"))?;
    let status = Command::new("efibootmgr").args(["-o", &order]).output().context("running efibootmgr -o")?;
    if !status.status.success() {
        bail!("efibootmgr -o {order}: {}", String::from_utf8_lossy(&status.stderr).trim());
    }
    Ok(())
}

/// From `efibootmgr`'s listing: BootOrder with BootCurrent moved to the front.
pub fn boot_order_with_current_first(listing: &str) -> Option<String> {
    let value = |key: &str| listing.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    let current = value("BootCurrent:")?;
    let order = value("BootOrder:").unwrap_or_default();
    let mut all = vec![current.clone()];
    all.extend(order.split(',').map(str::trim).filter(|e| !e.is_empty() && *e != current).map(String::from));
    Some(all.join(","))
}

/// Removes every top-level entry of the data file system but the mirror tree and the state.
fn remove_old_system(data_root: &Path) -> Result<usize> {
    if !data_root.join("data/mirror").is_dir() || !data_root.join("micromirror-state").is_dir() {
        bail!(
            "{} does not hold data/mirror and micromirror-state: not the adopted data file system",
            data_root.display()
        );
    }
    // /data may hold more than the mirror (the playbook's own files): only the tree stays.
    let top = remove_all_but(data_root, &KEPT)?;
    Ok(top + remove_all_but(&data_root.join("data"), &["mirror"])?)
}

/// Removes every entry of `dir` but those named in `kept`; how many it removed.
fn remove_all_but(dir: &Path, kept: &[&str]) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if kept.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
            .with_context(|| format!("removing {}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_entry_goes_first_and_the_rest_keep_their_order() {
        let listing = "BootCurrent: 0004\nTimeout: 0 seconds\nBootOrder: 0003,0001,0000,0004\nBoot0003* AlmaLinux\n";
        assert_eq!(boot_order_with_current_first(listing).as_deref(), Some("0004,0003,0001,0000"));
        assert_eq!(boot_order_with_current_first("BootCurrent: 0002\n").as_deref(), Some("0002"));
        assert_eq!(boot_order_with_current_first("BootOrder: 0001\n"), None);
    }

    #[test]
    fn only_the_mirror_tree_and_the_state_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["usr/bin", "etc", "home/mirror/.ssh", "data/mirror/debian", "data/other", "micromirror-state/ssh"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("data/mirror/debian/Release"), "x").unwrap();
        std::fs::write(root.join(".autorelabel"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let removed = remove_old_system(root).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["data", "micromirror-state"]);
        assert_eq!(removed, 6, "usr, etc, home, .autorelabel, bin and data/other");
        assert!(root.join("data/mirror/debian/Release").exists());
        assert!(remove_old_system(&root.join("data")).is_err(), "a folder without the tree and the state is refused");
    }
}
