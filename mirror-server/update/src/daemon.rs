//! `mirror-update daemon`: checks the update server on a jittered timer (and at once on an MQTT
//! push), installs what it offers, and reboots into it inside the maintenance window. A failed
//! check is retried sooner than the interval, with a growing pause. While the running version
//! is on trial the daemon only watches: its health check decides, not the updater.

use std::time::Duration;

use anyhow::Result;
use schema::profile::Window;
use tokio::sync::mpsc;

use crate::install::{self, Checked};
use crate::machine::Machine;
use crate::settings::Settings;
use crate::state;

/// The first check after boot: soon (a box switched on after months on a shelf is behind), but
/// spread, so a building's boxes powered on together do not ask at the same second.
const FIRST_CHECK: Duration = Duration::from_secs(60);
const RETRY_FIRST: Duration = Duration::from_secs(60);

pub async fn run(m: Machine, s: Settings) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    if let Some(sub) = s.push.clone() {
        tokio::spawn(mirror_push::listen(sub, move |topic| {
            tracing::info!(%topic, "push: a new update is announced");
            let _ = tx.send(());
        }));
    }
    let mut wait = jitter(FIRST_CHECK);
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(()) = rx.recv() => {}
        }
        let (m2, s2) = (m.clone(), s.clone());
        let outcome = tokio::task::spawn_blocking(move || check_once(&m2, &s2)).await?;
        wait = match outcome {
            Ok(Some(reboot_in)) => {
                failures = 0;
                if reboot_in.is_zero() {
                    // The system is going down; nothing more to do until it has.
                    reboot(&m);
                    s.check_every
                } else {
                    reboot_in.min(s.check_every)
                }
            }
            Ok(None) => {
                failures = 0;
                jitter(s.check_every)
            }
            Err(_) => {
                failures += 1;
                // 1 min after the first failure, doubling, never longer than the interval.
                jitter(RETRY_FIRST.saturating_mul(1 << (failures - 1).min(8))).min(jitter(s.check_every))
            }
        };
    }
}

/// One check; `Some(time until the reboot)` when a newer version is installed and pending.
fn check_once(m: &Machine, s: &Settings) -> Result<Option<Duration>> {
    let _lock = crate::lock::take(&m.state, "daemon check")?;
    let mut status = state::load(m);
    let result = install::check(m, s, &mut status);
    status.activity = None;
    let out = match result {
        Ok(Checked::Stayed(why)) => {
            tracing::info!(%why, "no update to install");
            status.last_error = None;
            status.reboot_at = None;
            Ok(None)
        }
        Ok(Checked::Pending(v)) => {
            status.last_error = None;
            let wait = until_window(&s.window, &s.timezone);
            status.reboot_at = Some(jiff::Timestamp::now().as_second() + wait.as_secs() as i64);
            tracing::info!(version = %v, reboot_in = ?wait, "installed; rebooting into it in the maintenance window");
            if !wait.is_zero() {
                status.activity = Some(format!("{v} installed, waiting for the maintenance window"));
            }
            Ok(Some(wait))
        }
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "update check failed");
            status.last_error = Some(format!("{e:#}"));
            Err(e)
        }
    };
    state::save(m, &status);
    out
}

fn reboot(m: &Machine) {
    crate::health::say("MICROMIRROR-UPDATE rebooting into the installed version");
    if let Some((prog, args)) = m.reboot.split_first() {
        if let Err(e) = std::process::Command::new(prog).args(args).status() {
            tracing::warn!(error = %e, "cannot reboot");
        }
    }
}

/// Time until the window opens in the site's zone (zero inside it); the first minutes of the
/// window are spread so a fleet in one zone does not reboot at once.
pub fn until_window(window: &Window, timezone: &str) -> Duration {
    let now = jiff::Timestamp::now();
    let zoned = match jiff::tz::TimeZone::get(timezone) {
        Ok(tz) => now.to_zoned(tz),
        Err(_) => now.to_zoned(jiff::tz::TimeZone::UTC),
    };
    let minute = zoned.hour() as u32 * 60 + zoned.minute() as u32;
    match window.wait_from(minute) {
        0 => Duration::ZERO,
        m => Duration::from_secs(u64::from(m) * 60) + Duration::from_secs(fastrand::u64(0..600)),
    }
}

/// ±20 %.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}
