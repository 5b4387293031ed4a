//! A project's sync status (/var/lib/micromirror/sync/PROJECT.json): the API between
//! mirror-sync (writer), mirror-server's metrics and `mirror-sync status` (readers). Written
//! atomically (temp file + rename), so a reader never sees half a file. Fields added later are
//! optional, so files written by an older version still read.

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
    /// Triggered, waiting for a free run slot or for the project's lock.
    Queued,
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
    /// Unix seconds: when the current or last run started (or the trigger, while queued).
    pub started: i64,
    pub ended: Option<i64>,
    pub last_success: Option<i64>,
    /// What went wrong, in rsync's own words where it said something.
    pub error: Option<String>,
    pub stats: Stats,
    /// Bytes the project's folder takes on disk after the last run.
    pub size_bytes: u64,
    pub log_file: Option<PathBuf>,
    /// While running: what the run is doing now ("pass 1/2: packages", "retry 1/3 in 30s").
    #[serde(default)]
    pub activity: Option<String>,
    /// Failed or refused runs in a row (0 after a success).
    #[serde(default)]
    pub failures: u32,
    /// Unix seconds: when the daemon will start the next run (a retry after a failure).
    #[serde(default)]
    pub next_attempt: Option<i64>,
    /// Unix seconds: when the last full walk of the upstream succeeded.
    #[serde(default)]
    pub full_run: Option<i64>,
    /// The last run read only the upstream's marker file, found it unchanged, and moved nothing.
    #[serde(default)]
    pub unchanged: bool,
    /// Where the last walk fetched from: "upstream", or "peer HOST" (a box of the fleet that
    /// held the upstream's state).
    #[serde(default)]
    pub source: Option<String>,
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
            activity: None,
            failures: 0,
            next_attempt: None,
            full_run: None,
            unchanged: false,
            source: None,
        }
    }

    /// The failure counted by a run that ended in `state`, from the status before it.
    pub fn failures_after(previous: Option<&Status>, state: Outcome) -> u32 {
        match state {
            Outcome::Failed | Outcome::Refused => previous.map_or(0, |p| p.failures) + 1,
            _ => 0,
        }
    }
}

pub fn path_for(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(format!("{project}.json"))
}

/// The status of `project`; `None` when there is none yet or it cannot be read (see `load`).
pub fn read(state_dir: &Path, project: &str) -> Option<Status> {
    let text = std::fs::read_to_string(path_for(state_dir, project)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A status file that could not be read was moved aside: what it was, why, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub file: PathBuf,
    pub reason: String,
    pub moved_to: PathBuf,
}

/// The status of `project` for its writer: a file that exists but does not parse (truncated by a
/// crash, written by something else) is renamed to `PROJECT.json.unreadable` so the project
/// carries on as if new, and the caller can say what it set aside.
pub fn load(state_dir: &Path, project: &str) -> (Option<Status>, Option<SetAside>) {
    let file = path_for(state_dir, project);
    let Ok(text) = std::fs::read_to_string(&file) else { return (None, None) };
    match serde_json::from_str(&text) {
        Ok(st) => (Some(st), None),
        Err(e) => {
            let moved_to = file.with_extension("json.unreadable");
            let aside = SetAside { file: file.clone(), reason: e.to_string(), moved_to: moved_to.clone() };
            match std::fs::rename(&file, &moved_to) {
                Ok(()) => (None, Some(aside)),
                Err(rename) => (None, Some(SetAside { reason: format!("{e}; not moved: {rename}"), ..aside })),
            }
        }
    }
}

/// Writes the status atomically; a finished run's status is also made durable (fsync) before
/// it replaces the old one, a "running" or "queued" marker is not worth the wait.
pub fn write(state_dir: &Path, status: &Status) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let final_path = path_for(state_dir, &status.project);
    let tmp = state_dir.join(format!(".{}.json.tmp", status.project));
    let data = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    if !matches!(status.state, Outcome::Running | Outcome::Queued) {
        std::fs::File::open(&tmp)?.sync_all()?;
    }
    std::fs::rename(&tmp, &final_path)
}

/// Bytes on disk per project folder, from every status file in `dir`.
/// Every readable status file in `dir`.
pub fn all(dir: &Path) -> Vec<Status> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Status>(&text).ok())
        .collect()
}

pub fn disk_usage(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    sizes(&all(dir))
}

/// Bytes on disk by project path, from statuses already read.
pub fn sizes(statuses: &[Status]) -> std::collections::BTreeMap<String, u64> {
    statuses.iter().map(|st| (st.project_path.clone(), st.size_bytes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            state: Outcome::Success,
            ended: Some(2),
            last_success: Some(2),
            stats: Stats { files_transferred: 3, ..Default::default() },
            size_bytes: 10,
            ..Status::running("arch", "archlinux", 1)
        }
    }

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path(), "arch"), Some(s));
        assert!(!dir.path().join(".arch.json.tmp").exists());
    }

    #[test]
    fn files_from_before_the_newer_fields_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"project":"arch","project_path":"archlinux","state":"success","started":1,"ended":2,
            "last_success":2,"error":null,"stats":{"files_transferred":3,"files_deleted":0,"bytes_received":0,
            "files_total":0,"tree_bytes":0},"size_bytes":10,"log_file":null}"#;
        std::fs::write(path_for(dir.path(), "arch"), old).unwrap();
        assert_eq!(read(dir.path(), "arch"), Some(sample()));
    }

    #[test]
    fn an_unreadable_file_is_set_aside_and_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(dir.path(), "arch");
        std::fs::write(&file, b"{\"project\":\"arch\",\"proj").unwrap();
        let (st, aside) = load(dir.path(), "arch");
        assert_eq!(st, None);
        let aside = aside.expect("the truncated file is reported");
        assert_eq!(aside.file, file);
        assert!(aside.moved_to.exists() && !file.exists(), "{aside:?}");
        assert!(aside.reason.contains("EOF"), "{}", aside.reason);
        assert_eq!(load(dir.path(), "arch"), (None, None), "the next start finds nothing to set aside");
    }

    #[test]
    fn failures_count_in_a_row_and_a_success_clears_them() {
        let mut previous = sample();
        previous.failures = 2;
        assert_eq!(Status::failures_after(Some(&previous), Outcome::Failed), 3);
        assert_eq!(Status::failures_after(None, Outcome::Refused), 1);
        assert_eq!(Status::failures_after(Some(&previous), Outcome::Success), 0);
    }
}
