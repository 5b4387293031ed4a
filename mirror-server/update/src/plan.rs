//! The updater's decisions, as pure functions of what it sees: the running version, the boot
//! entries on the ESP (with systemd-boot's counters), the other root slot's label, the versions
//! it remembers as failed, and what the update server offers. Nothing here touches a disk.
//!
//! The rules that keep a box out of trouble live here: never write the other slot while the
//! running version is still proving itself (that slot is the way back); never install or boot a
//! version that failed; never go to an older version unless told to.

use std::collections::BTreeSet;

use image::version::{Entry, Standing, Version};
use schema::update_status::OtherSlot;

use crate::feed::Offer;

/// What the box holds right now.
#[derive(Debug, Clone)]
pub struct Seen {
    pub running: Version,
    pub entries: Vec<Entry>,
    /// The version in the other root slot's label; `None` when it is `_empty` (or not ours).
    pub other: Option<Version>,
    /// Versions remembered as failed (the status file).
    pub failed: BTreeSet<Version>,
}

/// How the box stands, as status and decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standings {
    pub running_blessed: bool,
    pub other_slot: OtherSlot,
    pub other_version: Option<Version>,
    /// Failed versions, including any found failed now (entries with no tries left).
    pub failed: BTreeSet<Version>,
    /// Boot entries to delete: those of failed versions, and strays with no root behind them.
    pub remove_entries: Vec<String>,
}

pub fn standings(seen: &Seen) -> Standings {
    let mut failed = seen.failed.clone();
    for e in &seen.entries {
        if e.standing == Standing::Failed && e.version != seen.running {
            failed.insert(e.version.clone());
        }
    }
    let running_blessed = seen.entries.iter().any(|e| e.version == seen.running && e.standing == Standing::Blessed);
    // An entry is kept only if a slot holds its root: the running one or the other one, unless
    // that version failed.
    let keep = |v: &Version| *v == seen.running || (Some(v) == seen.other.as_ref() && !failed.contains(v));
    let remove_entries = seen.entries.iter().filter(|e| !keep(&e.version)).map(|e| e.file.clone()).collect();
    let other_entry = |v: &Version| seen.entries.iter().find(|e| &e.version == v);
    let other_slot = match &seen.other {
        None => OtherSlot::Empty,
        Some(v) if failed.contains(v) => OtherSlot::Failed,
        Some(v) if v == &seen.running => OtherSlot::Empty,
        // A labelled slot without its entry is an install that was cut short: free to reuse.
        Some(v) if other_entry(v).is_none() => OtherSlot::Empty,
        Some(v) if v > &seen.running => OtherSlot::Pending,
        Some(_) => OtherSlot::Previous,
    };
    let other_version = match other_slot {
        OtherSlot::Empty => None,
        _ => seen.other.clone(),
    };
    Standings { running_blessed, other_slot, other_version, failed, remove_entries }
}

/// What to do after a check of the update server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do, and why.
    Stay(String),
    /// Download and install this version into the other slot.
    Install(Offer),
    /// The other slot holds a newer version, installed: boot it (inside the window).
    BootPending(Version),
    /// The other slot holds a version the signed list no longer names: the operator withdrew
    /// it before the box rebooted into it. Its boot entry goes, and the slot is free again.
    Withdraw(Version),
}

pub fn next(seen: &Seen, now: &Standings, offers: &[Offer]) -> Next {
    if !now.running_blessed {
        return Next::Stay(format!(
            "{} is still proving itself; the other slot is the way back and stays untouched",
            seen.running
        ));
    }
    let newest = offers
        .iter()
        .filter(|o| o.version > seen.running && !now.failed.contains(&o.version))
        .max_by(|a, b| a.version.cmp(&b.version));
    match newest {
        Some(offer) if now.other_slot == OtherSlot::Pending && now.other_version.as_ref() == Some(&offer.version) => {
            Next::BootPending(offer.version.clone())
        }
        Some(offer) => Next::Install(offer.clone()),
        None if now.other_slot == OtherSlot::Pending => match &now.other_version {
            Some(pending) if !offers.iter().any(|o| &o.version == pending) => Next::Withdraw(pending.clone()),
            pending => Next::BootPending(pending.clone().unwrap_or_else(|| seen.running.clone())),
        },
        None => {
            let top = offers.iter().map(|o| &o.version).max();
            Next::Stay(match top {
                Some(v) if v < &seen.running => {
                    format!(
                        "the server's newest version {v} is older than the running {}: not going back",
                        seen.running
                    )
                }
                Some(v) if now.failed.contains(v) => format!("the newest version {v} failed here before"),
                _ => "up to date".into(),
            })
        }
    }
}

/// What to do when the update server cannot be asked: boot a version installed (and verified
/// against the signed list) before, in the window; nothing else changes without the server.
pub fn without_server(seen: &Seen, now: &Standings) -> Option<Version> {
    let pending = now.other_version.as_ref()?;
    let bootable = now.running_blessed
        && now.other_slot == OtherSlot::Pending
        && pending > &seen.running
        && !now.failed.contains(pending);
    bootable.then(|| pending.clone())
}

