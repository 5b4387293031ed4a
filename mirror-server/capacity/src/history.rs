//! The box's own traffic, kept for days: per-second totals folded into one entry per minute
//! (bytes out, requests), at most `days` of them — a bounded few hundred kilobytes, saved on the
//! state partition so a restart or an update keeps it. From it come the live figures: the
//! utilisation quantiles over the last hour and day, the dispersion, and the verdict, computed
//! by the same code as the log analysis (its minutes spread over their seconds).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::series::Series;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// (Unix minute, bytes, requests), oldest first, minutes strictly increasing.
    minutes: VecDeque<(i64, f64, f64)>,
    /// How many minutes are kept.
    keep: usize,
}

impl History {
    pub fn new(days: usize) -> History {
        History { minutes: VecDeque::new(), keep: days.max(1) * 1440 }
    }

    /// Counts what went out during second `t` (Unix seconds).
    pub fn add(&mut self, t: i64, bytes: f64, requests: f64) {
        let minute = t.div_euclid(60);
        match self.minutes.back_mut() {
            Some(last) if last.0 == minute => {
                last.1 += bytes;
                last.2 += requests;
            }
            // A clock that stepped back folds into the newest minute rather than disorder it.
            Some(last) if last.0 > minute => {
                last.1 += bytes;
                last.2 += requests;
            }
            _ => self.minutes.push_back((minute, bytes, requests)),
        }
        while self.minutes.len() > self.keep {
            self.minutes.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.minutes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    /// The last `seconds` up to `now` as a per-second series (each minute's bytes and requests
    /// spread evenly over its seconds; minutes without an entry are silent). It starts no
    /// earlier than the history: a box up for two hours is judged on those two hours, not on a
    /// day of which most is before it started.
    pub fn series(&self, now: i64, seconds: i64) -> Series {
        let oldest = self.minutes.front().map_or(i64::MAX, |m| m.0);
        let first_minute = ((now - seconds).div_euclid(60) + 1).max(oldest.min(now.div_euclid(60)));
        let last_minute = now.div_euclid(60);
        let span = (last_minute - first_minute + 1).max(0) as usize;
        let mut s = Series { start: first_minute * 60, bytes: vec![0.0; span * 60], requests: vec![0.0; span * 60] };
        for &(m, bytes, requests) in self.minutes.iter().filter(|(m, _, _)| *m >= first_minute && *m <= last_minute) {
            let at = ((m - first_minute) * 60) as usize;
            for i in 0..60 {
                s.bytes[at + i] = bytes / 60.0;
                s.requests[at + i] = requests / 60.0;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_seconds_into_minutes_keeps_a_bounded_span_and_spreads_them_back() {
        let mut h = History::new(1);
        for t in 0..180 {
            h.add(1_000_050 + t, 100.0, 1.0);
        }
        assert_eq!(h.len(), 4, "{h:?}");
        let s = h.series(1_000_050 + 179, 3600);
        assert!((s.bytes.iter().sum::<f64>() - 18_000.0).abs() < 1e-6);
        for t in 0..3000 {
            h.add(2_000_000 + t * 60, 1.0, 1.0);
        }
        assert_eq!(h.len(), 1440, "at most a day of minutes");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
    }
}
