//! `mirror-server report`: today's local counters as a table per project — bytes served today,
//! bytes on disk (from mirror-sync's status files), and the CDN efficiency (served ÷ on disk).
//! Rendering is pure; the command reads the counters file and the status folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::metrics::{Today, NO_PROJECT};
use schema::human::human_bytes;

pub fn render(today: &Today, on_disk: &BTreeMap<String, u64>) -> String {
    let names: BTreeSet<&String> =
        today.projects.keys().filter(|n| n.as_str() != NO_PROJECT).chain(on_disk.keys()).collect();
    let date = crate::timefmt::format_time_iso(today.day as i64 * 86400);
    let mut out = format!("Served today ({} UTC, since 00:00)\n", date.get(..10).unwrap_or(&date));
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>10} {:>12} {:>14}",
        "PROJECT", "SERVED", "REQUESTS", "ON DISK", "CDN EFFICIENCY"
    );
    let (mut served_total, mut disk_total) = (0u64, 0u64);
    for name in names {
        let t = today.projects.get(name).copied().unwrap_or_default();
        let disk = on_disk.get(name).copied();
        served_total += t.bytes;
        disk_total += disk.unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>10} {:>12} {:>14}",
            name,
            human_bytes(t.bytes),
            t.requests,
            disk.map_or("-".into(), human_bytes),
            efficiency(t.bytes, disk),
        );
    }
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>10} {:>12} {:>14}",
        "total",
        human_bytes(served_total),
        today.projects.values().map(|t| t.requests).sum::<u64>(),
        human_bytes(disk_total),
        efficiency(served_total, Some(disk_total)),
    );
    out
}

fn efficiency(served: u64, disk: Option<u64>) -> String {
    match disk {
        Some(d) if d > 0 => format!("{:.3}", served as f64 / d as f64),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DayTotals;

    #[test]
    fn one_row_per_project_with_efficiency_and_a_total() {
        let today = Today {
            day: 20_417,
            projects: BTreeMap::from([
                ("fedora".to_string(), DayTotals { requests: 10, bytes: 3 << 30 }),
                ("_none".to_string(), DayTotals { requests: 4, bytes: 100 }),
            ]),
        };
        let disk = BTreeMap::from([("fedora".to_string(), 2u64 << 30), ("archlinux".to_string(), 1u64 << 30)]);
        let text = render(&today, &disk);
        assert!(text.starts_with("Served today (2025-11-25 UTC"), "{text}");
        let fedora = text.lines().find(|l| l.starts_with("fedora")).unwrap();
        assert!(fedora.contains("3.0 GiB") && fedora.contains("2.0 GiB") && fedora.ends_with("1.500"), "{fedora}");
        let arch = text.lines().find(|l| l.starts_with("archlinux")).unwrap();
        assert!(arch.contains("0 B") && arch.ends_with("0.000"), "{arch}");
        assert!(!text.contains("_none"));
        let total = text.lines().last().unwrap();
        assert!(total.starts_with("total") && total.contains(" 14 ") && total.ends_with("1.000"), "{total}");
    }
}