/// Whether an explicit `install` of `version` may go ahead.
pub fn may_install(seen: &Seen, now: &Standings, version: &Version, allow_downgrade: bool) -> Result<(), String> {
    if version == &seen.running {
        return Err(format!("{version} is the running version"));
    }
    if now.failed.contains(version) && !allow_downgrade {
        return Err(format!("{version} failed its health check here before; it is not installed again"));
    }
    if version < &seen.running && !allow_downgrade {
        return Err(format!(
            "{version} is older than the running {}: a downgrade needs --allow-downgrade",
            seen.running
        ));
    }
    if !now.running_blessed {
        return Err(format!(
            "{} is still proving itself (its boot entry is not blessed); the other slot is the way back",
            seen.running
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Artifact;

    fn v(s: &str) -> Version {
        Version::parse(&format!("2026120{s}.000000")).unwrap()
    }
    fn entry(version: &str, counter: &str) -> Entry {
        Entry::parse(&format!("micromirror_2026120{version}.000000{counter}.efi")).unwrap()
    }
    fn offer(s: &str) -> Offer {
        let a = |n: String| Artifact { name: n, sha256: "0".repeat(64) };
        Offer { version: v(s), root: a(v(s).root_artifact()), uki: a(v(s).uki_artifact()) }
    }
    fn seen(running: &str, entries: Vec<Entry>, other: Option<&str>) -> Seen {
        Seen { running: v(running), entries, other: other.map(v), failed: BTreeSet::new() }
    }

    #[test]
    fn a_blessed_box_installs_the_newest_offer_and_then_boots_it() {
        let s = seen("1", vec![entry("1", "")], None);
        let now = standings(&s);
        assert!(now.running_blessed);
        assert_eq!(now.other_slot, OtherSlot::Empty);
        assert_eq!(next(&s, &now, &[offer("1"), offer("2"), offer("3")]), Next::Install(offer("3")));
        let s = seen("1", vec![entry("1", ""), entry("3", "+3")], Some("3"));
        let now = standings(&s);
        assert_eq!(now.other_slot, OtherSlot::Pending);
        assert_eq!(next(&s, &now, &[offer("3")]), Next::BootPending(v("3")));
    }

    #[test]
    fn a_pending_version_boots_without_the_server_unless_the_list_withdrew_it() {
        let s = seen("1", vec![entry("1", ""), entry("3", "+3")], Some("3"));
        let now = standings(&s);
        assert_eq!(without_server(&s, &now), Some(v("3")), "installed and verified: boot it in the window");
        assert_eq!(next(&s, &now, &[offer("1")]), Next::Withdraw(v("3")), "the list no longer names it");
        assert_eq!(next(&s, &now, &[]), Next::Withdraw(v("3")), "an empty list withdraws everything");
        assert_eq!(next(&s, &now, &[offer("1"), offer("3")]), Next::BootPending(v("3")));
        let empty = seen("1", vec![entry("1", "")], None);
        assert_eq!(without_server(&empty, &standings(&empty)), None, "nothing installed, nothing to boot");
        let trial = seen("3", vec![entry("3", "+1-1"), entry("1", "")], Some("1"));
        assert_eq!(without_server(&trial, &standings(&trial)), None, "a box on trial reboots for nothing");
    }

    #[test]
    fn nothing_is_written_while_the_running_version_is_on_trial() {
        let s = seen("2", vec![entry("1", ""), entry("2", "+2-1")], Some("1"));
        let now = standings(&s);
        assert!(!now.running_blessed);
        assert_eq!(now.other_slot, OtherSlot::Previous);
        assert!(matches!(next(&s, &now, &[offer("3")]), Next::Stay(_)));
        assert!(may_install(&s, &now, &v("3"), false).is_err());
    }

    #[test]
    fn a_version_that_ran_out_of_tries_is_failed_forgotten_from_the_esp_and_never_retried() {
        let s = seen("2", vec![entry("2", ""), entry("3", "+0-3")], Some("3"));
        let now = standings(&s);
        assert_eq!(now.other_slot, OtherSlot::Failed);
        assert_eq!(now.other_version, Some(v("3")));
        assert!(now.failed.contains(&v("3")));
        assert_eq!(now.remove_entries, vec!["micromirror_20261203.000000+0-3.efi".to_string()]);
        // No reboot loop: v3 is still offered, and is not installed or booted again.
        assert!(matches!(next(&s, &now, &[offer("2"), offer("3")]), Next::Stay(r) if r.contains("failed")));
        // Remembered after its entry is gone; a newer version goes into the failed slot.
        let mut later = seen("2", vec![entry("2", "")], Some("3"));
        later.failed = now.failed.clone();
        let again = standings(&later);
        assert_eq!(again.other_slot, OtherSlot::Failed);
        assert_eq!(next(&later, &again, &[offer("3"), offer("4")]), Next::Install(offer("4")));
    }

    #[test]
    fn an_install_cut_short_leaves_a_reusable_slot_and_downgrades_need_asking() {
        // Labelled but no entry: the UKI (written last) never arrived.
        let s = seen("1", vec![entry("1", "")], Some("2"));
        let now = standings(&s);
        assert_eq!(now.other_slot, OtherSlot::Empty);
        assert_eq!(next(&s, &now, &[offer("2")]), Next::Install(offer("2")));
        let s = seen("3", vec![entry("3", ""), entry("2", "")], Some("2"));
        let now = standings(&s);
        assert_eq!(now.other_slot, OtherSlot::Previous);
        assert!(matches!(next(&s, &now, &[offer("1"), offer("2")]), Next::Stay(r) if r.contains("older")));
        assert!(may_install(&s, &now, &v("1"), false).unwrap_err().contains("--allow-downgrade"));
        assert!(may_install(&s, &now, &v("1"), true).is_ok());
        assert!(may_install(&s, &now, &v("3"), true).is_err(), "never over the running slot");
    }

    #[test]
    fn stray_entries_without_a_root_are_removed() {
        let s = seen("2", vec![entry("1", ""), entry("2", ""), entry("4", "+3")], Some("4"));
        assert_eq!(standings(&s).remove_entries, vec!["micromirror_20261201.000000.efi".to_string()]);
    }
}
