//! The EFI system partition as bytes: a FAT32 volume holding a few files (the UKI at
//! \EFI\BOOT\BOOTX64.EFI). Built in memory with the `fatfs` crate, never mounted, and made
//! reproducible: fixed volume id, 1980-01-01 timestamps (fatfs without chrono), sorted inputs.

use std::io::{Cursor, Write};

use crate::ImageError;

pub const SECTOR: usize = 512;
/// FAT32 needs at least 65,525 clusters; the largest cluster size that keeps a margin above it.
fn cluster_size(volume: usize) -> u32 {
    [4096u32, 2048, 1024].into_iter().find(|&c| volume / c as usize >= 70_000).unwrap_or(512)
}

/// A file to place on the ESP, e.g. ("EFI/BOOT/BOOTX64.EFI", bytes).
pub struct EspFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// Builds a FAT32 volume of `size` bytes containing `files`.
pub fn build_esp(size: usize, volume_id: u32, files: &mut [EspFile<'_>]) -> Result<Vec<u8>, ImageError> {
    if !size.is_multiple_of(SECTOR) || size < 64 << 20 {
        return Err(ImageError::Layout(format!("ESP size {size} must be a multiple of 512 and at least 64 MiB")));
    }
    let cluster = cluster_size(size);
    let needed: usize = files.iter().map(|f| f.data.len() + cluster as usize).sum();
    if needed > size * 9 / 10 {
        return Err(ImageError::Layout(format!(
            "ESP of {} MiB is too small for {} MiB of files",
            size >> 20,
            needed >> 20
        )));
    }
    files.sort_by(|a, b| a.path.cmp(b.path));
    let mut disk = Cursor::new(vec![0u8; size]);
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(cluster)
        .volume_id(volume_id)
        .volume_label(*b"ESP        ");
    fatfs::format_volume(&mut disk, options).map_err(|e| ImageError::Fat(e.to_string()))?;
    {
        let fs =
            fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).map_err(|e| ImageError::Fat(e.to_string()))?;
        for file in files.iter() {
            let root = fs.root_dir();
            let (dir_path, _) = file.path.rsplit_once('/').unwrap_or(("", file.path));
            let mut partial = String::new();
            for part in dir_path.split('/').filter(|p| !p.is_empty()) {
                if !partial.is_empty() {
                    partial.push('/');
                }
                partial.push_str(part);
                root.create_dir(&partial).map_err(|e| ImageError::Fat(format!("{partial}: {e}")))?;
            }
            let mut f = root.create_file(file.path).map_err(|e| ImageError::Fat(format!("{}: {e}", file.path)))?;
            f.truncate().map_err(|e| ImageError::Fat(e.to_string()))?;
            f.write_all(file.data).map_err(|e| ImageError::Fat(format!("{}: {e}", file.path)))?;
        }
        fs.unmount().map_err(|e| ImageError::Fat(e.to_string()))?;
    }
    let mut bytes = disk.into_inner();
    fix_dot_entries(&mut bytes)?;
    Ok(bytes)
}

/// The bytes of the file at `path` (e.g. "EFI/BOOT/BOOTX64.EFI") in the FAT volume `esp`.
pub fn read_file(esp: &[u8], path: &str) -> Result<Vec<u8>, ImageError> {
    let mut volume = Cursor::new(esp.to_vec());
    let fs =
        fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new()).map_err(|e| ImageError::Fat(e.to_string()))?;
    let mut file = fs.root_dir().open_file(path).map_err(|e| ImageError::Fat(format!("{path}: {e}")))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| ImageError::Fat(format!("{path}: {e}")))?;
    Ok(bytes)
}

/// fatfs 0.3.6 writes a long-name entry in front of "." and ".." in every subdirectory
/// (rust-fatfs issue 117); fsck.vfat rightly flags that, and strict firmware may too. The crate
/// has no option to avoid it, so this pass rewrites each subdirectory's first entries as the
/// FAT specification wants them: "." first, ".." second, the freed slots marked deleted.
pub fn fix_dot_entries(vol: &mut [u8]) -> Result<(), ImageError> {
    let bpb = Bpb::read(vol)?;
    for cluster in subdirectory_clusters(vol)? {
        repair_first_entries(vol, &bpb, cluster);
    }
    write_free_cluster_summary(vol, &bpb);
    Ok(())
}

