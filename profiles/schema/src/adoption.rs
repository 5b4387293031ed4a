//! The record of an adoption (a fleet box moved onto the image by `cargo xtask adopt`), kept in
//! the box's state folder (`Paths::adoption_file`): written by adopt on the old system before the
//! trial boot, read by the new system's updater (no update is installed while the adoption is on
//! trial: the old system's /boot is not a slot yet) and by its rollback (a failed trial reboots,
//! and the firmware brings the old system back), and marked committed by `mirror-update
//! adopt-commit` (or, for the USB installer's adoptions, by the new system's own health check). Its JSON form is the contract between the two sides.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new system boots once through UEFI BootNext; the old one is still first.
    Trial,
    /// The new system is first in BootOrder, the old /boot is root slot B, the old OS is gone.
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub phase: Phase,
    /// The version adopt wrote into slot A.
    pub version: String,
    /// The GPT partition number of the old /boot, which becomes root slot B at the commit.
    pub old_boot_partition: u32,
    /// Unix time adopt began.
    pub started_at: i64,
    /// Unix time of the commit.
    #[serde(default)]
    pub committed_at: Option<i64>,
    /// The new system commits itself once its health check passes: the USB installer's
    /// adoptions, where nobody waits outside to run `adopt-commit`.
    #[serde(default)]
    pub self_commit: bool,
}

impl Adoption {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Adoption, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The record at `path`, if the box was adopted (an unreadable one counts as none).
    pub fn load(path: &std::path::Path) -> Option<Adoption> {
        Adoption::from_json(&std::fs::read_to_string(path).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_reads_back_as_written() {
        let a = Adoption {
            phase: Phase::Trial,
            version: "20261206.120000".into(),
            old_boot_partition: 2,
            started_at: 1_796_000_000,
            committed_at: None,
            self_commit: false,
        };
        let text = a.to_json();
        assert!(text.contains("\"phase\": \"trial\""), "{text}");
        assert_eq!(Adoption::from_json(&text).unwrap(), a);
        let older = text.replace(",\n  \"self_commit\": false", "");
        assert!(!older.contains("self_commit"), "{older}");
        assert_eq!(Adoption::from_json(&older).unwrap(), a, "a record from before self_commit reads as adopt's");
    }
}
