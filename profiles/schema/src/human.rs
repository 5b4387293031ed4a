//! Numbers and times for people: sizes ("1.5 GiB"), ages ("3h 12m") and UTC timestamps
//! ("2024-05-01 12:34"), shared by listings, `mirror-sync status`, reports and xtask's output.
//! Dates come from jiff (the workspace's one calendar).

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "3h 12m" — how long ago, for humans.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// "2024-05-01 12:34" (UTC)
pub fn format_time(t: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(t);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// "2024-05-01T12:34:56Z"
pub fn format_time_iso(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// (year, month, day, hour, minute, second) of Unix time `t`, UTC (times outside jiff's range,
/// ±9999 years, read as the epoch).
pub fn civil(t: i64) -> (i64, u32, u32, i64, i64, i64) {
    let ts = jiff::Timestamp::from_second(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let (h, m, s) = (i64::from(dt.hour()), i64::from(dt.minute()), i64::from(dt.second()));
    (i64::from(dt.year()), dt.month() as u32, dt.day() as u32, h, m, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(30), "30s");
        assert_eq!(age(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(age(3 * 86_400), "3d 0h");
    }

    #[test]
    fn known_instants() {
        assert_eq!(format_time_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time_iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
    }
}