/// fatfs leaves the FSInfo free-cluster count "unknown", which fsck.vfat reports; fill it in.
fn write_free_cluster_summary(vol: &mut [u8], bpb: &Bpb) {
    let total_sectors = u32::from_le_bytes([vol[32], vol[33], vol[34], vol[35]]) as usize;
    let clusters = (total_sectors * 512 - bpb.data_offset) / bpb.cluster_bytes;
    let fat = &vol[bpb.fat_offset..];
    let entry =
        |n: usize| u32::from_le_bytes([fat[n * 4], fat[n * 4 + 1], fat[n * 4 + 2], fat[n * 4 + 3]]) & 0x0FFF_FFFF;
    let free: Vec<usize> = (2..clusters + 2).filter(|&n| entry(n) == 0).collect();
    let info = usize::from(u16::from_le_bytes([vol[48], vol[49]])) * 512;
    if &vol[info..info + 4] != b"RRaA" {
        return;
    }
    let count = u32::try_from(free.len()).unwrap_or(u32::MAX);
    let next = free.first().map_or(0xFFFF_FFFF, |&n| u32::try_from(n).unwrap_or(u32::MAX));
    vol[info + 488..info + 492].copy_from_slice(&count.to_le_bytes());
    vol[info + 492..info + 496].copy_from_slice(&next.to_le_bytes());
}

/// First clusters of every directory below the root, found by walking from the root.
fn subdirectory_clusters(vol: &[u8]) -> Result<Vec<u32>, ImageError> {
    let bpb = Bpb::read(vol)?;
    let mut pending = vec![bpb.root_cluster];
    let mut visited = std::collections::BTreeSet::new();
    while let Some(dir_cluster) = pending.pop() {
        if !visited.insert(dir_cluster) {
            continue;
        }
        for cluster in bpb.chain(vol, dir_cluster) {
            let start = bpb.cluster_offset(cluster);
            for entry in vol[start..start + bpb.cluster_bytes].chunks(32) {
                if entry[0] == 0 {
                    break;
                }
                let is_dir = entry[11] & 0x10 != 0 && entry[11] != 0x0F;
                if entry[0] == 0xE5 || !is_dir || entry[0] == b'.' {
                    continue;
                }
                let first = (u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16)
                    | u32::from(u16::from_le_bytes([entry[26], entry[27]]));
                if first >= 2 {
                    pending.push(first);
                }
            }
        }
    }
    visited.remove(&bpb.root_cluster);
    Ok(visited.into_iter().collect())
}

fn repair_first_entries(vol: &mut [u8], bpb: &Bpb, cluster: u32) {
    let start = bpb.cluster_offset(cluster);
    let entries = &mut vol[start..start + bpb.cluster_bytes];
    let is_lfn = |e: &[u8]| e[11] == 0x0F && e[0] != 0xE5;
    let name_is = |e: &[u8], n: &[u8; 11]| &e[..11] == n;
    let dot = *b".          ";
    let dotdot = *b"..         ";
    if is_lfn(&entries[0..32])
        && name_is(&entries[32..64], &dot)
        && is_lfn(&entries[64..96])
        && name_is(&entries[96..128], &dotdot)
    {
        let dot_entry: [u8; 32] = entries[32..64].try_into().unwrap_or([0; 32]);
        let dotdot_entry: [u8; 32] = entries[96..128].try_into().unwrap_or([0; 32]);
        entries[0..32].copy_from_slice(&dot_entry);
        entries[32..64].copy_from_slice(&dotdot_entry);
        // ".." of a first-level directory names the root as cluster 0, whatever its real cluster.
        let parent = (u32::from(u16::from_le_bytes([entries[52], entries[53]])) << 16)
            | u32::from(u16::from_le_bytes([entries[58], entries[59]]));
        if parent == bpb.root_cluster {
            for o in [52, 53, 58, 59] {
                entries[o] = 0;
            }
        }
        for slot in [64..96, 96..128] {
            entries[slot.clone()].fill(0);
            entries[slot.start] = 0xE5;
        }
    }
}

