//! `[telemetry]`: request records streamed to the fleet's watchtower.

use serde::{Deserialize, Serialize};

use super::checks::is_host_port;
use crate::diagnostics::Reporter;

/// The watchtower: RFC 5424 syslog over TLS (RFC 5425), one record per request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Telemetry {
    /// host:port of the watchtower's syslog-over-TLS listener (6514 is the standard port).
    pub watchtower: String,
    /// PEM file (relative to the profile) of the CA that signs the watchtower's certificate.
    pub ca_file: String,
    /// MaxMind-format ASN database on the box (e.g. GeoLite2-ASN.mmdb); no ASN field without it.
    #[serde(default)]
    pub asn_database: Option<String>,
    /// Records kept on disk while the watchtower is unreachable; beyond this they are dropped
    /// (and counted).
    #[serde(default = "default_spill_mb")]
    pub spill_max_mb: u64,
}

fn default_spill_mb() -> u64 {
    256
}

pub(super) fn validate(t: &Telemetry, r: &mut Reporter) {
    if !is_host_port(&t.watchtower, false) {
        r.error(
            "telemetry.watchtower",
            format!("`{}` is not host:port", t.watchtower),
            "write e.g. \"watchtower.example.org:6514\"",
        );
    }
    if t.asn_database.as_ref().is_some_and(|f| !f.starts_with('/')) {
        r.error(
            "telemetry.asn_database",
            "must be an absolute path on the box",
            "write e.g. \"/var/lib/micromirror/GeoLite2-ASN.mmdb\"",
        );
    }
    if t.spill_max_mb == 0 {
        r.error("telemetry.spill_max_mb", "zero would drop every record while the watchtower is away", "use e.g. 256");
    }
}
