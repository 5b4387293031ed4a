//! The disk layout and its GPT: the ESP, root slot A (the image's root filesystem) and root slot
//! B of the same size (left a hole, labelled `_empty`, for the first update), written with the
//! `gpt` crate with disk and partition UUIDs derived from a seed (the site name), so the same
//! site always gets the same table. The state and data partitions are not here: the box makes
//! them on first boot in the rest of its disk, whatever its size.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use gpt::partition_types::{Type, EFI, LINUX_ROOT_X64};
use uuid::Uuid;

use crate::ImageError;

pub const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// GPT backup header plus its 128-entry array at the end of the disk.
const GPT_TAIL: u64 = 33 * SECTOR;

/// Byte offsets of each partition; everything 1 MiB aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp_offset: u64,
    pub esp_size: u64,
    /// Root slot A, which holds the image's root filesystem.
    pub root_offset: u64,
    /// The size of each root slot.
    pub root_size: u64,
    /// Root slot B: as big as A, nothing written at build time.
    pub spare_offset: u64,
    pub disk_size: u64,
}

/// The size of each root slot. Fixed for the life of a box (an installed disk's partitions never
/// move), so it holds any future root image: the read-only, compressed root with its hash tree
/// (a few hundred MiB; a build refuses one over 85 % of a slot). 1 GiB is also what the running
/// fleet's boxes have to give: their old /boot partition (1 GiB) and swap (2 GiB) become the two
/// slots when a box is adopted.
pub const SLOT_SIZE: u64 = 1 << 30;

/// Plans a disk holding an ESP and two root slots of the given sizes (rounded up to MiB).
pub fn plan(esp_size: u64, slot_size: u64) -> Layout {
    let esp_size = esp_size.div_ceil(MIB) * MIB;
    let root_size = slot_size.div_ceil(MIB) * MIB;
    let esp_offset = MIB;
    let root_offset = esp_offset + esp_size;
    let spare_offset = root_offset + root_size;
    // One spare MiB at the end holds the backup GPT and keeps the size a whole number of MiB.
    let disk_size = spare_offset + root_size + MIB;
    Layout { esp_offset, esp_size, root_offset, root_size, spare_offset, disk_size }
}

/// Partition labels: the ESP's, and a free root slot's (systemd-sysupdate's convention). An
/// installed slot is labelled `micromirror_<VERSION>` (`Version::slot_label`), which its UKI
/// names as root=PARTLABEL=.
pub const ESP_LABEL: &str = "esp";
pub const EMPTY_SLOT_LABEL: &str = "_empty";

/// A UUID that is the same for the same seed and purpose ("disk", "esp", "root", "rootfs").
pub fn seeded_uuid(seed: &str, purpose: &str) -> Uuid {
    // A fixed namespace of our own; v5 hashes (namespace, name).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6d69_6372_6f6d_6972_726f_7220_696d_6167);
    Uuid::new_v5(&NAMESPACE, format!("{seed}/{purpose}").as_bytes())
}

/// Writes a protective MBR and primary and backup GPT describing `layout` onto `file`, whose
/// length must already be `layout.disk_size`; slot A is labelled `root_label`, slot B empty.
pub fn write_gpt(file: &mut File, layout: &Layout, seed: &str, root_label: &str) -> Result<(), ImageError> {
    // The partitions' UUIDs are seeded by their place, not their labels (which change).
    let parts = [
        TablePart { place: "esp", label: ESP_LABEL, kind: EFI, offset: layout.esp_offset, size: layout.esp_size },
        TablePart {
            place: "root-a",
            label: root_label,
            kind: LINUX_ROOT_X64,
            offset: layout.root_offset,
            size: layout.root_size,
        },
        TablePart {
            place: "root-b",
            label: EMPTY_SLOT_LABEL,
            kind: LINUX_ROOT_X64,
            offset: layout.spare_offset,
            size: layout.root_size,
        },
    ];
    debug_assert!(layout.disk_size >= layout.root_offset + layout.root_size + GPT_TAIL);
    write_table(file, layout.disk_size, seed, &parts)
}

/// One partition of a table: `place` seeds its UUID, the rest is what the table says.
pub struct TablePart<'a> {
    pub place: &'a str,
    pub label: &'a str,
    pub kind: Type,
    pub offset: u64,
    pub size: u64,
}

