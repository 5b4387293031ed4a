//! The updater's status (/var/lib/micromirror/update/status.json): written by mirror-update,
//! read by mirror-server's metrics, the login banner, the boot report and people. Written
//! atomically, like the sync status files; a file that does not read counts as no status.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the root slot the box is not running holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtherSlot {
    /// Nothing installed (`_empty`).
    Empty,
    /// An older version, kept to come back to.
    Previous,
    /// A newer version, installed, waiting for the maintenance window to boot.
    Pending,
    /// A version that was booted and did not prove itself healthy.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The version booted now.
    pub running: String,
    /// Whether the running version's boot entry is marked good (its health check passed).
    pub running_blessed: bool,
    /// The version in the other root slot, if any.
    pub other_version: Option<String>,
    pub other_slot: OtherSlot,
    /// The newest version the update server offers (signature checked).
    pub newest_available: Option<String>,
    /// Unix seconds of the last check of the update server.
    pub last_check: Option<i64>,
    pub last_error: Option<String>,
    /// Versions that were booted and failed; they are never installed or booted again.
    pub failed_versions: Vec<String>,
    /// Versions whose trial failed while the box's surroundings failed too (the previous
    /// version failed the same checks): installed again later by themselves.
    #[serde(default)]
    pub deferred_versions: Vec<String>,
    /// Unix seconds at which the box reboots into the pending version.
    pub reboot_at: Option<i64>,
    /// What the updater is doing now ("downloading … 40 %", "waiting for the window").
    #[serde(default)]
    pub activity: Option<String>,
}

impl UpdateStatus {
    /// A box running `running` that knows nothing more yet.
    pub fn fresh(running: &str) -> UpdateStatus {
        UpdateStatus {
            running: running.to_string(),
            running_blessed: false,
            other_version: None,
            other_slot: OtherSlot::Empty,
            newest_available: None,
            last_check: None,
            last_error: None,
            failed_versions: Vec::new(),
            deferred_versions: Vec::new(),
            reboot_at: None,
            activity: None,
        }
    }
}

impl OtherSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            OtherSlot::Empty => "empty",
            OtherSlot::Previous => "previous",
            OtherSlot::Pending => "pending",
            OtherSlot::Failed => "failed",
        }
    }
}

pub const FILE: &str = "status.json";

pub fn read(update_dir: &Path) -> Option<UpdateStatus> {
    serde_json::from_str(&std::fs::read_to_string(update_dir.join(FILE)).ok()?).ok()
}

pub fn write(update_dir: &Path, status: &UpdateStatus) -> std::io::Result<()> {
    std::fs::create_dir_all(update_dir)?;
    let tmp = update_dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, update_dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let st = UpdateStatus {
            running: "20261201.101500".into(),
            running_blessed: true,
            other_version: Some("20261203.080000".into()),
            other_slot: OtherSlot::Failed,
            newest_available: Some("20261203.080000".into()),
            last_check: Some(1),
            last_error: None,
            failed_versions: vec!["20261203.080000".into()],
            deferred_versions: vec!["20261202.000000".into()],
            reboot_at: None,
            activity: Some("waiting for the maintenance window".into()),
        };
        write(dir.path(), &st).unwrap();
        assert_eq!(read(dir.path()), Some(st));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"other_slot\": \"failed\""), "{text}");
    }
}
