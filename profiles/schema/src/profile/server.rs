//! `[server]`: how mirror-server treats clients: DSCP marking, rate limits, allow and block lists.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Server {
    /// Mark egress DSCP CS1 ("scavenger") so sponsors can deprioritise it.
    #[serde(default = "yes")]
    pub scavenger: bool,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Never rate limited.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Dropped at the firewall.
    #[serde(default)]
    pub blocklist: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server { scavenger: true, rate_limits: Vec::new(), allowlist: Vec::new(), blocklist: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RateLimit {
    pub prefixes: Vec<String>,
    pub per_second: u32,
    pub burst: u32,
    /// One bucket per client address (the default), or one shared by every client inside the
    /// prefixes (the fleet's treatment of a cloud provider's crawlers).
    #[serde(default)]
    pub bucket: Bucket,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Bucket {
    #[default]
    PerClient,
    Shared,
}

fn yes() -> bool {
    true
}

pub(super) fn validate(s: &Server, r: &mut Reporter) {
    for (i, limit) in s.rate_limits.iter().enumerate() {
        if limit.per_second == 0 || limit.burst == 0 {
            r.error(
                &format!("server.rate_limits[{i}]"),
                "per_second and burst must be at least 1",
                "use e.g. per_second = 5, burst = 300",
            );
        }
        for (j, p) in limit.prefixes.iter().enumerate() {
            if p.parse::<IpNet>().is_err() {
                r.error(
                    &format!("server.rate_limits[{i}].prefixes[{j}]"),
                    format!("`{p}` is not a prefix"),
                    "write e.g. \"203.0.113.0/24\"",
                );
            }
        }
    }
    for (key, list) in [("server.allowlist", &s.allowlist), ("server.blocklist", &s.blocklist)] {
        for (i, p) in list.iter().enumerate() {
            if p.parse::<IpNet>().is_err() {
                r.error(&format!("{key}[{i}]"), format!("`{p}` is not a prefix"), "write e.g. \"203.0.113.0/24\"");
            }
        }
    }
}
