//! The box's disks as the installer sees them (lsblk's JSON, the old system's /etc/fstab), and
//! which conversion they allow: keep the data (one disk holding one old root with /data/mirror)
//! or a clean flash (a single other disk, after a confirmation). Pure: the program probes.

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum DisksError {
    #[error("lsblk's report cannot be read: {0}")]
    Lsblk(String),
}

/// A block device: a disk or a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    pub kind: String,
    pub fstype: Option<String>,
    /// The disk a partition is on.
    pub parent: Option<String>,
    pub bytes: u64,
}

#[derive(Deserialize)]
struct Report {
    blockdevices: Vec<Device>,
}

#[derive(Deserialize)]
struct Device {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    fstype: Option<String>,
    pkname: Option<String>,
    size: serde_json::Value,
    #[serde(default)]
    children: Vec<Device>,
}

/// The arguments lsblk runs with: `lsblk ARGS`.
pub const LSBLK_ARGS: [&str; 5] = ["-J", "-b", "-p", "-o", "NAME,TYPE,FSTYPE,PKNAME,SIZE"];

/// Reads `lsblk -J -b -p -o NAME,TYPE,FSTYPE,PKNAME,SIZE`, every device once.
pub fn parse_lsblk(json: &str) -> Result<Vec<Block>, DisksError> {
    let report: Report = serde_json::from_str(json).map_err(|e| DisksError::Lsblk(e.to_string()))?;
    let mut out = Vec::new();
    let mut todo: Vec<Device> = report.blockdevices;
    while let Some(d) = todo.pop() {
        // util-linux before 2.33 prints numbers as strings.
        let bytes = d.size.as_u64().or_else(|| d.size.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
        if !out.iter().any(|b: &Block| b.name == d.name) {
            out.push(Block { name: d.name, kind: d.kind, fstype: d.fstype, parent: d.pkname, bytes });
        }
        todo.extend(d.children);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The disks the installer may write: every disk but the stick's.
pub fn other_disks<'a>(blocks: &'a [Block], stick: &str) -> Vec<&'a Block> {
    blocks.iter().filter(|b| b.kind == "disk" && b.name != stick).collect()
}

/// The partitions of `disks` that may be an old root: XFS or ext4.
pub fn root_candidates<'a>(blocks: &'a [Block], disks: &[&Block]) -> Vec<&'a Block> {
    blocks
        .iter()
        .filter(|b| b.kind == "part")
        .filter(|b| b.parent.as_ref().is_some_and(|p| disks.iter().any(|d| &d.name == p)))
        .filter(|b| matches!(b.fstype.as_deref(), Some("xfs" | "ext4")))
        .collect()
}

/// What the installer does with the box's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// Adopt's conversion: `old_root` (on `disk`) holds the old system and /data/mirror.
    Keep { disk: String, old_root: String },
    /// No old root with data: the image over the whole `disk`, once confirmed on the console.
    CleanFlash { disk: String, why: String },
    /// Nothing can be done safely: why, and what to do.
    Stop(String),
}

