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
    let failed: BTreeSet<Version> = status.failed_versions.iter().filter_map(|v| Version::parse(v)).collect();
    let seen = Seen { running, entries: entries::list(&m.esp)?, other: other_slot.version(), failed };
    let now = plan::standings(&seen);
    if !now.remove_entries.is_empty() {
        entries::remove(&m.esp, &now.remove_entries)?;
    }
    Ok(Look { seen, now, running_slot, other_slot })
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
