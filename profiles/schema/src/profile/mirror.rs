//! `[mirror]`: the upstream, the hosted projects, the schedule, push and the sync guards.

use serde::{Deserialize, Serialize};

use super::checks::is_host_port;
use crate::catalog::Catalog;
use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Mirror {
    /// The "heavy iron" mirror every project is pulled from (rsync).
    pub upstream: String,
    /// Per-project rsync bandwidth limit unless the catalog entry overrides it.
    #[serde(default = "default_bwlimit")]
    pub bwlimit_mbit: u32,
    /// Hours between scheduled runs of each project (jittered).
    #[serde(default = "default_interval")]
    pub sync_interval_hours: u32,
    /// Instead of the interval: every project runs once a day at this local time ("01:59",
    /// the playbook's cron time), on every box at once, so the upstream reads each file once.
    #[serde(default)]
    pub sync_at: Option<String>,
    pub projects: Vec<String>,
    #[serde(default)]
    pub push: Option<Push>,
    /// The max-delete guard: a run may delete at most this share of a project's files.
    #[serde(default = "default_max_delete")]
    pub max_delete_percent: u32,
    /// A run starts only with at least this much free space on the data partition.
    #[serde(default = "default_min_free")]
    pub min_free_mb: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Push {
    /// MQTT broker as host:port.
    pub broker: String,
    /// Topics below this prefix name the upstream module that changed.
    pub topic_prefix: String,
}

impl Mirror {
    /// `sync_at` as (hour, minute); `None` when absent or not a time (the validation says so).
    pub fn daily_time(&self) -> Option<(u8, u8)> {
        let (h, m) = self.sync_at.as_deref()?.split_once(':')?;
        let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && self.sync_at.as_deref()?.len() == 5).then_some((h, m))
    }
}

impl Push {
    /// The broker's host (IPv6 without brackets) and port; `None` if not host:port (the
    /// validation reports that).
    pub fn broker_host_port(&self) -> Option<(String, u16)> {
        let (host, port) = self.broker.rsplit_once(':')?;
        Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
    }
}

fn default_bwlimit() -> u32 {
    200
}
fn default_max_delete() -> u32 {
    10
}
fn default_min_free() -> u64 {
    2048
}
fn default_interval() -> u32 {
    24
}