/// The few BIOS parameter block fields needed to walk directories.
struct Bpb {
    cluster_bytes: usize,
    fat_offset: usize,
    data_offset: usize,
    root_cluster: u32,
}

impl Bpb {
    fn read(vol: &[u8]) -> Result<Bpb, ImageError> {
        if vol.len() < 512 || vol[510] != 0x55 || vol[511] != 0xAA {
            return Err(ImageError::Fat("no FAT boot sector".into()));
        }
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([vol[o], vol[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([vol[o], vol[o + 1], vol[o + 2], vol[o + 3]]);
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = usize::from(vol[13]);
        let reserved = u16_at(14);
        let fats = usize::from(vol[16]);
        let fat_sectors = u32_at(36) as usize;
        Ok(Bpb {
            cluster_bytes: bytes_per_sector * sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            data_offset: (reserved + fats * fat_sectors) * bytes_per_sector,
            root_cluster: u32_at(44),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> usize {
        self.data_offset + (cluster as usize - 2) * self.cluster_bytes
    }

    fn chain(&self, vol: &[u8], first: u32) -> Vec<u32> {
        let mut out = vec![first];
        let mut c = first;
        let limit = (vol.len() - self.data_offset) / self.cluster_bytes;
        while out.len() <= limit {
            let o = self.fat_offset + c as usize * 4;
            let next = u32::from_le_bytes([vol[o], vol[o + 1], vol[o + 2], vol[o + 3]]) & 0x0FFF_FFFF;
            if !(2..0x0FFF_FFF8).contains(&next) {
                break;
            }
            out.push(next);
            c = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("EFI/BOOT/BOOTX64.EFI".into(), vec![7u8; 100_000]),
            ("loader/entries/x.conf".into(), b"title x\n".to_vec()),
        ]
    }

    fn build() -> Vec<u8> {
        let owned = files();
        let mut list: Vec<EspFile> = owned.iter().map(|(p, d)| EspFile { path: p, data: d }).collect();
        build_esp(64 << 20, 0x1234_5678, &mut list).unwrap()
    }

    #[test]
    fn files_read_back_and_dot_entries_come_first() {
        let vol = build();
        let fs = fatfs::FileSystem::new(Cursor::new(vol.clone()), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut data = Vec::new();
        fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 100_000]);
        assert_eq!(read_file(&vol, "loader/entries/x.conf").unwrap(), b"title x\n");
        assert!(read_file(&vol, "loader/none.conf").is_err());
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let names: Vec<String> =
            fs.root_dir().open_dir("EFI/BOOT").unwrap().iter().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![".", "..", "BOOTX64.EFI"]);
        // Raw check: every subdirectory starts with "." then "..", not with a long-name entry.
        let dirs = subdirectory_clusters(&vol).unwrap();
        assert_eq!(dirs.len(), 4, "EFI, EFI/BOOT, loader, loader/entries");
        let bpb = Bpb::read(&vol).unwrap();
        for c in dirs {
            let o = bpb.cluster_offset(c);
            assert_eq!(&vol[o..o + 11], b".          ");
            assert_eq!(&vol[o + 32..o + 43], b"..         ");
        }
    }

    #[test]
    fn fsck_vfat_finds_nothing_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        std::fs::write(&path, build()).unwrap();
        let out = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("fsck.vfat is needed (Debian package dosfstools; `cargo xtask test` installs it)");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fsck.vfat -n failed:\n{text}");
        assert!(!text.contains("will be") && !text.contains("Dirty") && !text.to_lowercase().contains("bad"), "{text}");
    }

    #[test]
    fn same_inputs_give_same_bytes() {
        assert!(build() == build());
    }
}