/// Writes a protective MBR and primary and backup GPT holding `parts`, numbered from 1, onto
/// `file`, whose length must already be `disk_size`.
pub fn write_table(file: &mut File, disk_size: u64, seed: &str, parts: &[TablePart]) -> Result<(), ImageError> {
    let len = file.metadata().map_err(ImageError::Io)?.len();
    if len != disk_size {
        return Err(ImageError::Layout(format!("disk file is {len} bytes, layout wants {disk_size}")));
    }
    let gpt_err = |e: gpt::GptError| ImageError::Gpt(e.to_string());
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from((disk_size / SECTOR) - 1).unwrap_or(0xFFFF_FFFF));
    mbr.overwrite_lba0(file).map_err(|e| ImageError::Gpt(e.to_string()))?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(seeded_uuid(seed, "disk")))
        .map_err(gpt_err)?;
    let mut table = std::collections::BTreeMap::new();
    for (i, p) in parts.iter().enumerate() {
        let id = u32::try_from(i + 1).map_err(|_| ImageError::Layout("too many partitions".into()))?;
        table.insert(id, partition(seed, p.place, p.label, p.kind.clone(), p.offset, p.size));
    }
    disk.update_partitions(table).map_err(gpt_err)?;
    disk.write().map_err(gpt_err)?;
    file.flush().map_err(ImageError::Io)?;
    Ok(())
}

/// The size of the backup GPT (its header and 128-entry array) at the end of a disk.
pub const BACKUP_GPT_BYTES: u64 = GPT_TAIL;

fn partition(seed: &str, place: &str, name: &str, kind: Type, offset: u64, size: u64) -> gpt::partition::Partition {
    gpt::partition::Partition {
        part_type_guid: kind,
        part_guid: seeded_uuid(seed, place),
        first_lba: offset / SECTOR,
        last_lba: (offset + size) / SECTOR - 1,
        flags: 0,
        name: name.to_string(),
    }
}

/// Writes `data` at `offset` leaving all-zero 64 KiB blocks as holes, so the image stays sparse.
pub fn write_sparse(file: &mut File, offset: u64, data: &[u8]) -> Result<(), ImageError> {
    const BLOCK: usize = 64 << 10;
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        file.seek(SeekFrom::Start(offset + (i * BLOCK) as u64)).map_err(ImageError::Io)?;
        file.write_all(chunk).map_err(ImageError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_ordered() {
        let l = plan(256 * MIB, 700 * MIB + 5);
        assert_eq!(l.esp_offset, MIB);
        assert_eq!(l.root_offset, 257 * MIB);
        assert_eq!(l.root_size, 701 * MIB);
        assert_eq!(l.spare_offset, 257 * MIB + 701 * MIB);
        assert_eq!(l.disk_size, 257 * MIB + 2 * 701 * MIB + MIB);
    }

    #[test]
    fn seeded_uuids_are_stable_and_distinct() {
        assert_eq!(seeded_uuid("fmt2", "disk"), seeded_uuid("fmt2", "disk"));
        assert_ne!(seeded_uuid("fmt2", "disk"), seeded_uuid("fmt2", "root"));
        assert_ne!(seeded_uuid("fmt2", "disk"), seeded_uuid("demo", "disk"));
    }

    #[test]
    fn gpt_reads_back_with_seeded_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        let l = plan(64 * MIB, 64 * MIB);
        let mut f = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.set_len(l.disk_size).unwrap();
        write_gpt(&mut f, &l, "lab", "micromirror_20261201.101500").unwrap();
        drop(f);
        let disk = gpt::GptConfig::new().open(&path).unwrap();
        assert_eq!(*disk.guid(), seeded_uuid("lab", "disk"));
        let parts: Vec<_> = disk.partitions().values().collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].part_type_guid, EFI);
        assert_eq!(parts[1].name, "micromirror_20261201.101500");
        assert_eq!(parts[1].first_lba * 512, l.root_offset);
        assert_eq!(parts[1].part_guid, seeded_uuid("lab", "root-a"));
        assert_eq!((parts[2].name.as_str(), &parts[2].part_type_guid), ("_empty", &LINUX_ROOT_X64));
        assert_eq!(parts[2].first_lba * 512, l.spare_offset);
        assert_eq!((parts[2].last_lba + 1 - parts[2].first_lba) * 512, l.root_size, "both slots alike");
    }
}
