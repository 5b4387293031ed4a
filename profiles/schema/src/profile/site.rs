//! `[site]`: who the box is (name, host name, sponsor, location) and its disk size.

use serde::{Deserialize, Serialize};

use super::checks::{is_hostname, is_simple_name};
use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Site {
    /// Must equal the file name (`fmt2` for `fmt2.toml`); names the image and its outputs.
    pub name: String,
    /// Public host name; used in listings, trace files and TLS.
    pub hostname: String,
    pub sponsor_name: String,
    pub sponsor_url: String,
    pub location: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A lab or test site: documentation addresses are expected, not warned about.
    #[serde(default)]
    pub test: bool,
    /// Size of the data disk the box ships with, in GB (the T620s carry 2 TB).
    #[serde(default = "default_disk_gb")]
    pub disk_gb: u64,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_disk_gb() -> u64 {
    2000
}

pub(super) fn validate(s: &Site, file_stem: Option<&str>, r: &mut Reporter) {
    if let Some(file_stem) = file_stem.filter(|stem| s.name != *stem) {
        r.error(
            "site.name",
            format!("`{}` differs from the file name `{file_stem}.toml`", s.name),
            format!("set name = \"{file_stem}\" or rename the file"),
        );
    }
    if !is_simple_name(&s.name) {
        r.error(
            "site.name",
            format!("`{}` is not a short lowercase name", s.name),
            "use letters, digits and '-', e.g. \"fmt2\"",
        );
    }
    if !is_hostname(&s.hostname) {
        r.error(
            "site.hostname",
            format!("`{}` is not a valid host name", s.hostname),
            "write a fully qualified name such as \"mirror.example.net\"",
        );
    }
    // Shown in listings, the login banner and rsync's greeting: one line each.
    for (key, text) in [("site.sponsor_name", &s.sponsor_name), ("site.location", &s.location)] {
        if text.len() > 200 || text.chars().any(char::is_control) {
            r.error(key, "must be one line of at most 200 characters", "write it without line breaks or tabs");
        }
    }
    if !(s.sponsor_url.starts_with("https://") || s.sponsor_url.starts_with("http://"))
        || s.sponsor_url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        r.error(
            "site.sponsor_url",
            format!("`{}` is not an http(s) URL", s.sponsor_url),
            "write the sponsor's web address, e.g. \"https://example.com/\"",
        );
    }
    let tz_ok = s.timezone == "UTC"
        || (s.timezone.contains('/')
            && s.timezone.split('/').all(|p| {
                !p.is_empty() && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-+".contains(c))
            }));
    if !tz_ok {
        r.error(
            "site.timezone",
            format!("`{}` is not a time zone name", s.timezone),
            "use an IANA name such as \"America/Los_Angeles\" or \"UTC\"",
        );
    }
    if s.disk_gb < 16 {
        r.error(
            "site.disk_gb",
            format!("{} GB is too small for a mirror", s.disk_gb),
            "write the size of the box's SSD in GB, e.g. 2000",
        );
    }
}
