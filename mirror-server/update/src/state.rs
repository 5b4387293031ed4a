//! Looking at the box (running version, slots, boot entries, remembered failures and
//! deferrals, each version's last health verdict) and keeping the status file current. Each
//! look also tidies the ESP: entries of failed and deferred versions and entries without a root
//! behind them are removed, so systemd-boot can never pick them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use image::version::Version;
use schema::update_status::{self, UpdateStatus};

use crate::entries;
use crate::machine::Machine;
use crate::plan::{self, Deferral, Seen, Standings, Trial};
use crate::slots::{self, Slot};

pub struct Look {
    pub seen: Seen,
    pub now: Standings,
    pub running_slot: Slot,
    pub other_slot: Slot,
}

pub fn look(m: &Machine, status: &UpdateStatus) -> Result<Look> {
    let running = m.running()?;
    let all = match slots::read(&m.disk) {
        Ok(all) => all,
        Err(e) if crate::adopted::on_trial(m) => {
            return Err(e.context(
                "this box is on its adoption trial: updates wait until `cargo xtask adopt` commits it and the old \
                 /boot becomes root slot B",
            ))
        }
        Err(e) => return Err(e),
    };
    let (running_slot, other_slot) = slots::running_and_other(&all, &running)?;
    let mut failed: BTreeSet<Version> = status.failed_versions.iter().filter_map(|v| Version::parse(v)).collect();
    failed.extend(read_failed(m));
    let entries = entries::list(&m.esp)?;
    // Another process (the boot report's `status`, the daemon) may have found a failed entry
    // and removed it between the two reads; it wrote the record first, so this read has it.
    failed.extend(read_failed(m));
    let seen = Seen {
        running,
        entries,
        other: other_slot.version(),
        failed,
        deferred: read_deferred(m),
        trials: read_trials(m),
        now: jiff::Timestamp::now().as_second(),
    };
    let now = plan::standings(&seen);
    // The records first, then the entries: a failure is never forgotten by the ESP alone.
    if now.failed != seen.failed || !now.remove_entries.is_empty() {
        write_failed(m, &now.failed)?;
    }
    if now.deferred != seen.deferred {
        let by_name: BTreeMap<String, &Deferral> = now.deferred.iter().map(|(v, d)| (v.to_string(), d)).collect();
        write_json(&deferred_file(m), &by_name)?;
    }
    if !now.remove_entries.is_empty() {
        entries::remove(&m.esp, &now.remove_entries)?;
    }
    let look = Look { seen, now, running_slot, other_slot };
    prune_trials(m, &look);
    Ok(look)
}

/// Versions that failed their health check here: one per line in the state folder, only ever
/// added to (the status file is rewritten by several commands; this is the one record).
fn failed_file(m: &Machine) -> std::path::PathBuf {
    m.state.join("failed-versions")
}

pub fn read_failed(m: &Machine) -> BTreeSet<Version> {
    std::fs::read_to_string(failed_file(m))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Version::parse(l.trim()))
        .collect()
}

fn write_failed(m: &Machine, failed: &BTreeSet<Version>) -> Result<()> {
    let mut all = read_failed(m);
    all.extend(failed.iter().cloned());
    let text: String = all.iter().map(|v| format!("{v}\n")).collect();
    write_whole(&failed_file(m), text.as_bytes())
}

/// Versions whose failed trial was charged to the box's surroundings (`plan::judge`).
fn deferred_file(m: &Machine) -> PathBuf {
    m.state.join("deferred-versions.json")
}

fn read_deferred(m: &Machine) -> BTreeMap<Version, Deferral> {
    let by_name: BTreeMap<String, Deferral> = read_json(&deferred_file(m)).unwrap_or_default();
    by_name.into_iter().filter_map(|(v, d)| Some((Version::parse(&v)?, d))).collect()
}

/// Each version's last health verdict, one file per version.
fn trials_dir(state: &Path) -> PathBuf {
    state.join("trials")
}

fn read_trials(m: &Machine) -> BTreeMap<Version, Trial> {
    let Ok(read) = std::fs::read_dir(trials_dir(&m.state)) else { return BTreeMap::new() };
    read.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = Version::parse(name.strip_suffix(".json")?)?;
            Some((version, read_json(&e.path())?))
        })
        .collect()
}

/// Records this boot's health verdict for `version` (the failed checks' names; none: healthy).
pub fn record_trial(state: &Path, version: &Version, failed: BTreeSet<String>) -> Result<()> {
    let dir = trials_dir(state);
    write_json(&dir.join(format!("{version}.json")), &Trial { at: jiff::Timestamp::now().as_second(), failed })?;
    Ok(())
}

/// Drops the verdicts of versions neither slot holds and nothing remembers as deferred.
fn prune_trials(m: &Machine, look: &Look) {
    let keep = |v: &Version| {
        *v == look.seen.running || Some(v) == look.seen.other.as_ref() || look.now.deferred.contains_key(v)
    };
    for (version, _) in read_trials(m) {
        if !keep(&version) {
            let _ = std::fs::remove_file(trials_dir(&m.state).join(format!("{version}.json")));
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_whole(path, &serde_json::to_vec_pretty(value)?)
}

/// Written whole or not at all (a temporary file of its own, flushed, renamed).
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    use anyhow::Context;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map(|_| ()).map_err(|e| e.error)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The stored status, or a fresh one for the running version.
pub fn load(m: &Machine) -> UpdateStatus {
    let running = m.running().map(|v| v.to_string()).unwrap_or_default();
    match update_status::read(&m.state) {
        Some(s) => UpdateStatus { running, ..s },
        None => UpdateStatus::fresh(&running),
    }
}

/// Folds a look into the status.
pub fn apply(status: &mut UpdateStatus, look: &Look) {
    status.running = look.seen.running.to_string();
    status.running_blessed = look.now.running_blessed;
    status.other_slot = look.now.other_slot;
    status.other_version = look.now.other_version.as_ref().map(|v| v.to_string());
    status.failed_versions = look.now.failed.iter().map(|v| v.to_string()).collect();
    status.deferred_versions = look.now.deferred.keys().map(|v| v.to_string()).collect();
}

pub fn save(m: &Machine, status: &UpdateStatus) {
    if let Err(e) = update_status::write(&m.state, status) {
        tracing::warn!(error = %e, dir = %m.state.display(), "cannot write the update status");
    }
}
