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
            status.reboot_at = None;
            Ok(None)
        }
        Ok(Checked::Pending(v)) => {
            // (last_error may say the server could not be asked: the version boots all the same.)
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

/// Time until the window opens in the site's zone (zero inside it), with the first minutes of
/// the window spread so a fleet in one zone does not reboot at once.
pub fn until_window(window: &Window, timezone: &str) -> Duration {
    let tz = jiff::tz::TimeZone::get(timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let (wait, length) = until_window_at(window, &tz, jiff::Timestamp::now());
    if wait.is_zero() {
        return Duration::ZERO;
    }
    // Never spread past the middle of the window: a ten-minute window still gets its reboot.
    let spread = SPREAD.min(length / 2).as_secs();
    wait + Duration::from_secs(fastrand::u64(0..=spread))
}

/// The most the start of a reboot is spread into the window.
const SPREAD: Duration = Duration::from_secs(600);

/// A window lost whole in a clock change (02:00-03:00 on the spring-forward night) still opens,
/// for this long, at the moment the clock jumps past it.
const SWALLOWED: Duration = Duration::from_secs(600);

/// Real time from `now` until the window is open in `tz` (zero inside it), and how long that
/// opening lasts. Worked out on instants, not minutes of the day, so a clock change between now
/// and the window neither skips it nor moves it: a start that does not exist that night (a
/// spring-forward gap) opens when the clock jumps past it.
pub fn until_window_at(window: &Window, tz: &jiff::tz::TimeZone, now: jiff::Timestamp) -> (Duration, Duration) {
    let today = now.to_zoned(tz.clone()).date();
    let mut next: Option<(jiff::Timestamp, jiff::Timestamp)> = None;
    for offset in [-1i64, 0, 1, 2] {
        let Some((open, close)) =
            today.checked_add(jiff::Span::new().days(offset)).ok().and_then(|d| opening(window, d, tz))
        else {
            continue;
        };
        if open <= now && now < close {
            return (Duration::ZERO, span(now, close));
        }
        if open > now && next.is_none_or(|(o, _)| open < o) {
            next = Some((open, close));
        }
    }
    match next {
        Some((open, close)) => (span(now, open), span(open, close)),
        None => (Duration::from_secs(24 * 3600), SWALLOWED),
    }
}

/// The window's opening on `date` as instants: local times resolved the compatible way (a time
/// in a gap is the instant after it; a repeated time is its first instance).
fn opening(
    window: &Window,
    date: jiff::civil::Date,
    tz: &jiff::tz::TimeZone,
) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    let at = |day: jiff::civil::Date, minute: u32| -> Option<jiff::Timestamp> {
        let (day, minute) = if minute >= 24 * 60 { (day.tomorrow().ok()?, minute - 24 * 60) } else { (day, minute) };
        let time = jiff::civil::Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).ok()?;
        tz.to_ambiguous_zoned(day.to_datetime(time)).compatible().ok().map(|z| z.timestamp())
    };
    let open = at(date, window.start)?;
    let end_day = if window.end > window.start { date } else { date.tomorrow().ok()? };
    let close = at(end_day, window.end)?;
    let close = if close > open { close } else { open + SWALLOWED };
    Some((open, close))
}

fn span(from: jiff::Timestamp, to: jiff::Timestamp) -> Duration {
    Duration::from_secs(to.as_second().saturating_sub(from.as_second()).max(0) as u64)
}

/// ±20 %.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_window_lost_to_the_spring_forward_jump_opens_when_the_clock_jumps() {
        let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let night = Window::parse("02:00-03:00").unwrap();
        // 01:30 EST on 2026-03-08; at 02:00 the clock jumps to 03:00 EDT (07:00 UTC).
        assert_eq!(until_window_at(&night, &tz, at("2026-03-08T06:30:00Z")).0, Duration::from_secs(30 * 60));
        let (wait, length) = until_window_at(&night, &tz, at("2026-03-08T07:00:00Z"));
        assert_eq!((wait, length), (Duration::ZERO, SWALLOWED), "open at the jump, not a day later");
        // On the next night (EDT, UTC-4) it is the hour it says: 01:00 waits an hour, 02:30 is in.
        assert_eq!(until_window_at(&night, &tz, at("2026-03-09T05:00:00Z")).0, Duration::from_secs(3600));
        assert_eq!(
            until_window_at(&night, &tz, at("2026-03-09T06:30:00Z")),
            (Duration::ZERO, Duration::from_secs(1800))
        );
    }

    #[test]
    fn the_fall_back_night_and_wrapping_windows_keep_their_real_length() {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; from midnight CEST the window
        // 01:00-04:00 opens in an hour and lasts four real hours.
        let night = Window::parse("01:00-04:00").unwrap();
        let (wait, length) = until_window_at(&night, &tz, at("2026-10-24T22:00:00Z"));
        assert_eq!((wait, length), (Duration::from_secs(3600), Duration::from_secs(4 * 3600)));
        let wrap = Window::parse("23:30-00:30").unwrap();
        assert_eq!(until_window_at(&wrap, &tz, at("2026-06-01T22:00:00Z")).0, Duration::ZERO, "00:00 CEST is inside");
    }

    #[test]
    fn a_short_window_gets_its_reboot_inside_it() {
        let short = Window::parse("03:00-03:10").unwrap();
        for _ in 0..200 {
            let wait = until_window(&short, "UTC");
            let (to_open, length) = until_window_at(&short, &jiff::tz::TimeZone::UTC, jiff::Timestamp::now());
            if !to_open.is_zero() {
                assert!(wait >= to_open && wait < to_open + length + Duration::from_secs(2), "{wait:?} {to_open:?}");
            }
        }
    }
}
