//! The updater's decisions, as pure functions of what it sees: the running version, the boot
//! entries on the ESP (with systemd-boot's counters), the other root slot's label, the versions
//! it remembers as failed, and what the update server offers. Nothing here touches a disk.
//!
//! The rules that keep a box out of trouble live here: never write the other slot while the
//! running version is still proving itself (that slot is the way back); never install or boot a
//! version that failed; never go to an older version unless told to.
//!
//! And the rule that keeps a bad night from condemning a good version (`judge`): a version that
//! ran out of tries is charged with its failure only if the version the box went back to passes
//! the checks it failed. When the previous version, booted right after, fails every one of them
//! too (the link was down, the data disk is gone, a unit both share fails), the box's
//! surroundings failed, not the version: it is deferred, not failed, and installed again by
//! itself after `RETRY_AFTER`; the third deferral in a row counts as a failure. A version that
//! left no verdict at all (it hung, panicked, never reached its health check) is failed.

use std::collections::{BTreeMap, BTreeSet};

use image::version::{Entry, Standing, Version};
use schema::update_status::OtherSlot;

use crate::feed::Offer;

/// A deferred version is tried again this long after its failed trial (a day less a few
/// hours, so the next night's window is not missed).
pub const RETRY_AFTER: i64 = 20 * 3600;
/// Deferrals in a row after which a version counts as failed after all.
pub const MAX_DEFERRALS: u32 = 3;
/// How long a failed trial waits for the running version's own verdict before it is judged
/// without one (as the version's failure).
pub const VERDICT_WAIT: i64 = 3600;

/// The last health verdict of a version on this box (`mirror-update health` records it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// Unix seconds of the verdict.
    pub at: i64,
    /// The checks that failed (none: healthy).
    pub failed: BTreeSet<String>,
}

/// A version whose trial failed while the box's surroundings were down too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferral {
    /// How many of its trials failed that way, in a row.
    pub times: u32,
    /// The failed trial's time (so one failure is counted once).
    pub trial_at: i64,
    /// Unix seconds after which it may be installed again.
    pub until: i64,
    /// The checks both versions failed.
    pub checks: BTreeSet<String>,
}

/// What the box holds right now.
#[derive(Debug, Clone)]
pub struct Seen {
    pub running: Version,
    pub entries: Vec<Entry>,
    /// The version in the other root slot's label; `None` when it is `_empty` (or not ours).
    pub other: Option<Version>,
    /// Versions remembered as failed (the status file).
    pub failed: BTreeSet<Version>,
    /// Versions remembered as deferred.
    pub deferred: BTreeMap<Version, Deferral>,
    /// The last health verdict of each version.
    pub trials: BTreeMap<Version, Trial>,
    /// Unix seconds now.
    pub now: i64,
}

/// Who a version's failed trial is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The version: it is failed for good.
    Version,
    /// The box's surroundings (the running version fails the same checks): tried again later.
    Surroundings(BTreeSet<String>),
    /// The running version has not given its own verdict since; ask again later.
    Undecided,
}

/// The rule in the module's head, for `version` whose trial failed.
pub fn judge(seen: &Seen, version: &Version) -> Judgement {
    let Some(theirs) = seen.trials.get(version).filter(|t| !t.failed.is_empty()) else {
        return Judgement::Version;
    };
    match seen.trials.get(&seen.running).filter(|t| t.at > theirs.at) {
        Some(ours) if theirs.failed.is_subset(&ours.failed) => Judgement::Surroundings(theirs.failed.clone()),
        Some(_) => Judgement::Version,
        None if seen.now - theirs.at < VERDICT_WAIT => Judgement::Undecided,
        None => Judgement::Version,
    }
}

/// How the box stands, as status and decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standings {
    pub running_blessed: bool,
    pub other_slot: OtherSlot,
    pub other_version: Option<Version>,
    /// Failed versions, including any found failed now (entries with no tries left).
    pub failed: BTreeSet<Version>,
    /// Deferred versions, including any found deferred now.
    pub deferred: BTreeMap<Version, Deferral>,
    /// A version whose failed trial waits for the running version's verdict to be judged.
    pub undecided: Option<Version>,
    /// Boot entries to delete: those of failed and deferred versions, and strays with no root
    /// behind them.
    pub remove_entries: Vec<String>,
}

