//! The two root slots in the disk's GPT: reading them (partitions of type root-x86-64, with
//! their labels) and relabelling one, with the `gpt` crate, which rewrites both headers and
//! partition arrays with their checksums. Only labels change here: partitions never move.

use std::path::Path;

use anyhow::{bail, Context, Result};
use gpt::partition_types::LINUX_ROOT_X64;
use image::version::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The GPT partition number (2 or 3 on our images).
    pub number: u32,
    pub label: String,
    /// Byte offset on the disk and size.
    pub offset: u64,
    pub size: u64,
}

impl Slot {
    pub fn version(&self) -> Option<Version> {
        Version::from_slot_label(&self.label)
    }
}

pub fn read(disk: &Path) -> Result<Vec<Slot>> {
    let table = gpt::GptConfig::new()
        .writable(false)
        .open(disk)
        .with_context(|| format!("reading the partition table of {}", disk.display()))?;
    let block = table.logical_block_size().as_u64();
    let slots: Vec<Slot> = table
        .partitions()
        .iter()
        .filter(|(_, p)| p.part_type_guid == LINUX_ROOT_X64)
        .map(|(n, p)| Slot {
            number: *n,
            label: p.name.clone(),
            offset: p.first_lba * block,
            size: (p.last_lba + 1 - p.first_lba) * block,
        })
        .collect();
    if slots.len() != 2 {
        bail!(
            "{} has {} root slots, not 2: this box has the single-root layout of older images and needs one \
             last reflash with a current image (README: \"Updating boxes\")",
            disk.display(),
            slots.len()
        );
    }
    Ok(slots)
}

/// The slot the running version booted from, and the other one.
pub fn running_and_other(slots: &[Slot], running: &Version) -> Result<(Slot, Slot)> {
    let label = running.slot_label();
    let Some(i) = slots.iter().position(|s| s.label == label) else {
        bail!("no root slot is labelled {label} (the running version); the partition table was changed by hand?");
    };
    Ok((slots[i].clone(), slots[1 - i].clone()))
}

/// Sets partition `number`'s GPT label (at most 36 UTF-16 units).
pub fn set_label(disk: &Path, number: u32, label: &str) -> Result<()> {
    edit(disk, number, |part| part.name = label.to_string(), label)
}

/// Sets partition `number`'s GPT type and label: an adopted box's old /boot becoming a root slot.
pub fn set_type_and_label(disk: &Path, number: u32, kind: gpt::partition_types::Type, label: &str) -> Result<()> {
    edit(
        disk,
        number,
        |part| {
            part.part_type_guid = kind.clone();
            part.name = label.to_string();
        },
        label,
    )
}

fn edit(disk: &Path, number: u32, change: impl FnOnce(&mut gpt::partition::Partition), label: &str) -> Result<()> {
    if label.encode_utf16().count() > 36 {
        bail!("partition label `{label}` is longer than GPT allows (36)");
    }
    let mut table = gpt::GptConfig::new()
        .writable(true)
        .open(disk)
        .with_context(|| format!("opening the partition table of {} for writing", disk.display()))?;
    let mut parts = table.partitions().clone();
    let part = parts.get_mut(&number).with_context(|| format!("{} has no partition {number}", disk.display()))?;
    change(part);
    table.update_partitions(parts).context("updating the partition table")?;
    table.write().with_context(|| format!("writing the partition table of {}", disk.display()))?;
    Ok(())
}
