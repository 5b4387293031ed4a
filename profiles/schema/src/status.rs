//! A project's sync status (/var/lib/micromirror/sync/PROJECT.json): the API between
//! mirror-sync (writer), mirror-server's metrics and `mirror-sync status` (readers). Written
//! atomically (temp file + rename), so a reader never sees half a file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Failed,
    /// The max-delete guard refused the upstream's deletions.
    Refused,
    Running,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub files_transferred: u64,
    pub files_deleted: u64,
    pub bytes_received: u64,
    /// Regular files in the tree after the run (from rsync's --stats).
    pub files_total: u64,
    /// Apparent size of the tree after the run (rsync's "Total file size").
    pub tree_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub project: String,
    /// The folder under the mirror root (metrics key).
    pub project_path: String,
    pub state: Outcome,
    /// Unix seconds.
    pub started: i64,
    pub ended: Option<i64>,
    pub last_success: Option<i64>,
    pub error: Option<String>,
    pub stats: Stats,
    /// Bytes the project's folder takes on disk after the last run.
    pub size_bytes: u64,
    pub log_file: Option<PathBuf>,
}

impl Status {
    /// A run of `project` (kept in `project_path`) that started at `started` and has no result yet.
    pub fn running(project: &str, project_path: &str, started: i64) -> Status {
        Status {
            project: project.into(),
            project_path: project_path.into(),
            state: Outcome::Running,
            started,
            ended: None,
            last_success: None,
            error: None,
            stats: Stats::default(),
            size_bytes: 0,
            log_file: None,
        }
    }
}

pub fn path_for(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(format!("{project}.json"))
}

pub fn read(state_dir: &Path, project: &str) -> Option<Status> {
    let text = std::fs::read_to_string(path_for(state_dir, project)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the status atomically; a finished run's status is also made durable (fsync) before
/// it replaces the old one, a "running" marker is not worth the wait.
pub fn write(state_dir: &Path, status: &Status) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let final_path = path_for(state_dir, &status.project);
    let tmp = state_dir.join(format!(".{}.json.tmp", status.project));
    let data = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    if status.state != Outcome::Running {
        std::fs::File::open(&tmp)?.sync_all()?;
    }
    std::fs::rename(&tmp, &final_path)
}

/// Bytes on disk per project folder, from every status file in `dir`.
pub fn disk_usage(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Default::default();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Status>(&text).ok())
        .map(|st| (st.project_path, st.size_bytes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let s = Status {
            project: "arch".into(),
            project_path: "archlinux".into(),
            state: Outcome::Success,
            started: 1,
            ended: Some(2),
            last_success: Some(2),
            error: None,
            stats: Stats { files_transferred: 3, ..Default::default() },
            size_bytes: 10,
            log_file: None,
        };
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path(), "arch"), Some(s));
        assert!(!dir.path().join(".arch.json.tmp").exists());
    }
}