pub fn standings(seen: &Seen) -> Standings {
    let mut failed = seen.failed.clone();
    let mut deferred = seen.deferred.clone();
    let mut undecided = None;
    let mut judged_surroundings = BTreeSet::new();
    for e in &seen.entries {
        if e.standing != Standing::Failed || e.version == seen.running || failed.contains(&e.version) {
            continue;
        }
        match judge(seen, &e.version) {
            Judgement::Version => {
                failed.insert(e.version.clone());
            }
            Judgement::Undecided => undecided = Some(e.version.clone()),
            Judgement::Surroundings(checks) => {
                let trial_at = seen.trials.get(&e.version).map_or(seen.now, |t| t.at);
                let earlier = deferred.get(&e.version).cloned();
                let times = match &earlier {
                    Some(d) if d.trial_at == trial_at => d.times,
                    Some(d) => d.times + 1,
                    None => 1,
                };
                if times >= MAX_DEFERRALS {
                    failed.insert(e.version.clone());
                } else {
                    judged_surroundings.insert(e.version.clone());
                }
                deferred.insert(e.version.clone(), Deferral { times, trial_at, until: trial_at + RETRY_AFTER, checks });
            }
        }
    }
    // A deferral ends when the version is running (it proved itself) or failed after all.
    deferred.retain(|v, _| *v != seen.running && !failed.contains(v));
    let running_blessed = seen.entries.iter().any(|e| e.version == seen.running && e.standing == Standing::Blessed);
    // An entry is kept only if a slot holds its root: the running one or the other one, unless
    // that version failed or its failed trial was just charged to the surroundings.
    let keep = |v: &Version| {
        *v == seen.running
            || (Some(v) == seen.other.as_ref() && !failed.contains(v) && !judged_surroundings.contains(v))
    };
    let remove_entries = seen.entries.iter().filter(|e| !keep(&e.version)).map(|e| e.file.clone()).collect();
    let other_entry = |v: &Version| seen.entries.iter().find(|e| &e.version == v);
    let other_slot = match &seen.other {
        None => OtherSlot::Empty,
        Some(v) if failed.contains(v) || undecided.as_ref() == Some(v) => OtherSlot::Failed,
        // Its entry goes now: the slot is free for the next install (this version's, later).
        Some(v) if judged_surroundings.contains(v) => OtherSlot::Empty,
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
    Standings { running_blessed, other_slot, other_version, failed, deferred, undecided, remove_entries }
}

/// Whether `version` waits out a deferral now.
fn held_back(seen: &Seen, now: &Standings, version: &Version) -> Option<Deferral> {
    now.deferred.get(version).filter(|d| d.until > seen.now).cloned()
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
    if let Some(v) = &now.undecided {
        return Next::Stay(format!(
            "{v} failed its trial; waiting for {}'s own health verdict to tell whether the version or the box's surroundings failed",
            seen.running
        ));
    }
    let newest = offers
        .iter()
        .filter(|o| {
            o.version > seen.running && !now.failed.contains(&o.version) && held_back(seen, now, &o.version).is_none()
        })
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
                Some(v) => match held_back(seen, now, v) {
                    Some(d) => format!(
                        "the newest version {v} failed its trial while {} failed the same checks ({}): the box's surroundings, not the version; it is tried again after {} UTC",
                        seen.running,
                        d.checks.iter().cloned().collect::<Vec<_>>().join(", "),
                        schema::human::format_time(d.until)
                    ),
                    None => "up to date".into(),
                },
                None => "up to date".into(),
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
        Seen {
            running: v(running),
            entries,
            other: other.map(v),
            failed: BTreeSet::new(),
            deferred: BTreeMap::new(),
            trials: BTreeMap::new(),
            now: 1_000_000,
        }
    }
    fn trial(at: i64, failed: &[&str]) -> Trial {
        Trial { at, failed: failed.iter().map(|s| s.to_string()).collect() }
    }
    /// v2 running (blessed) after v3 ran out of tries; v3's trial at 999,000 failed `v3_failed`.
    fn after_rollback(v3_failed: &[&str], v2_failed_since: Option<&[&str]>) -> Seen {
        let mut s = seen("2", vec![entry("2", ""), entry("3", "+0-1")], Some("3"));
        s.trials.insert(v("3"), trial(999_000, v3_failed));
        if let Some(f) = v2_failed_since {
            s.trials.insert(v("2"), trial(999_500, f));
        }
        s
    }

    #[test]
    fn a_trial_failed_by_the_surroundings_is_deferred_and_retried_later_by_itself() {
        // The link was down for both: v3 is not to blame.
        let s = after_rollback(&["addresses"], Some(&["addresses", "units"]));
        let now = standings(&s);
        assert!(!now.failed.contains(&v("3")), "{now:?}");
        let d = &now.deferred[&v("3")];
        assert_eq!((d.times, d.until), (1, 999_000 + RETRY_AFTER));
        assert_eq!(now.other_slot, OtherSlot::Empty, "its slot is free for the retry");
        assert_eq!(now.remove_entries, vec!["micromirror_20261203.000000+0-1.efi".to_string()]);
        let stay = next(&s, &now, &[offer("2"), offer("3")]);
        assert!(matches!(&stay, Next::Stay(r) if r.contains("surroundings") && r.contains("addresses")), "{stay:?}");
        // The next day, with the entry gone and the deferral remembered: installed again.
        let mut later = seen("2", vec![entry("2", "")], Some("3"));
        later.deferred = now.deferred.clone();
        later.trials = s.trials.clone();
        later.now = 999_000 + RETRY_AFTER + 1;
        let again = standings(&later);
        assert_eq!(next(&later, &again, &[offer("3")]), Next::Install(offer("3")));
    }

    #[test]
    fn a_trial_the_previous_version_passes_is_the_version_s_fault() {
        let s = after_rollback(&["server"], Some(&[]));
        assert_eq!(judge(&s, &v("3")), Judgement::Version);
        let now = standings(&s);
        assert!(now.failed.contains(&v("3")) && now.deferred.is_empty());
        // Only some of its failures shared: still the version's.
        let s = after_rollback(&["server", "addresses"], Some(&["addresses"]));
        assert!(standings(&s).failed.contains(&v("3")));
        // No verdict at all (it hung, or the watchdog rebooted it): the version's.
        let mut s = after_rollback(&[], Some(&["addresses"]));
        s.trials.remove(&v("3"));
        assert!(standings(&s).failed.contains(&v("3")));
    }

    #[test]
    fn a_failed_trial_waits_for_the_running_version_s_verdict_but_not_for_ever() {
        let s = after_rollback(&["addresses"], None);
        let now = standings(&s);
        assert_eq!(now.undecided, Some(v("3")));
        assert!(now.remove_entries.is_empty() && !now.failed.contains(&v("3")), "{now:?}");
        assert!(matches!(next(&s, &now, &[offer("4")]), Next::Stay(r) if r.contains("waiting")));
        let mut late = s.clone();
        late.now = 999_000 + VERDICT_WAIT + 1;
        assert!(standings(&late).failed.contains(&v("3")), "an hour without a verdict: the version's");
    }

    #[test]
    fn the_third_deferral_in_a_row_fails_the_version_and_one_failure_counts_once() {
        let mut s = after_rollback(&["addresses"], Some(&["addresses"]));
        s.deferred.insert(v("3"), Deferral { times: 1, trial_at: 999_000, until: 0, checks: BTreeSet::new() });
        assert_eq!(standings(&s).deferred[&v("3")].times, 1, "the same trial seen again is not a second deferral");
        s.deferred.insert(v("3"), Deferral { times: 2, trial_at: 900_000, until: 0, checks: BTreeSet::new() });
        let now = standings(&s);
        assert!(now.failed.contains(&v("3")) && !now.deferred.contains_key(&v("3")), "{now:?}");
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
