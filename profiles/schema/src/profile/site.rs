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
    pub location: Location,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A lab or test site: documentation addresses are expected, not warned about.
    #[serde(default)]
    pub test: bool,
    /// The box's hardware class (`profiles/hardware/`): its drivers, default NIC and disk.
    /// Absent: an image with every class's drivers (the demo, lab machines).
    #[serde(default)]
    pub hardware: Option<String>,
    /// Size of the data disk the box ships with, in GB; the hardware class's when absent.
    #[serde(default)]
    pub disk_gb: Option<u64>,
}

/// Where the box stands, as a mirror list shows it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The building or facility, e.g. "Hurricane Electric FMT2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    pub city: String,
    /// State, province or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> = [self.facility.as_deref(), Some(self.city.as_str()), self.region.as_deref()]
            .into_iter()
            .flatten()
            .chain(std::iter::once(self.country.as_str()))
            .filter(|p| !p.is_empty())
            .collect();
        f.write_str(&parts.join(", "))
    }
}

impl Site {
    /// The disk size the fit check and the first boot assume.
    pub fn disk_gb(&self) -> u64 {
        self.disk_gb.or_else(|| self.hardware_class().map(|c| c.disk_gb)).unwrap_or(crate::hardware::DEFAULT_DISK_GB)
    }

    pub fn hardware_class(&self) -> Option<&'static crate::hardware::HardwareClass> {
        crate::hardware::get(self.hardware.as_deref()?)
    }

    /// The uplink's capacity, for utilisation figures.
    pub fn link_mbit(&self) -> u32 {
        self.hardware_class().map_or(crate::hardware::DEFAULT_LINK_MBIT, |c| c.link_mbit)
    }
}

fn default_timezone() -> String {
    "UTC".into()
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
    let l = &s.location;
    let lines = [
        ("site.sponsor_name", Some(&s.sponsor_name)),
        ("site.location.facility", l.facility.as_ref()),
        ("site.location.city", Some(&l.city)),
        ("site.location.region", l.region.as_ref()),
        ("site.location.country", Some(&l.country)),
    ];
    for (key, text) in lines {
        let Some(text) = text else { continue };
        if text.len() > 200 || text.chars().any(char::is_control) {
            r.error(key, "must be one line of at most 200 characters", "write it without line breaks or tabs");
        }
    }
    if l.city.is_empty() || l.country.is_empty() {
        r.error(
            "site.location",
            "a location needs a city and a country",
            "write e.g. location = { city = \"Fremont\", region = \"California\", country = \"US\" }",
        );
    }
    // ISO 3166-1 alpha-2; ZZ ("unknown") only on a test site.
    let country_ok = isocountry::CountryCode::for_alpha2(&l.country).is_ok() || (l.country == "ZZ" && s.test);
    if !l.country.is_empty() && !country_ok {
        r.error(
            "site.location.country",
            format!("`{}` is not an ISO 3166 country code", l.country),
            "write the two capital letters, e.g. \"US\", \"DE\" or \"GB\" (not \"UK\")",
        );
    }
    match (l.latitude, l.longitude) {
        (None, None) => {}
        (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {}
        _ => r.error(
            "site.location",
            "coordinates need both latitude (-90..90) and longitude (-180..180)",
            "write both in decimal degrees, e.g. latitude = 37.5, longitude = -121.97, or neither",
        ),
    }
    if let Some(class) = s.hardware.as_deref().filter(|c| crate::hardware::get(c).is_none()) {
        r.error(
            "site.hardware",
            format!("`{class}` is not a known hardware class"),
            format!("use one of: {} (profiles/hardware/)", crate::hardware::names().join(", ")),
        );
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
    // Known to the time zone database (the build host's, as the image's own is the same
    // tzdata); a host without one gets the name's shape checked only.
    let tz_known =
        s.timezone == "UTC" || jiff::tz::db().is_definitively_empty() || jiff::tz::db().get(&s.timezone).is_ok();
    if !tz_ok || !tz_known {
        r.error(
            "site.timezone",
            format!("`{}` is not a time zone name", s.timezone),
            "use an IANA name such as \"America/Los_Angeles\" or \"UTC\"",
        );
    }
    if s.disk_gb() < 16 {
        r.error(
            "site.disk_gb",
            format!("{} GB is too small for a mirror", s.disk_gb()),
            "write the size of the box's SSD in GB, e.g. 2000",
        );
    }
}
