//! `mirror-sync status` for people and scripts: each hosted project's state (ok, FAILED,
//! REFUSED, running, queued, or not run yet), its last success and age, size, the next attempt,
//! and what it is doing or what went wrong in rsync's words. Pure rendering from status files.

use schema::freshness::Seen;
use schema::human::{age, format_time, human_bytes};
use schema::status::{Outcome, Status};
use serde::Serialize;

/// A project as `status` shows it: its status file, or none yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Shown {
    Status {
        #[serde(flatten)]
        status: Box<Status>,
        /// How fresh the project looks to its distribution's checker (the catalog's
        /// `[freshness]`), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        as_checker_sees_it: Option<Seen>,
    },
    NotRunYet {
        project: String,
        state: &'static str,
    },
}

impl Shown {
    pub fn of(project: &str, status: Option<Status>) -> Shown {
        match status {
            Some(s) => Shown::Status { status: Box::new(s), as_checker_sees_it: None },
            None => Shown::NotRunYet { project: project.to_string(), state: "not-run-yet" },
        }
    }

    /// With the checker's view (`schema::freshness::read`).
    pub fn seen_as(self, seen: Option<Seen>) -> Shown {
        match self {
            Shown::Status { status, .. } => Shown::Status { status, as_checker_sees_it: seen },
            other => other,
        }
    }
}

pub fn render(rows: &[Shown], now: i64) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:<22} {:<9} {:>10} {:<9} DETAIL\n",
        "PROJECT", "STATE", "LAST SUCCESS (UTC)", "AGE", "SIZE", "NEXT"
    );
    for row in rows {
        let line = match row {
            Shown::NotRunYet { project, .. } => {
                format!("{project:<18} {:<8} {:<22} {:<9} {:>10} {:<9} no run yet", "not yet", "never", "-", "-", "-")
            }
            Shown::Status { status: s, as_checker_sees_it: seen } => {
                let (when, ago) = match s.last_success {
                    Some(t) => (format_time(t), age(now - t)),
                    None => ("never".into(), "-".into()),
                };
                let next = s.next_attempt.map_or("-".into(), |t| {
                    if t <= now {
                        "now".into()
                    } else {
                        format!("in {}", age(t - now))
                    }
                });
                format!(
                    "{:<18} {:<8} {:<22} {:<9} {:>10} {:<9} {}",
                    s.project,
                    state_word(s.state),
                    when,
                    ago,
                    human_bytes(s.size_bytes),
                    next,
                    [detail(s), seen.as_ref().map(Seen::describe).unwrap_or_default()]
                        .into_iter()
                        .filter(|d| !d.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn state_word(state: Outcome) -> &'static str {
    match state {
        Outcome::Success => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Refused => "REFUSED",
        Outcome::Running => "running",
        Outcome::Queued => "queued",
    }
}

fn detail(s: &Status) -> String {
    match s.state {
        Outcome::Success if s.unchanged => match s.full_run {
            Some(t) => format!("upstream unchanged (its marker file); last full walk {}", format_time(t)),
            None => "upstream unchanged (its marker file)".into(),
        },
        // Where the walk came from and what it moved, so an operator sees the fleet's fan-out.
        Outcome::Success => match s.source.as_deref() {
            Some(source) => {
                format!("from {source}: {} files, {}", s.stats.files_transferred, human_bytes(s.stats.bytes_received))
            }
            None => String::new(),
        },
        Outcome::Running => {
            format!("since {}: {}", format_time(s.started), s.activity.as_deref().unwrap_or("running"))
        }
        Outcome::Queued => "waiting for a free run slot".into(),
        Outcome::Failed | Outcome::Refused => {
            let runs = if s.failures > 1 { format!(" ({} runs in a row)", s.failures) } else { String::new() };
            format!("{}{runs}", s.error.as_deref().unwrap_or(""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_says_what_it_is() {
        let now = 1_700_000_000;
        let ok = Status {
            state: Outcome::Success,
            last_success: Some(now - 3600),
            next_attempt: Some(now + 82_800),
            size_bytes: 3 << 30,
            source: Some("peer box2.example.net".into()),
            stats: schema::status::Stats { files_transferred: 12, bytes_received: 5 << 20, ..Default::default() },
            ..Status::running("archlinux", "archlinux", now - 3700)
        };
        let running = Status {
            activity: Some("pass 1/2 (packages) from rsync://up/ubuntu/".into()),
            ..Status::running("ubuntu", "ubuntu", now - 60)
        };
        let queued = Status { state: Outcome::Queued, ..Status::running("epel", "epel", now) };
        let failed = Status {
            state: Outcome::Failed,
            failures: 2,
            error: Some("pass `full`: rsync exit 10: rsync: failed to connect to up: Connection refused (111)".into()),
            next_attempt: Some(now + 600),
            ..Status::running("fedora", "fedora", now - 100)
        };
        let rows = [
            Shown::of("ok", Some(ok)).seen_as(Some(Seen {
                checker: "Arch".into(),
                from: "lastsync".into(),
                behind_s: 7_500,
                limit_s: 259_200,
            })),
            Shown::of("running", Some(running)),
            Shown::of("queued", Some(queued)),
            Shown::of("failed", Some(failed)),
            Shown::of("kde", None),
        ];
        let text = render(&rows, now);
        let line = |p: &str| text.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
        assert!(
            line("archlinux").contains(" ok ")
                && line("archlinux").contains("60m")
                && line("archlinux").contains("in 23h"),
            "{text}"
        );
        assert!(line("archlinux").contains("as Arch sees it: 2h 5m behind (lastsync), out of sync at 72 h"), "{text}");
        assert!(line("archlinux").contains("from peer box2.example.net: 12 files, 5.0 MiB;"), "{text}");
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["project"], "archlinux", "the status's fields stay at the top: {json}");
        assert_eq!(json["as_checker_sees_it"]["behind_s"], 7_500, "{json}");
        assert!(serde_json::to_value(&rows[1]).unwrap().get("as_checker_sees_it").is_none());
        assert!(line("ubuntu").contains("running") && line("ubuntu").contains("pass 1/2 (packages)"), "{text}");
        assert!(line("epel").contains("queued") && !line("epel").contains("FAILED"), "{text}");
        assert!(
            line("fedora").contains("FAILED")
                && line("fedora").contains("Connection refused")
                && line("fedora").contains("in 10m")
                && line("fedora").contains("2 runs in a row"),
            "{text}"
        );
        assert!(line("kde").contains("not yet") && !line("kde").contains("FAILED"), "{text}");
        let json = serde_json::to_string(&rows[4]).unwrap();
        assert_eq!(json, r#"{"project":"kde","state":"not-run-yet"}"#);
    }
}
