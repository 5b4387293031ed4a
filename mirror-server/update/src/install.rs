//! One check of the update server, and installing what it offers. The order is what makes an
//! interruption harmless at every step: the signature, then every artifact's hash, are checked
//! before anything is written; the other slot loses its old entry and is labelled `_empty`
//! before its bytes change; the new root is written and read back, then labelled with its
//! version; the boot entry (the UKI) comes last. Power lost anywhere before that leaves the box
//! booting what it booted before, with a slot that the next check writes again.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use image::version::Version;
use schema::update_status::UpdateStatus;

use crate::entries;
use crate::feed::{self, Offer};
use crate::fetch::{self, Bound, Fetcher};
use crate::machine::Machine;
use crate::plan::{self, Next};
use crate::settings::Settings;
use crate::slots;
use crate::state::{self, Look};
use crate::verify;
use crate::write;

/// What a check ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Stayed(String),
    /// Installed now or earlier; boots in the maintenance window.
    Pending(Version),
}

/// Asks the update server, and installs the newest acceptable version into the other slot.
pub fn check(m: &Machine, s: &Settings, status: &mut UpdateStatus) -> Result<Checked> {
    let look = state::look(m, status)?;
    state::apply(status, &look);
    status.last_check = Some(jiff::Timestamp::now().as_second());
    status.last_error = None;
    let offers = match offers(m, s) {
        Ok(offers) => offers,
        Err(e) => {
            // A version installed and verified before boots in the window all the same: a
            // server that is down, moved or out of certificate must not hold the box back.
            let now = plan::standings(&look.seen);
            return match plan::without_server(&look.seen, &now) {
                Some(v) => {
                    tracing::warn!(error = format!("{e:#}"), version = %v, "the update server cannot be asked; booting the installed version in the window");
                    status.last_error = Some(format!("{e:#}"));
                    Ok(Checked::Pending(v))
                }
                None => Err(e),
            };
        }
    };
    status.newest_available = offers.iter().map(|o| o.version.to_string()).max();
    state::save(m, status);
    match plan::next(&look.seen, &look.now, &offers) {
        Next::Stay(why) => Ok(Checked::Stayed(why)),
        Next::BootPending(v) => Ok(Checked::Pending(v)),
        Next::Withdraw(v) => {
            withdraw(m, &look, &v)?;
            Ok(Checked::Stayed(format!("{v} was withdrawn from the update server before its reboot; it will not boot")))
        }
        Next::Install(offer) => {
            install(m, s, &look, &offer, false, status)?;
            Ok(Checked::Pending(offer.version))
        }
    }
}

/// Takes a withdrawn version's boot entry away and frees its slot.
fn withdraw(m: &Machine, look: &Look, v: &Version) -> Result<()> {
    tracing::info!(version = %v, "withdrawn from the update server: removing its boot entry");
    let entries: Vec<String> = look.seen.entries.iter().filter(|e| &e.version == v).map(|e| e.file.clone()).collect();
    entries::remove(&m.esp, &entries)?;
    slots::set_label(&m.disk, look.other_slot.number, image::disk::EMPTY_SLOT_LABEL)
}

/// The signed list of versions on the server.
pub fn offers(m: &Machine, s: &Settings) -> Result<Vec<Offer>> {
    let fetcher = Fetcher::new(&s.url, s.bwlimit_mbit);
    let sums = fetcher.small("SHA256SUMS")?;
    let signature = fetcher.small("SHA256SUMS.gpg")?;
    let text = verify::signed_text(&m.keyring, &sums, &signature)?;
    feed::parse(&text).context("reading the signed SHA256SUMS")
}

/// Downloads and installs `offer` into the other slot; `downgrade` also marks the running
/// version failed, so that the older one boots next.
pub fn install(
    m: &Machine,
    s: &Settings,
    look: &Look,
    offer: &Offer,
    downgrade: bool,
    status: &mut UpdateStatus,
) -> Result<()> {
    let v = &offer.version;
    plan::may_install(&look.seen, &look.now, v, downgrade).map_err(anyhow::Error::msg)?;
    let fetcher = Fetcher::new(&s.url, s.bwlimit_mbit);
    let dir = m.downloads();
    fetch::prune(&dir, &[&offer.root.sha256, &offer.uki.sha256]);
    let other = &look.other_slot;
    let uki_bound = Bound { bytes: esp_free(&m.esp)?, what: format!("the ESP's free space ({})", m.esp.display()) };
    let root_bound = Bound { bytes: other.size, what: format!("root slot {}", other.number) };
    let uki = download(m, &fetcher, &dir, &offer.uki, &uki_bound, status)?;
    let root = download(m, &fetcher, &dir, &offer.root, &root_bound, status)?;
    let uki_bytes = std::fs::read(&uki).with_context(|| format!("reading {}", uki.display()))?;

    tracing::info!(version = %v, slot = other.number, "installing into the other root slot");
    let stale: Vec<String> =
        look.seen.entries.iter().filter(|e| e.version != look.seen.running).map(|e| e.file.clone()).collect();
    entries::remove(&m.esp, &stale)?;
    slots::set_label(&m.disk, other.number, image::disk::EMPTY_SLOT_LABEL)?;
    set_activity(m, status, format!("writing {v} into slot {}", other.number));
    let mut last = Instant::now();
    let size = write::root_image(&root, &m.disk, other, &mut |at| {
        if last.elapsed().as_secs() >= 5 {
            last = Instant::now();
            set_activity(m, status, format!("writing {v} into slot {}: {} MiB", other.number, at >> 20));
        }
    })?;
    slots::set_label(&m.disk, other.number, &v.slot_label())?;
    if downgrade {
        demote_running(m, look)?;
    }
    entries::add(&m.esp, &v.entry_name(Some(s.boot_tries)), &uki_bytes)?;
    tracing::info!(version = %v, bytes = size, "installed; boots at the next reboot");
    fetch::prune(&dir, &[]);
    status.other_version = Some(v.to_string());
    status.other_slot = schema::update_status::OtherSlot::Pending;
    status.activity = None;
    state::save(m, status);
    Ok(())
}

fn download(
    m: &Machine,
    fetcher: &Fetcher,
    dir: &std::path::Path,
    a: &feed::Artifact,
    bound: &Bound,
    status: &mut UpdateStatus,
) -> Result<PathBuf> {
    let mut last = Instant::now();
    let mut shown = |have: u64, total: Option<u64>| {
        if last.elapsed().as_secs() >= 2 {
            last = Instant::now();
            let of = total.map(|t| format!(" of {} MiB", t >> 20)).unwrap_or_default();
            set_activity(m, status, format!("downloading {} {} MiB{of}", a.name, have >> 20));
        }
    };
    fetcher.artifact(dir, a, bound, &mut shown)
}

/// Bytes free on the ESP: the most a new boot entry can be.
fn esp_free(esp: &std::path::Path) -> Result<u64> {
    let st = rustix::fs::statvfs(esp).with_context(|| format!("reading the free space of {}", esp.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Marks the running version's entry as out of tries and remembers it failed (a downgrade).
fn demote_running(m: &Machine, look: &Look) -> Result<()> {
    let running = &look.seen.running;
    if let Some(e) = look.seen.entries.iter().find(|e| &e.version == running) {
        let d = entries::dir(&m.esp);
        std::fs::rename(d.join(&e.file), d.join(format!("{}_{running}+0-1.efi", image::version::IMAGE_ID)))
            .context("marking the running version's entry as failed")?;
    }
    Ok(())
}

fn set_activity(m: &Machine, status: &mut UpdateStatus, what: String) {
    status.activity = Some(what);
    state::save(m, status);
}
