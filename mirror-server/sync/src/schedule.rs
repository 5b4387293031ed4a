//! When each project runs next, from its status file alone (pure: the daemon asks, tests too).
//! A project that never synced is due at once; after a success, one interval later (less up to
//! a tenth of it, so a fleet does not hammer the upstream at the same second); after a failed
//! or refused run, after a backoff that doubles per failure in a row, capped, with jitter. A
//! clock that jumped back (a box without an RTC battery, a corrected NTP step) can never push a
//! run further out than one interval (or one cap) from now.

use std::time::Duration;

use schema::status::{Outcome, Status};

/// How the schedule spaces runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Between successful runs.
    pub interval: Duration,
    /// Instead of the interval: once a day at this local time (the playbook's 01:59 cron run).
    pub daily: Option<Daily>,
    /// The wait after the first failure; each further failure in a row doubles it.
    pub retry_after: Duration,
    /// The longest wait after failures.
    pub retry_cap: Duration,
}

impl Policy {
    /// The box's policy for an interval: retries from 5 minutes, capped at 6 hours or the interval.
    pub fn for_interval(interval: Duration) -> Policy {
        Policy {
            interval,
            daily: None,
            retry_after: Duration::from_secs(300),
            retry_cap: interval.min(Duration::from_secs(6 * 3600)),
        }
    }

    /// The wait after `failures` failed runs in a row, `jitter` in [0, 1) spreading it ±25 %.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doubled = self.retry_after.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.retry_cap).mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A time of day in the site's time zone; every box runs at that moment (no jitter), so the
/// fleet pulls in lockstep and the upstream reads each file once.
#[derive(Debug, Clone, PartialEq)]
pub struct Daily {
    pub hour: i8,
    pub minute: i8,
    pub zone: jiff::tz::TimeZone,
}

impl Daily {
    /// The first moment at the daily time strictly after `after` (Unix seconds). A time that a
    /// DST change skips or repeats resolves as the zone's usual "compatible" rule does.
    pub fn next_after(&self, after: i64) -> i64 {
        let Ok(ts) = jiff::Timestamp::from_second(after) else { return after + 86_400 };
        let date = ts.to_zoned(self.zone.clone()).date();
        let at = |d: jiff::civil::Date| d.at(self.hour, self.minute, 0, 0).to_zoned(self.zone.clone()).ok();
        match at(date).filter(|z| z.timestamp().as_second() > after) {
            Some(z) => z.timestamp().as_second(),
            None => date.tomorrow().ok().and_then(at).map_or(after + 86_400, |z| z.timestamp().as_second()),
        }
    }
}

/// Unix second at which the project is next due, given its status (None: never synced), now,
/// and the project's own `jitter` in [0, 1).
pub fn next_due(status: Option<&Status>, policy: &Policy, now: i64, jitter: f64) -> i64 {
    let Some(st) = status else { return now };
    let failed = matches!(st.state, Outcome::Failed | Outcome::Refused) && st.failures > 0;
    if failed {
        let since = st.ended.unwrap_or(st.started);
        let wait = policy.backoff(st.failures, jitter).as_secs() as i64;
        return (since + wait).min(now + policy.retry_cap.as_secs() as i64);
    }
    match st.last_success {
        None => now,
        // At the daily time after the last success: overdue (the box was off at that time) is
        // due now; a clock stepped back waits at most a day.
        Some(t) if policy.daily.is_some() => {
            let daily = policy.daily.as_ref().map_or(t + 86_400, |d| d.next_after(t));
            daily.min(now + 86_400)
        }
        Some(t) => {
            let interval = policy.interval.as_secs() as i64;
            let early = (policy.interval.as_secs_f64() * 0.1 * jitter.clamp(0.0, 1.0)) as i64;
            (t + interval - early).min(now + interval)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn status(state: Outcome, last_success: Option<i64>, failures: u32, ended: i64) -> Status {
        Status { state, last_success, failures, ended: Some(ended), ..Status::running("p", "p", ended) }
    }

    #[test]
    fn first_sync_is_now_and_successes_come_an_interval_apart() {
        let p = Policy::for_interval(DAY);
        assert_eq!(next_due(None, &p, 5000, 0.5), 5000);
        let ok = status(Outcome::Success, Some(1000), 0, 1000);
        assert_eq!(next_due(Some(&ok), &p, 2000, 0.0), 1000 + 86_400);
        assert_eq!(next_due(Some(&ok), &p, 2000, 1.0), 1000 + 86_400 - 8640);
    }

    #[test]
    fn failures_back_off_doubling_to_the_cap_with_jitter() {
        let p = Policy::for_interval(DAY);
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(300));
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(600));
        assert_eq!(p.backoff(30, 0.5), Duration::from_secs(6 * 3600));
        assert!(p.backoff(1, 0.0) >= Duration::from_secs(225) && p.backoff(1, 0.999) <= Duration::from_secs(375));
        // A failed first sync is retried after the backoff, not a day later.
        let failed = status(Outcome::Failed, None, 1, 10_000);
        assert_eq!(next_due(Some(&failed), &p, 10_000, 0.5), 10_300);
        let failed_again = status(Outcome::Failed, Some(1), 3, 10_000);
        assert_eq!(next_due(Some(&failed_again), &p, 10_000, 0.5), 10_000 + 1200);
        // A short interval caps the backoff too.
        let hourly = Policy::for_interval(Duration::from_secs(3600));
        assert_eq!(hourly.backoff(10, 0.5), Duration::from_secs(3600));
    }

    #[test]
    fn a_clock_that_jumped_back_never_pushes_a_run_beyond_one_interval() {
        let p = Policy::for_interval(DAY);
        // The last success is "tomorrow" after the clock stepped back a day.
        let ok = status(Outcome::Success, Some(200_000), 0, 200_000);
        assert_eq!(next_due(Some(&ok), &p, 200_000 - 86_400, 0.0), 200_000);
        assert!(next_due(Some(&ok), &p, 100, 0.0) <= 100 + 86_400);
        let failed = status(Outcome::Failed, None, 20, 200_000);
        assert!(next_due(Some(&failed), &p, 100, 0.5) <= 100 + 6 * 3600);
        // Forward a day: everything overdue is due now, once.
        assert!(next_due(Some(&ok), &p, 200_000 + 2 * 86_400, 0.0) < 200_000 + 2 * 86_400);
    }

    #[test]
    fn a_daily_time_runs_at_that_local_time_after_each_success() {
        let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(-8));
        let p = Policy { daily: Some(Daily { hour: 1, minute: 59, zone }), ..Policy::for_interval(DAY) };
        // 2026-06-01 00:00 UTC is 2026-05-31 16:00 at UTC-8; 01:59 local is 09:59 UTC.
        let midnight_utc = 1_780_272_000;
        let ok = status(Outcome::Success, Some(midnight_utc), 0, midnight_utc);
        assert_eq!(next_due(Some(&ok), &p, midnight_utc + 60, 0.7), midnight_utc + 9 * 3600 + 59 * 60);
        // A success just after 01:59 waits for tomorrow's.
        let after = midnight_utc + 10 * 3600;
        let ok = status(Outcome::Success, Some(after), 0, after);
        assert_eq!(next_due(Some(&ok), &p, after, 0.0), midnight_utc + 86_400 + 9 * 3600 + 59 * 60);
        // A box that was off at 01:59 runs at once when it comes back.
        assert_eq!(next_due(Some(&ok), &p, after + 3 * 86_400, 0.0), midnight_utc + 86_400 + 9 * 3600 + 59 * 60);
    }
}