pub(super) fn validate(m: &Mirror, disk_gb: u64, disk_known: bool, catalog: &Catalog, r: &mut Reporter) {
    if !is_host_port(&m.upstream, true) {
        r.error(
            "mirror.upstream",
            format!("`{}` is not a host name (optionally with :port)", m.upstream),
            "write the upstream mirror's host name, e.g. \"mirror.fcix.net\"",
        );
    }
    if m.max_delete_percent == 0 || m.max_delete_percent > 100 {
        r.error(
            "mirror.max_delete_percent",
            "must be between 1 and 100",
            "use e.g. 10: a run may delete at most 10% of a project's files",
        );
    }
    if m.bwlimit_mbit == 0 {
        r.error("mirror.bwlimit_mbit", "a zero limit would stop every sync", "use e.g. 200 (Mbit/s)");
    }
    if m.sync_interval_hours == 0 {
        r.error("mirror.sync_interval_hours", "the interval must be at least one hour", "use e.g. 24 for a daily run");
    }
    if m.projects.is_empty() {
        r.error(
            "mirror.projects",
            "no project: the mirror would serve nothing",
            "list projects from profiles/projects/, e.g. [\"archlinux\"]",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    // Catalog entry → the name the profile used for it (an entry's name or one of its aliases).
    let mut entries: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    let mut folders: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    let mut total_gb = 0;
    for (i, name) in m.projects.iter().enumerate() {
        if !seen.insert(name) {
            r.error(&format!("mirror.projects[{i}]"), format!("`{name}` is listed twice"), "remove the duplicate");
            continue;
        }
        match catalog.get(name) {
            Some(p) if entries.contains_key(p.name.as_str()) => {
                let first = entries[p.name.as_str()];
                r.error(
                    &format!("mirror.projects[{i}]"),
                    format!("`{name}` and `{first}` are the same project twice (`{}` in the catalog)", p.name),
                    "list it once",
                );
            }
            Some(p) => {
                entries.insert(&p.name, name);
                total_gb += p.size_gb;
                if let Some(other) = folders.insert(&p.path, name) {
                    r.error(
                        &format!("mirror.projects[{i}]"),
                        format!("`{name}` and `{other}` both live in /srv/mirror/{}", p.path),
                        "host only one variant of a project (e.g. epel or epel-x86_64)",
                    );
                }
            }
            None => {
                let known: Vec<&str> = catalog.projects.keys().map(String::as_str).collect();
                r.error(
                    &format!("mirror.projects[{i}]"),
                    format!("`{name}` is not in the catalog"),
                    format!("use one of: {}", known.join(", ")),
                );
            }
        }
    }
    // How full, and for how long, `profiles check` and the build show (`LoadedProfile::
    // disk_fit`); only a disk that cannot hold the projects now is a problem here.
    let fit = DiskFit::new(total_gb, disk_gb);
    // Without a hardware class or a size the disk is a guess: `profiles check` shows the fit
    // as an assumption, and the placeholder or the missing size is what stops a build.
    if !fit.fits() && disk_known {
        r.error(
            "mirror.projects",
            fit.describe(),
            "host fewer projects or raise site.disk_gb to the box's real disk size",
        );
    }
    if m.sync_at.is_some() && m.daily_time().is_none() {
        r.error(
            "mirror.sync_at",
            format!("`{}` is not a time of day", m.sync_at.as_deref().unwrap_or_default()),
            "write the local time as HH:MM, e.g. \"01:59\"",
        );
    }
    if let Some(push) = &m.push {
        if !is_host_port(&push.broker, false) {
            r.error(
                "mirror.push.broker",
                format!("`{}` is not host:port", push.broker),
                "write e.g. \"mirror.fcix.net:1883\"",
            );
        }
        if push.topic_prefix.is_empty() || push.topic_prefix.contains(['#', '+']) {
            r.error(
                "mirror.push.topic_prefix",
                "the prefix must be a plain topic path",
                "write e.g. \"rsync/mirror.fcix.net\"",
            );
        }
    }
}

/// Whether a site's projects fit its disk, now and for how long. What a full disk costs:
/// rsync's --delay-updates keeps a run's new files beside the old ones until the run ends, so a
/// day's changes need room on top of the projects; the file system takes its share first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFit {
    pub projects_gb: u64,
    pub disk_gb: u64,
}

impl DiskFit {
    /// XFS and ext4 metadata, journal and reserved blocks: about 2 % of the disk.
    pub const FILESYSTEM_PERCENT: u64 = 2;
    /// The most a day's syncs move on today's fleet (20-100 GB/day).
    pub const DAILY_CHANGES_GB: u64 = 100;
    /// How fast mirrored trees grow when nothing better is known: about a tenth a year.
    pub const GROWTH_PER_YEAR: f64 = 0.10;

    pub fn new(projects_gb: u64, disk_gb: u64) -> DiskFit {
        DiskFit { projects_gb, disk_gb }
    }

    /// Room kept for a day's changes: the fleet's worst day, or a tenth of a small (lab) disk.
    pub fn changes_gb(&self) -> u64 {
        Self::DAILY_CHANGES_GB.min(self.disk_gb / 10)
    }

    /// What the projects may take: the disk less the file system's share and a day's changes.
    pub fn room_gb(&self) -> u64 {
        (self.disk_gb * (100 - Self::FILESYSTEM_PERCENT) / 100).saturating_sub(self.changes_gb())
    }

    pub fn fits(&self) -> bool {
        self.projects_gb <= self.room_gb()
    }

    /// Months until growth uses up what is left of the room (0 when it does not fit now).
    pub fn months_left(&self) -> f64 {
        let spare = self.room_gb().saturating_sub(self.projects_gb) as f64;
        let per_month = self.projects_gb as f64 * Self::GROWTH_PER_YEAR / 12.0;
        if per_month <= 0.0 {
            f64::INFINITY
        } else {
            spare / per_month
        }
    }

    /// One sentence for people: how full the disk will be and when that becomes a problem.
    pub fn describe(&self) -> String {
        let percent = self.projects_gb as f64 * 100.0 / self.disk_gb.max(1) as f64;
        let head = format!(
            "the projects take about {} GB of the {} GB disk ({percent:.0} % full); {} GB fit once the file system ({} %) and a day's changes ({} GB) have their room",
            self.projects_gb,
            self.disk_gb,
            self.room_gb(),
            Self::FILESYSTEM_PERCENT,
            self.changes_gb()
        );
        if !self.fits() {
            return format!("{head}: {} GB too many", self.projects_gb - self.room_gb());
        }
        let months = self.months_left();
        let when = match months {
            m if m < 1.0 => "within a month".to_string(),
            m if m > 120.0 => "in more than ten years".to_string(),
            m => format!("in about {m:.0} months"),
        };
        format!(
            "{head}; at {:.0} % growth a year ({:.0} GB) the last {} GB are used up {when}",
            Self::GROWTH_PER_YEAR * 100.0,
            self.projects_gb as f64 * Self::GROWTH_PER_YEAR,
            self.room_gb() - self.projects_gb
        )
    }
}

#[cfg(test)]
mod fit_tests {
    use super::DiskFit;

    #[test]
    fn a_real_2tb_host_with_1850_gb_fits_and_is_told_when_it_will_not() {
        let fit = DiskFit::new(1850, 2000);
        assert!(fit.fits(), "{}", fit.describe());
        assert!(fit.months_left() < 1.0, "{}", fit.describe());
        assert!(
            fit.describe().contains("92 % full") && fit.describe().contains("within a month"),
            "{}",
            fit.describe()
        );
        let over = DiskFit::new(1900, 2000);
        assert!(!over.fits());
        assert!(over.describe().contains("40 GB too many"), "{}", over.describe());
        let roomy = DiskFit::new(900, 2000);
        assert!(roomy.fits() && roomy.months_left() > 12.0, "{}", roomy.describe());
    }
}
