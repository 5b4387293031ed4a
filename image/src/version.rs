//! Image versions and the names built from them: root slot labels, boot entry (UKI) file names
//! with systemd-boot's boot counters, and the update artifacts. A version is the build's UTC
//! time as `YYYYMMDD.HHMMSS`: it increases with every commit, is the same for the same inputs,
//! and sorts the same way as text, as numbers and under systemd-boot's version comparison.
//! Pure names only: nothing here reads a disk or an ESP.

use std::fmt;

use crate::ImageError;

/// What every name starts with; also the UKI's `IMAGE_ID`.
pub const IMAGE_ID: &str = "micromirror";

/// The zstd window of the root image artifact (128 MiB): the build compresses with it and the
/// box's decoder allows exactly it, which bounds the box's memory for decompression.
pub const ROOT_ZSTD_WINDOW_LOG: u32 = 27;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    /// The version of a build made at `epoch` (Unix seconds, UTC).
    pub fn from_epoch(epoch: i64) -> Result<Version, ImageError> {
        let ts = jiff::Timestamp::from_second(epoch)
            .map_err(|e| ImageError::Layout(format!("build time {epoch} is not a time: {e}")))?;
        Ok(Version(ts.strftime("%Y%m%d.%H%M%S").to_string()))
    }

    /// Parses `YYYYMMDD.HHMMSS`; anything else is not a version of ours.
    pub fn parse(text: &str) -> Option<Version> {
        let (date, time) = text.split_once('.')?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        (digits(date, 8) && digits(time, 6)).then(|| Version(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The GPT label of a root slot holding this version (root=PARTLABEL= names it).
    pub fn slot_label(&self) -> String {
        format!("{IMAGE_ID}_{}", self.0)
    }

    /// The slot label's inverse.
    pub fn from_slot_label(label: &str) -> Option<Version> {
        Version::parse(label.strip_prefix(IMAGE_ID)?.strip_prefix('_')?)
    }

    /// The boot entry's file name in \EFI\Linux: with `Some(tries)` boots left to prove itself,
    /// or blessed (`None`: no counter, systemd-boot never counts it).
    pub fn entry_name(&self, tries: Option<u32>) -> String {
        match tries {
            Some(n) => format!("{IMAGE_ID}_{}+{n}.efi", self.0),
            None => format!("{IMAGE_ID}_{}.efi", self.0),
        }
    }

    /// The update artifacts: the compressed root slot image and the UKI.
    pub fn root_artifact(&self) -> String {
        format!("{IMAGE_ID}_{}.root.zst", self.0)
    }

    pub fn uki_artifact(&self) -> String {
        format!("{IMAGE_ID}_{}.efi", self.0)
    }

    /// The version an artifact name belongs to.
    pub fn of_artifact(name: &str) -> Option<Version> {
        let rest = name.strip_prefix(IMAGE_ID)?.strip_prefix('_')?;
        let v = rest.strip_suffix(".root.zst").or_else(|| rest.strip_suffix(".efi"))?;
        Version::parse(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a boot entry stands in systemd-boot's counting (the Boot Loader Specification's
/// `NAME+LEFT[-DONE].efi`; no counter means the entry was blessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Marked good by systemd-bless-boot after its health check passed.
    Blessed,
    /// Still proving itself: `left` tries remain, `done` were used.
    OnTrial { left: u32, done: u32 },
    /// No tries left: it failed every boot it was given and sorts behind every other entry.
    Failed,
}

/// A boot entry file in \EFI\Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub version: Version,
    pub standing: Standing,
}

impl Entry {
    /// Reads a file name such as `micromirror_20261201.101500+2-1.efi`; other files are not ours.
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_suffix(".efi")?.strip_prefix(IMAGE_ID)?.strip_prefix('_')?;
        let (version, counter) = match stem.split_once('+') {
            Some((v, c)) => (v, Some(c)),
            None => (stem, None),
        };
        let version = Version::parse(version)?;
        let standing = match counter {
            None => Standing::Blessed,
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
                    None => (c.parse().ok()?, 0),
                };
                if left == 0 {
                    Standing::Failed
                } else {
                    Standing::OnTrial { left, done }
                }
            }
        };
        Some(Entry { file: file.to_string(), version, standing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_build_time_and_sort_by_it() {
        let v = Version::from_epoch(1_796_121_434).unwrap();
        assert_eq!(v.as_str(), "20261201.103714");
        assert!(Version::from_epoch(1_796_121_435).unwrap() > v);
        assert!(Version::from_epoch(1_800_000_000).unwrap() > Version::from_epoch(1_796_121_434).unwrap());
        assert_eq!(Version::parse("20261201.103714"), Some(v.clone()));
        for bad in ["2026121.101714", "20261201", "20261201.10171x", "v20261201.103714", ""] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        let v = Version::parse("20261201.103714").unwrap();
        assert_eq!(v.slot_label(), "micromirror_20261201.103714");
        assert_eq!(Version::from_slot_label(&v.slot_label()), Some(v.clone()));
        assert_eq!(Version::from_slot_label("_empty"), None);
        assert_eq!(v.entry_name(Some(3)), "micromirror_20261201.103714+3.efi");
        assert_eq!(Entry::parse(&v.entry_name(None)).map(|e| e.standing), Some(Standing::Blessed));
        assert_eq!(Version::of_artifact(&v.root_artifact()), Some(v.clone()));
        assert_eq!(Version::of_artifact(&v.uki_artifact()), Some(v.clone()));
        assert_eq!(Version::of_artifact("SHA256SUMS"), None);
    }

    #[test]
    fn entries_tell_blessed_on_trial_and_failed_apart() {
        let standing = |f: &str| Entry::parse(f).map(|e| e.standing);
        assert_eq!(standing("micromirror_20261201.103714.efi"), Some(Standing::Blessed));
        assert_eq!(standing("micromirror_20261201.103714+3.efi"), Some(Standing::OnTrial { left: 3, done: 0 }));
        assert_eq!(standing("micromirror_20261201.103714+1-2.efi"), Some(Standing::OnTrial { left: 1, done: 2 }));
        assert_eq!(standing("micromirror_20261201.103714+0-3.efi"), Some(Standing::Failed));
        assert_eq!(standing("other.efi"), None);
        assert_eq!(standing("micromirror_20261201.103714+x.efi"), None);
    }
}
