//! `mirror-update status`: the running version, the other slot, the newest version on offer,
//! the last check and the last error, for a person (a table), for scripts (--json), and as
//! `key=value` fields for the boot report's console line and the login banner.

use schema::human::{age, format_time};
use schema::update_status::UpdateStatus;

pub fn table(s: &UpdateStatus, now: i64, enabled: bool) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    row("running", format!("{} ({})", s.running, if s.running_blessed { "blessed" } else { "on trial" }));
    row(
        "other slot",
        match &s.other_version {
            Some(v) => format!("{v} ({})", s.other_slot.as_str()),
            None => s.other_slot.as_str().to_string(),
        },
    );
    row("newest", s.newest_available.clone().unwrap_or_else(|| "unknown".into()));
    row(
        "last check",
        match s.last_check {
            Some(t) => format!("{} UTC ({} ago)", format_time(t), age(now - t)),
            None if enabled => "not yet".into(),
            None => "never: this site has no [update] section".into(),
        },
    );
    row("last error", s.last_error.clone().unwrap_or_else(|| "none".into()));
    if !s.failed_versions.is_empty() {
        row("failed", s.failed_versions.join(", "));
    }
    if !s.deferred_versions.is_empty() {
        row(
            "deferred",
            format!("{} (failed while the surroundings did; tried again later)", s.deferred_versions.join(", ")),
        );
    }
    if let Some(a) = &s.activity {
        row("now", a.clone());
    }
    if let Some(t) = s.reboot_at {
        row("reboot", format!("{} UTC, into {}", format_time(t), s.other_version.clone().unwrap_or_default()));
    }
    out
}

/// One line of `key=value` fields without spaces in values.
pub fn fields(s: &UpdateStatus) -> String {
    let other = match &s.other_version {
        Some(v) => format!("{}:{v}", s.other_slot.as_str()),
        None => s.other_slot.as_str().to_string(),
    };
    format!(
        "image={} blessed={} other={other} newest={} failed={} update_error={}",
        s.running,
        if s.running_blessed { "yes" } else { "no" },
        s.newest_available.as_deref().unwrap_or("unknown"),
        if s.failed_versions.is_empty() { "none".to_string() } else { s.failed_versions.join(",") },
        if s.last_error.is_some() { "yes" } else { "no" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::update_status::OtherSlot;

    fn status() -> UpdateStatus {
        UpdateStatus {
            running_blessed: true,
            other_version: Some("20261130.000000".into()),
            other_slot: OtherSlot::Previous,
            newest_available: Some("20261201.000000".into()),
            last_check: Some(1_796_000_000),
            ..UpdateStatus::fresh("20261201.000000")
        }
    }

    #[test]
    fn people_read_versions_slot_and_check() {
        let t = table(&status(), 1_796_000_600, true);
        assert!(t.contains("running      20261201.000000 (blessed)"), "{t}");
        assert!(t.contains("other slot   20261130.000000 (previous)"), "{t}");
        assert!(t.contains("(10m ago)") && t.contains("last error   none"), "{t}");
        let off = table(&UpdateStatus::fresh("20261201.000000"), 0, false);
        assert!(off.contains("no [update] section"), "{off}");
    }

    #[test]
    fn fields_have_no_spaces_in_values() {
        let f = fields(&status());
        assert_eq!(
            f,
            "image=20261201.000000 blessed=yes other=previous:20261130.000000 newest=20261201.000000 failed=none update_error=no"
        );
    }
}
