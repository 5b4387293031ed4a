//! The client's autonomous system from a MaxMind-format ASN database (GeoLite2-ASN or any
//! database with the same record layout). Looked up on the telemetry thread, never per request.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, Reader};

use super::syslog::Asn;

pub struct AsnDb(Reader<Vec<u8>>);

impl AsnDb {
    pub fn open(path: &Path) -> Result<AsnDb, String> {
        let reader = Reader::open_readfile(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(AsnDb(reader))
    }

    /// A missing or broken database is logged and telemetry goes on without the ASN field.
    pub fn open_optional(path: Option<&Path>) -> Option<AsnDb> {
        let path = path?;
        match AsnDb::open(path) {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::error!(error = %e, "ASN database not usable; records go out without ASN");
                None
            }
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<Asn> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let rec: geoip2::Asn = self.0.lookup(ip).ok()??;
        Some(Asn {
            number: rec.autonomous_system_number?,
            organization: rec.autonomous_system_organization.unwrap_or_default().to_string(),
        })
    }
}
