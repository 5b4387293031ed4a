//! The verdict, on the sustained baseline and never on bursts: the median of the 5-minute
//! utilisation. The fleet's rule of thumb: a 1 Gbit/s box should carry about 100 Mbit/s of
//! baseline (10 %), and a NIC busy above 20 % all the time hosts too much. So: `room` below
//! 10 %, `near` from 10 % to 20 %, `overshot` above 20 %; when overshot, the projects whose
//! bytes would bring the baseline back under the 20 % line, biggest first (fewest moves).

use serde::Serialize;

pub const ROOM_BELOW: f64 = 0.10;
pub const LINE: f64 = 0.20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Room,
    Near,
    Overshot,
}

impl Verdict {
    pub fn of(baseline: f64) -> Verdict {
        if baseline > LINE {
            Verdict::Overshot
        } else if baseline >= ROOM_BELOW {
            Verdict::Near
        } else {
            Verdict::Room
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Room => "room",
            Verdict::Near => "near",
            Verdict::Overshot => "overshot",
        }
    }

    /// As a gauge: 0 room, 1 near, 2 overshot.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Projects (name, share of bytes) to move off, biggest first, until the baseline without them
/// is under the line; empty when it already is.
pub fn move_off(baseline: f64, shares: &[(String, f64)]) -> Vec<String> {
    let mut sorted: Vec<&(String, f64)> = shares.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut left = baseline;
    let mut out = Vec::new();
    for (name, share) in sorted {
        if left <= LINE {
            break;
        }
        left -= baseline * share;
        out.push(name.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_the_fewest_projects_to_move() {
        assert_eq!(Verdict::of(0.03), Verdict::Room);
        assert_eq!(Verdict::of(0.15), Verdict::Near);
        assert_eq!(Verdict::of(0.30), Verdict::Overshot);
        let shares = vec![("a".into(), 0.2), ("b".into(), 0.5), ("c".into(), 0.3)];
        assert_eq!(move_off(0.30, &shares), ["b"], "0.30 × 0.5 = 0.15 under the line");
        assert_eq!(move_off(0.60, &shares), ["b", "c"]);
        assert!(move_off(0.1, &shares).is_empty());
    }
}
