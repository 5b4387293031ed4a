//! The site profile (`profiles/NAME.toml`): the one schema that describes a micro mirror.
//! xtask reads it to bake an image; the appliance reads the same file from /etc/micromirror.
//! Loading validates everything and reports every problem at once; nothing here does I/O
//! beyond reading the file itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Project};
use crate::diagnostics::{Problem, Problems, Reporter};
use crate::toml_load::{parse_collecting_unknown, read_file};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Profile {
    pub site: Site,
    #[serde(default)]
    pub base: Base,
    pub network: Network,
    pub access: Access,
    pub mirror: Mirror,
    #[serde(default)]
    pub server: Server,
    /// HTTPS on 443 next to plain HTTP; absent: plain HTTP only.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Request records streamed to the fleet's watchtower; absent: none leave the box.
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

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

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum Distro {
    #[default]
    #[serde(rename = "almalinux-9")]
    Almalinux9,
    #[serde(rename = "debian-12")]
    Debian12,
}

impl Distro {
    pub fn as_str(self) -> &'static str {
        match self {
            Distro::Almalinux9 => "almalinux-9",
            Distro::Debian12 => "debian-12",
        }
    }

    /// Highest glibc the distro ships; our binaries must not need a newer one.
    pub fn glibc(self) -> (u32, u32) {
        match self {
            Distro::Almalinux9 => (2, 34),
            Distro::Debian12 => (2, 36),
        }
    }

    pub fn default_mirror(self) -> &'static str {
        match self {
            Distro::Almalinux9 => "https://repo.almalinux.org/almalinux",
            Distro::Debian12 => "http://deb.debian.org/debian",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Base {
    #[serde(default)]
    pub distro: Distro,
    /// Where packages come from; the distro's own default when absent.
    #[serde(default)]
    pub mirror: Option<String>,
    /// AlmaLinux only: where EPEL comes from (for packages BaseOS/AppStream lack).
    #[serde(default)]
    pub epel_mirror: Option<String>,
    /// AlmaLinux only: the GPG key(s) packages must be signed with (URL or file:// path);
    /// the distro's key under the mirror when absent.
    #[serde(default)]
    pub gpg_keys: Vec<String>,
}

impl Base {
    pub fn mirror_url(&self) -> String {
        self.mirror
            .clone()
            .unwrap_or_else(|| self.distro.default_mirror().to_string())
            .trim_end_matches('/')
            .to_string()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Network {
    /// Which NIC becomes `wan0`; the first wired NIC when absent.
    #[serde(default)]
    pub nic: NicMatch,
    /// Two NICs bonded with LACP (802.3ad) as `wan0`, instead of `nic`.
    #[serde(default)]
    pub bond: Option<Bond>,
    /// Lab sites only: take addresses from DHCP instead of the static ones.
    #[serde(default)]
    pub dhcp: bool,
    /// "address/prefix", e.g. "192.0.2.10/24".
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv4_gateway: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub ipv6_gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Bond {
    /// The two member NICs, by MAC address (the switch ports of one LACP group).
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct NicMatch {
    #[serde(default)]
    pub mac: Option<String>,
    /// udev's ID_PATH, e.g. "pci-0000:01:00.0".
    #[serde(default)]
    pub pci_path: Option<String>,
    /// Kernel driver, e.g. "r8169".
    #[serde(default)]
    pub driver: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Access {
    #[serde(default = "default_admin")]
    pub admin_user: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Prefixes allowed to reach admin-only ports (metrics).
    #[serde(default)]
    pub admin_prefixes: Vec<String>,
}

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

/// Where the HTTPS certificate comes from: ACME (HTTP-01 on port 80) or files kept by
/// someone else (e.g. certbot's /etc/letsencrypt/live/HOST layout).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tls {
    /// ACME directory URL; mirror-server obtains and renews the certificate itself.
    #[serde(default)]
    pub acme_directory: Option<String>,
    /// Contact for the ACME account, e.g. "mailto:noc@example.org".
    #[serde(default)]
    pub acme_contact: Option<String>,
    /// PEM file (relative to the profile) of a CA that the ACME server's own HTTPS uses, when it is
    /// not a public one (a private or test CA).
    #[serde(default)]
    pub acme_ca_file: Option<String>,
    /// Certificate chain and key files on the box, reloaded when they change.
    #[serde(default)]
    pub certificate_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    /// Names besides site.hostname that the certificate covers.
    #[serde(default)]
    pub extra_names: Vec<String>,
}

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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RateLimit {
    pub prefixes: Vec<String>,
    pub per_second: u32,
    pub burst: u32,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_disk_gb() -> u64 {
    2000
}
fn default_admin() -> String {
    "mirror".into()
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
fn yes() -> bool {
    true
}

/// A profile that passed validation, with the catalog entries of its projects.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub path: PathBuf,
    pub text: String,
    pub profile: Profile,
    pub projects: Vec<Project>,
    pub warnings: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Invalid(Problems),
}

/// Reads and validates a profile of the repository (`profiles/NAME.toml`: the file is named
/// after the site).
pub fn load(path: &Path, catalog: &Catalog) -> Result<LoadedProfile, ProfileError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    load_named(path, catalog, Some(&stem))
}

/// Reads and validates the profile installed on an appliance (/etc/micromirror/site.toml).
pub fn load_installed(path: &Path, catalog: &Catalog) -> Result<LoadedProfile, ProfileError> {
    load_named(path, catalog, None)
}

fn load_named(path: &Path, catalog: &Catalog, file_stem: Option<&str>) -> Result<LoadedProfile, ProfileError> {
    let text = read_file(path).map_err(|p| ProfileError::Invalid(Problems(vec![p])))?;
    let mut r = Reporter::new(path, &text);
    let Some(profile) = parse_collecting_unknown::<Profile>(&text, &mut r) else {
        return Err(ProfileError::Invalid(Problems(r.problems)));
    };
    validate(&profile, file_stem, catalog, &mut r);
    validate_side_files(&profile, path.parent().unwrap_or(Path::new(".")), &mut r);
    if r.has_errors() {
        return Err(ProfileError::Invalid(Problems(r.problems)));
    }
    let projects = profile.mirror.projects.iter().filter_map(|n| catalog.get(n).cloned()).collect();
    let warnings = r.problems;
    Ok(LoadedProfile { path: path.to_path_buf(), text, profile, projects, warnings })
}

/// Every rule a profile must meet; each broken rule becomes one problem naming its key.
pub fn validate(p: &Profile, file_stem: Option<&str>, catalog: &Catalog, r: &mut Reporter) {
    validate_site(&p.site, file_stem, r);
    validate_base(&p.base, r);
    validate_network(&p.network, p.site.test, r);
    validate_access(&p.access, r);
    validate_mirror(&p.mirror, p.site.disk_gb, catalog, r);
    validate_server(&p.server, r);
    if let Some(tls) = &p.tls {
        validate_tls(tls, r);
    }
    if let Some(t) = &p.telemetry {
        validate_telemetry(t, r);
    }
}

fn validate_tls(t: &Tls, r: &mut Reporter) {
    let acme = t.acme_directory.is_some();
    let files = t.certificate_file.is_some() || t.key_file.is_some();
    if acme == files {
        r.error(
            "tls",
            if acme { "both acme_directory and certificate files are set" } else { "no certificate source" },
            "set acme_directory (e.g. \"https://acme-v02.api.letsencrypt.org/directory\"), or certificate_file \
             and key_file (e.g. /etc/letsencrypt/live/HOST/fullchain.pem and privkey.pem)",
        );
    }
    if files && (t.certificate_file.is_none() || t.key_file.is_none()) {
        r.error("tls", "certificate_file and key_file go together", "set both, or neither and use acme_directory");
    }
    for (key, v) in [("tls.certificate_file", &t.certificate_file), ("tls.key_file", &t.key_file)] {
        if v.as_ref().is_some_and(|f| !f.starts_with('/')) {
            r.error(
                key,
                "must be an absolute path on the box",
                "write e.g. \"/etc/letsencrypt/live/HOST/fullchain.pem\"",
            );
        }
    }
    if let Some(url) = &t.acme_directory {
        if !url.starts_with("https://") {
            r.error("tls.acme_directory", format!("`{url}` is not an https:// URL"), "use the CA's directory URL");
        }
    }
    if t.acme_ca_file.is_some() && !acme {
        r.error("tls.acme_ca_file", "only used with acme_directory", "remove it, or set acme_directory");
    }
    for (i, name) in t.extra_names.iter().enumerate() {
        if !is_hostname(name) {
            r.error(
                &format!("tls.extra_names[{i}]"),
                format!("`{name}` is not a host name"),
                "write e.g. \"mirror.example.org\"",
            );
        }
    }
}

fn validate_telemetry(t: &Telemetry, r: &mut Reporter) {
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

/// Files a profile names next to itself (CA certificates): they must exist and hold PEM
/// certificates, since the image copies them and the box cannot fetch them later.
fn validate_side_files(p: &Profile, profile_dir: &Path, r: &mut Reporter) {
    let named = [
        ("tls.acme_ca_file", p.tls.as_ref().and_then(|t| t.acme_ca_file.as_ref())),
        ("telemetry.ca_file", p.telemetry.as_ref().map(|t| &t.ca_file)),
    ];
    for (key, file) in named {
        let Some(file) = file else { continue };
        if file.starts_with('/') || file.split('/').any(|c| c == "..") {
            r.error(
                key,
                format!("`{file}` must be a path inside the profiles folder"),
                "write e.g. \"certs/watchtower-ca.pem\"",
            );
            continue;
        }
        match std::fs::read_to_string(profile_dir.join(file)) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => r.error(
                key,
                format!("{file} holds no PEM certificate"),
                "put the CA certificate (-----BEGIN CERTIFICATE-----) there",
            ),
            Err(e) => r.error(
                key,
                format!("cannot read {}: {e}", profile_dir.join(file).display()),
                "put the CA certificate there (paths are relative to the profile)",
            ),
        }
    }
}

impl Profile {
    /// Files the profile names relative to itself, to install next to it on the box.
    pub fn side_files(&self) -> Vec<&str> {
        let tls = self.tls.as_ref().and_then(|t| t.acme_ca_file.as_deref());
        let telemetry = self.telemetry.as_ref().map(|t| t.ca_file.as_str());
        tls.into_iter().chain(telemetry).collect()
    }
}

fn validate_site(s: &Site, file_stem: Option<&str>, r: &mut Reporter) {
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
    if !(s.sponsor_url.starts_with("https://") || s.sponsor_url.starts_with("http://")) {
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

fn validate_base(b: &Base, r: &mut Reporter) {
    for (key, url) in [("base.mirror", &b.mirror), ("base.epel_mirror", &b.epel_mirror)] {
        if let Some(url) = url {
            if !is_url(url) {
                r.error(
                    key,
                    format!("`{url}` is not a URL"),
                    "write an http://, https:// or file:// URL of a package mirror",
                );
            }
        }
    }
    if b.distro == Distro::Debian12 && (b.epel_mirror.is_some() || !b.gpg_keys.is_empty()) {
        r.error(
            "base.epel_mirror",
            "epel_mirror and gpg_keys apply to almalinux-9 only",
            "remove them or set distro = \"almalinux-9\"",
        );
    }
    for (i, key) in b.gpg_keys.iter().enumerate() {
        if !is_url(key) {
            r.error(
                &format!("base.gpg_keys[{i}]"),
                format!("`{key}` is not a URL"),
                "write an https:// or file:// URL of the key",
            );
        }
    }
}

fn validate_network(n: &Network, test_site: bool, r: &mut Reporter) {
    let set = [&n.nic.mac, &n.nic.pci_path, &n.nic.driver].iter().filter(|v| v.is_some()).count();
    if let Some(bond) = &n.bond {
        if set > 0 {
            r.error("network.bond", "both nic and bond are set", "keep bond for two bonded NICs, or nic for one");
        }
        if bond.members.len() != 2 {
            r.error(
                "network.bond.members",
                format!("{} members; a bond here has exactly two", bond.members.len()),
                "list the two NICs' MAC addresses",
            );
        }
        for (i, mac) in bond.members.iter().enumerate() {
            if !is_mac(mac) {
                r.error(
                    &format!("network.bond.members[{i}]"),
                    format!("`{mac}` is not a MAC address"),
                    "write it as 00:11:22:33:44:55",
                );
            }
        }
    }
    if set > 1 {
        r.error(
            "network.nic",
            "more than one of mac, pci_path and driver is set",
            "keep the one that identifies the NIC on this box",
        );
    }
    if let Some(mac) = &n.nic.mac {
        if !is_mac(mac) {
            r.error("network.nic.mac", format!("`{mac}` is not a MAC address"), "write it as 00:11:22:33:44:55");
        }
    }
    if n.dhcp && !test_site {
        r.warn(
            "network.dhcp",
            "DHCP on a production site: the sponsor gives static addresses",
            "set the static addresses and dhcp = false before shipping",
        );
    }
    let v4 = parse_net::<Ipv4Net>(r, "network.ipv4", &n.ipv4, "192.0.2.10/24");
    let v6 = parse_net::<Ipv6Net>(r, "network.ipv6", &n.ipv6, "2001:db8::10/64");
    let gw4 = parse_addr::<Ipv4Addr>(r, "network.ipv4_gateway", &n.ipv4_gateway, "192.0.2.1");
    let gw6 = parse_addr::<Ipv6Addr>(r, "network.ipv6_gateway", &n.ipv6_gateway, "2001:db8::1");
    if !n.dhcp && n.ipv4.is_none() && n.ipv6.is_none() {
        r.error(
            "network",
            "no address: the box would be unreachable",
            "set ipv4 and/or ipv6 with their gateways (or dhcp = true on a lab site)",
        );
    }
    if let (Some(net), Some(gw)) = (v4, gw4) {
        // A /31 or /32 gateway may sit outside the on-link prefix only by explicit route; refuse.
        if !net.contains(&gw) {
            r.error(
                "network.ipv4_gateway",
                format!("gateway {gw} is outside {net}"),
                format!("use the gateway the sponsor gave for {}", net.trunc()),
            );
        }
    }
    if let (Some(net), Some(gw)) = (v6, gw6) {
        if !net.contains(&gw) && !is_link_local(gw) {
            r.error(
                "network.ipv6_gateway",
                format!("gateway {gw} is outside {net}"),
                "use the sponsor's gateway inside the prefix, or its fe80:: link-local address",
            );
        }
    }
    if v4.is_some() && gw4.is_none() && n.ipv4_gateway.is_none() {
        r.error("network.ipv4_gateway", "ipv4 is set without a gateway", "add ipv4_gateway");
    }
    if v6.is_some() && gw6.is_none() && n.ipv6_gateway.is_none() {
        r.error("network.ipv6_gateway", "ipv6 is set without a gateway", "add ipv6_gateway");
    }
    for (i, d) in n.dns.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            r.error(
                &format!("network.dns[{i}]"),
                format!("`{d}` is not an IP address"),
                "write resolver addresses such as \"192.0.2.53\"",
            );
        }
    }
    if !test_site {
        let doc: Vec<IpAddr> = v4
            .map(|n| IpAddr::V4(n.addr()))
            .into_iter()
            .chain(v6.map(|n| IpAddr::V6(n.addr())))
            .filter(|a| is_documentation(*a))
            .collect();
        for a in doc {
            let key = if a.is_ipv4() { "network.ipv4" } else { "network.ipv6" };
            r.warn(
                key,
                format!("{a} is a documentation address (placeholder)"),
                "replace it with the address the hosting network assigned before shipping",
            );
        }
    }
}

fn validate_access(a: &Access, r: &mut Reporter) {
    if !is_simple_name(&a.admin_user) || a.admin_user == "root" {
        r.error(
            "access.admin_user",
            format!("`{}` is not a usable user name", a.admin_user),
            "use a lowercase name other than root, e.g. \"mirror\"",
        );
    }
    if a.ssh_keys.is_empty() {
        r.error(
            "access.ssh_keys",
            "no SSH key: nobody could log in to the box",
            "add at least one public key, e.g. the content of ~/.ssh/id_ed25519.pub",
        );
    }
    for (i, key) in a.ssh_keys.iter().enumerate() {
        let mut parts = key.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let body = parts.next().unwrap_or("");
        let known = [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com",
        ];
        if !known.contains(&kind) || body.len() < 16 || key.contains('\n') {
            r.error(
                &format!("access.ssh_keys[{i}]"),
                "not an OpenSSH public key",
                "paste one line of a .pub file: \"ssh-ed25519 AAAA… comment\"",
            );
        }
    }
    for (i, p) in a.admin_prefixes.iter().enumerate() {
        if p.parse::<IpNet>().is_err() {
            r.error(
                &format!("access.admin_prefixes[{i}]"),
                format!("`{p}` is not a prefix"),
                "write e.g. \"198.51.100.0/24\" or \"2001:db8::/48\"",
            );
        }
    }
}

fn validate_mirror(m: &Mirror, disk_gb: u64, catalog: &Catalog, r: &mut Reporter) {
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

fn validate_server(s: &Server, r: &mut Reporter) {
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

fn parse_net<T: std::str::FromStr>(r: &mut Reporter, key: &str, v: &Option<String>, example: &str) -> Option<T> {
    let v = v.as_ref()?;
    match v.parse::<T>() {
        Ok(n) => Some(n),
        Err(_) => {
            r.error(key, format!("`{v}` is not an address with a prefix length"), format!("write it as \"{example}\""));
            None
        }
    }
}

fn parse_addr<T: std::str::FromStr>(r: &mut Reporter, key: &str, v: &Option<String>, example: &str) -> Option<T> {
    let v = v.as_ref()?;
    match v.parse::<T>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(key, format!("`{v}` is not an address"), format!("write it as \"{example}\""));
            None
        }
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// RFC 5737 and RFC 3849 ranges: fine for tests, placeholders anywhere else.
pub fn is_documentation(a: IpAddr) -> bool {
    let nets = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"];
    nets.iter().filter_map(|n| n.parse::<IpNet>().ok()).any(|n| n.contains(&a))
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// "host", "host:port", "[v6]:port" (the port optional when `port_optional`).
pub fn is_host_port(s: &str, port_optional: bool) -> bool {
    let host_ok = |h: &str| {
        let h = h.trim_matches(['[', ']']);
        is_hostname(h) || h.parse::<IpAddr>().is_ok()
    };
    if port_optional && host_ok(s) {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => host_ok(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "file://"].iter().any(|p| s.starts_with(p) && s.len() > p.len())
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Network {
    pub fn ipv4_net(&self) -> Option<Ipv4Net> {
        self.ipv4.as_ref()?.parse().ok()
    }
    pub fn ipv6_net(&self) -> Option<Ipv6Net> {
        self.ipv6.as_ref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests;
