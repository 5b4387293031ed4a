//! Looking at the box (running version, slots, boot entries, remembered failures) and keeping
//! the status file current. Each look also tidies the ESP: entries of failed versions and
//! entries without a root behind them are removed, so systemd-boot can never pick them.

use std::collections::BTreeSet;

use anyhow::Result;
use image::version::Version;
use schema::update_status::{self, UpdateStatus};

use crate::entries;
use crate::machine::Machine;
use crate::plan::{self, Seen, Standings};
use crate::slots::{self, Slot};

pub struct Look {
    pub seen: Seen,
    pub now: Standings,
    pub running_slot: Slot,
    pub other_slot: Slot,
}

pub fn look(m: &Machine, status: &UpdateStatus) -> Result<Look> {
    let running = m.running()?;
    let all = slots::read(&m.disk)?;
    let (running_slot, other_slot) = slots::running_and_other(&all, &running)?;
    let mut failed: BTreeSet<Version> = status.failed_versions.iter().filter_map(|v| Version::parse(v)).collect();
    failed.extend(read_failed(m));
    let entries = entries::list(&m.esp)?;
    // Another process (the boot report's `status`, the daemon) may have found a failed entry
    // and removed it between the two reads; it wrote the record first, so this read has it.
    failed.extend(read_failed(m));
    let seen = Seen { running, entries, other: other_slot.version(), failed };
    let now = plan::standings(&seen);
    // The record first, then the entries: a failure is never forgotten by the ESP alone.
    if now.failed != seen.failed || !now.remove_entries.is_empty() {
        write_failed(m, &now.failed)?;
    }
    if !now.remove_entries.is_empty() {
        entries::remove(&m.esp, &now.remove_entries)?;
    }
    Ok(Look { seen, now, running_slot, other_slot })
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
    use anyhow::Context;
    let mut all = read_failed(m);
    all.extend(failed.iter().cloned());
    let text: String = all.iter().map(|v| format!("{v}\n")).collect();
    std::fs::create_dir_all(&m.state).with_context(|| format!("creating {}", m.state.display()))?;
    let tmp = failed_file(m).with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, failed_file(m))
    };
    write().with_context(|| format!("recording failed versions in {}", failed_file(m).display()))
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
}

pub fn save(m: &Machine, status: &UpdateStatus) {
    if let Err(e) = update_status::write(&m.state, status) {
        tracing::warn!(error = %e, dir = %m.state.display(), "cannot write the update status");
    }
}
