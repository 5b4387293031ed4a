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

pub(super) fn validate(m: &Mirror, disk_gb: u64, catalog: &Catalog, r: &mut Reporter) {
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
    let mut folders: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    let mut total_gb = 0;
    for (i, name) in m.projects.iter().enumerate() {
        if !seen.insert(name) {
            r.error(&format!("mirror.projects[{i}]"), format!("`{name}` is listed twice"), "remove the duplicate");
            continue;
        }
        match catalog.get(name) {
            Some(p) => {
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
    // Keep a tenth of the disk free for rsync's delayed updates and the filesystem itself.
    let usable = disk_gb * 9 / 10;
    if total_gb > usable {
        r.error(
            "mirror.projects",
            format!("the projects need about {total_gb} GB but the {disk_gb} GB disk offers {usable} GB"),
            "host fewer projects or raise site.disk_gb to the box's real disk size",
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