/// `old_roots`: the candidates that hold etc/fstab and data/mirror.
pub fn decide(disks: &[&Block], old_roots: &[&Block]) -> Conversion {
    let names = || disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    match (old_roots, disks) {
        ([root], _) => match &root.parent {
            Some(disk) => Conversion::Keep { disk: disk.clone(), old_root: root.name.clone() },
            None => Conversion::Stop(format!("{} is on no disk lsblk names", root.name)),
        },
        ([], [disk]) => Conversion::CleanFlash {
            disk: disk.name.clone(),
            why: "no partition of it holds an old system with /data/mirror".into(),
        },
        ([], []) => Conversion::Stop("the box has no disk but the stick".into()),
        ([], _) => Conversion::Stop(format!(
            "the box has several disks ({}) and none holds an old system with /data/mirror: unplug all but the \
             one to install onto, then boot the stick again",
            names()
        )),
        (several, _) => Conversion::Stop(format!(
            "several partitions hold an old system with /data/mirror ({}): unplug the disks not to convert, then \
             boot the stick again",
            several.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The source and type /etc/fstab gives `mountpoint` (`UUID=…`, `LABEL=…` or a device), for
/// mount(8), which resolves them.
pub fn fstab_source(fstab: &str, mountpoint: &str) -> Option<(String, String)> {
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[1] == mountpoint)
        .map(|f| (f[0].to_string(), f[2].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DISKS: &str = r#"{"blockdevices": [
      {"name": "/dev/sda", "type": "disk", "fstype": null, "pkname": null, "size": 4000000000, "children": [
        {"name": "/dev/sda1", "type": "part", "fstype": "vfat", "pkname": "/dev/sda", "size": 67108864},
        {"name": "/dev/sda2", "type": "part", "fstype": "erofs", "pkname": "/dev/sda", "size": 300000000}]},
      {"name": "/dev/vda", "type": "disk", "fstype": null, "pkname": null, "size": "10737418240", "children": [
        {"name": "/dev/vda1", "type": "part", "fstype": "vfat", "pkname": "/dev/vda", "size": 629145600},
        {"name": "/dev/vda2", "type": "part", "fstype": "xfs", "pkname": "/dev/vda", "size": 1073741824},
        {"name": "/dev/vda3", "type": "part", "fstype": "xfs", "pkname": "/dev/vda", "size": 6442450944},
        {"name": "/dev/vda4", "type": "part", "fstype": "swap", "pkname": "/dev/vda", "size": 2147483648}]},
      {"name": "/dev/sr0", "type": "rom", "fstype": null, "pkname": null, "size": 1024}]}"#;

    #[test]
    fn the_sticks_disk_is_never_a_target_and_xfs_partitions_are_root_candidates() {
        let blocks = parse_lsblk(TWO_DISKS).unwrap();
        assert_eq!(blocks.len(), 9);
        assert_eq!(blocks.iter().find(|b| b.name == "/dev/vda").unwrap().bytes, 10_737_418_240, "a size as text");
        let disks = other_disks(&blocks, "/dev/sda");
        assert_eq!(disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["/dev/vda"]);
        let candidates = root_candidates(&blocks, &disks);
        assert_eq!(candidates.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["/dev/vda2", "/dev/vda3"]);
        assert!(parse_lsblk("not json").is_err());
    }

    #[test]
    fn one_old_root_keeps_the_data_none_flashes_a_single_disk_and_doubt_stops() {
        let blocks = parse_lsblk(TWO_DISKS).unwrap();
        let disks = other_disks(&blocks, "/dev/sda");
        let vda3 = blocks.iter().find(|b| b.name == "/dev/vda3").unwrap();
        assert_eq!(decide(&disks, &[vda3]), Conversion::Keep { disk: "/dev/vda".into(), old_root: "/dev/vda3".into() });
        assert!(matches!(decide(&disks, &[]), Conversion::CleanFlash { disk, .. } if disk == "/dev/vda"));
        let both = other_disks(&blocks, "/dev/none");
        match decide(&both, &[]) {
            Conversion::Stop(why) => assert!(why.contains("unplug all but the one"), "{why}"),
            other => panic!("two disks without data are not guessed between: {other:?}"),
        }
        let vda2 = blocks.iter().find(|b| b.name == "/dev/vda2").unwrap();
        assert!(matches!(decide(&disks, &[vda2, vda3]), Conversion::Stop(_)));
    }

    #[test]
    fn fstab_names_boot_and_the_esp_by_uuid() {
        let fstab = "# comment /boot\nUUID=r / xfs defaults 0 0\nUUID=b /boot xfs defaults 0 0\n\
                     UUID=E-1 /boot/efi vfat umask=0077 0 2\nUUID=s none swap defaults 0 0\n";
        assert_eq!(fstab_source(fstab, "/boot"), Some(("UUID=b".into(), "xfs".into())));
        assert_eq!(fstab_source(fstab, "/boot/efi"), Some(("UUID=E-1".into(), "vfat".into())));
        assert_eq!(fstab_source(fstab, "/srv"), None);
    }
}
