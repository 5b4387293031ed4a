//! How fresh a project looks to its distribution's own checker, as the catalog describes that
//! checker (`[freshness]`): which file of the tree it reads (a Unix time on its first line, as
//! Arch's `lastsync` and AlmaLinux's `TIME`) or, for checkers that compare content with the
//! master's, the box's last complete sync; and after how long it drops or flags the mirror.
//! Pure but for `read`, which reads that one file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::human::age;

/// A project's checker, in the catalog.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Freshness {
    /// Whose checker ("Arch", "AlmaLinux", "Fedora").
    pub checker: String,
    /// A file of the project's tree holding a Unix time on its first line, which the checker
    /// reads; absent: the checker compares content with the master's, and the box's own figure
    /// is the end of its last complete sync.
    #[serde(default)]
    pub file: Option<String>,
    /// When the checker drops or flags the mirror (Arch: out of sync after 72 h).
    pub out_of_sync_hours: u32,
}

/// What a box computes for itself: how far behind the checker sees it, and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub checker: String,
    /// What the figure comes from: the file's name, or "last complete sync".
    pub from: String,
    pub behind_s: i64,
    pub limit_s: i64,
}

impl Seen {
    /// "as Arch sees it: 2h 5m behind (lastsync), out of sync at 72 h".
    pub fn describe(&self) -> String {
        format!(
            "as {} sees it: {} behind ({}), out of sync at {} h",
            self.checker,
            age(self.behind_s.max(0)),
            self.from,
            self.limit_s / 3600
        )
    }
}

/// The Unix time on the first line of a file such as Arch's `lastsync`.
pub fn unix_time_in(text: &str) -> Option<i64> {
    text.lines().next()?.trim().parse().ok()
}

/// The checker's view at `now`, from the file's text (when the checker reads one) or the last
/// complete sync; None when neither is known (no run yet, no file yet).
pub fn seen(f: &Freshness, file_text: Option<&str>, last_success: Option<i64>, now: i64) -> Option<Seen> {
    let (from, reference) = match &f.file {
        Some(name) => (name.clone(), unix_time_in(file_text?)?),
        None => ("last complete sync".to_string(), last_success?),
    };
    Some(Seen {
        checker: f.checker.clone(),
        from,
        behind_s: now - reference,
        limit_s: i64::from(f.out_of_sync_hours) * 3600,
    })
}

/// `seen`, reading the checker's file from the project's folder.
pub fn read(f: &Freshness, project_dir: &Path, last_success: Option<i64>, now: i64) -> Option<Seen> {
    let text = f.file.as_ref().and_then(|name| std::fs::read_to_string(project_dir.join(name)).ok());
    seen(f, text.as_deref(), last_success, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch() -> Freshness {
        Freshness { checker: "Arch".into(), file: Some("lastsync".into()), out_of_sync_hours: 72 }
    }

    #[test]
    fn the_checkers_file_or_the_last_sync_gives_the_lag() {
        let now = 1_800_000_000;
        let s = seen(&arch(), Some("1799992800\n"), Some(now - 60), now).unwrap();
        assert_eq!((s.behind_s, s.limit_s), (7_200, 259_200));
        assert_eq!(s.describe(), "as Arch sees it: 2h 0m behind (lastsync), out of sync at 72 h");
        assert_eq!(seen(&arch(), None, Some(now), now), None, "no lastsync yet: not guessed from our own sync");
        assert_eq!(seen(&arch(), Some("garbage"), Some(now), now), None);
        let fedora = Freshness { checker: "Fedora".into(), file: None, out_of_sync_hours: 96 };
        let s = seen(&fedora, None, Some(now - 3_600), now).unwrap();
        assert_eq!((s.behind_s, s.from.as_str()), (3_600, "last complete sync"));
        assert_eq!(seen(&fedora, None, None, now), None, "never synced");
    }
}
