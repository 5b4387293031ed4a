//! The fleet's Ansible playbook as data (pure: text in, profiles out): its `inventory.yaml`
//! (hosts under a group's `hosts:`), its `host_vars/HOST.yaml` (hosted projects, TLS, sponsor,
//! geolocation, DSCP opt-out, SSH port), and the site profile each host becomes. What the
//! playbook does not hold (addresses, gateways, keys, hardware, the update feed) is written as
//! a `TODO:` placeholder, never guessed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// One `host_vars/HOST.yaml`; keys we do not use are collected so the import can name them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct HostVars {
    #[serde(default)]
    pub hostedprojects: Vec<String>,
    #[serde(default)]
    pub tls_setup: Option<bool>,
    #[serde(default)]
    pub site_sponsor: Option<String>,
    #[serde(default)]
    pub site_sponsor_url: Option<String>,
    #[serde(default)]
    pub geolocation: Option<Geolocation>,
    #[serde(default, rename = "disableDSCP")]
    pub disable_dscp: Option<bool>,
    #[serde(default)]
    pub ansible_port: Option<u16>,
    /// Older host_vars carry the location at the top level (`country: us`, `region: nm`,
    /// `city: albuquerque`), often empty.
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_norway::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Geolocation {
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub state_province: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
}

/// The playbook's upstream, push broker and daily run, the same for every host.
pub const UPSTREAM: &str = "mirror.fcix.net";
pub const BROKER: &str = "mirror.fcix.net:1883";
pub const TOPIC_PREFIX: &str = "rsync/mirror.fcix.net";
pub const DAILY_RUN: &str = "01:59";
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Every host named under a `hosts:` mapping anywhere in the inventory (groups and children).
pub fn inventory_hosts(yaml: &str) -> Result<BTreeSet<String>, String> {
    let doc: serde_norway::Value = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
    let mut out = BTreeSet::new();
    collect_hosts(&doc, &mut out);
    Ok(out)
}

fn collect_hosts(v: &serde_norway::Value, out: &mut BTreeSet<String>) {
    let Some(map) = v.as_mapping() else { return };
    for (k, child) in map {
        if k.as_str() == Some("hosts") {
            if let Some(hosts) = child.as_mapping() {
                out.extend(hosts.keys().filter_map(|h| h.as_str().map(str::to_string)));
            }
        } else {
            collect_hosts(child, out);
        }
    }
}

pub fn host_vars(yaml: &str) -> Result<HostVars, String> {
    if yaml.trim().trim_start_matches("---").trim().is_empty() {
        return Ok(HostVars::default());
    }
    serde_norway::from_str(yaml).map_err(|e| e.to_string())
}

/// The site name a host becomes: its first label (`codingflyboy.mm.fcix.net` → `codingflyboy`),
/// lowercased, with anything but letters, digits and '-' made '-'.
pub fn site_name(host: &str) -> String {
    let first = host.split('.').next().unwrap_or(host);
    first.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The site name of every host, unique: its first label where no other host shares it, else
/// as many leading labels as make it unique (`mirror.fra.example.net` and
/// `mirror.ams.example.net` → `mirror-fra`, `mirror-ams`), the whole name last.
pub fn site_names<'a>(hosts: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let hosts: Vec<&str> = hosts.into_iter().collect();
    let name = |host: &str, labels: usize| {
        let first: Vec<&str> = host.split('.').take(labels).collect();
        site_name(&first.join("-"))
    };
    let mut out = BTreeMap::new();
    for host in &hosts {
        let most = host.split('.').count();
        let unique = (1..=most).map(|n| name(host, n)).find(|candidate| {
            hosts.iter().filter(|other| *other != host).all(|other| {
                let others = other.split('.').count();
                (1..=others.max(most)).all(|m| name(other, m) != *candidate)
            })
        });
        out.insert(host.to_string(), unique.unwrap_or_else(|| site_name(&host.replace('.', "-"))));
    }
    out
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}

fn todo(what: &str) -> String {
    quoted(&format!("{} {what}", schema::profile::PLACEHOLDER))
}

/// The profile text for one host; `projects` are the catalog names its `hostedprojects` resolve to.
pub fn profile_text(host: &str, name: &str, vars: &HostVars, projects: &[String], source: &str) -> String {
    let sponsor = vars.site_sponsor.as_deref().map_or_else(|| todo("the sponsor's name"), quoted);
    let sponsor_url = vars.site_sponsor_url.as_deref().map_or_else(|| todo("the sponsor's web address"), quoted);
    let location = location_text(&vars.location());
    let list: Vec<String> = projects.iter().map(|p| quoted(p)).collect();
    let mut t = format!(
        "# Imported from the fleet playbook ({source}) by `cargo xtask profiles import`.\n\
         # Values starting with \"TODO:\" were not in the playbook: `cargo xtask profiles check`\n\
         # lists each one, and the image will not build until it is written.\n\n\
         [site]\nname = {name}\nhostname = {host}\nsponsor_name = {sponsor}\nsponsor_url = {sponsor_url}\n\
         location = {location}\nhardware = {hardware}\n\n\
         [network]\nipv4 = {ipv4}\nipv4_gateway = {gw4}\nipv6 = {ipv6}\nipv6_gateway = {gw6}\ndns = [{dns}]\n\n\
         [access]\nssh_keys = [{key}]\nadmin_prefixes = [{admin}]\n",
        name = quoted(name),
        host = quoted(host),
        hardware = todo("t620, t740 or r220"),
        ipv4 = todo("the sponsor's IPv4 address/prefix, e.g. 192.0.2.10/24"),
        gw4 = todo("the IPv4 gateway"),
        ipv6 = todo("the sponsor's IPv6 address/prefix"),
        gw6 = todo("the IPv6 gateway"),
        key = todo("an admin's public key, or ssh_key_urls = [\"https://github.com/NAME.keys\"]"),
        dns = todo("the resolvers the sponsor gave"),
        admin = todo("the operators' and the fleet Prometheus' prefixes"),
    );
    if let Some(port) = vars.ansible_port.filter(|p| *p != 22) {
        t.push_str(&format!("ssh_port = {port}\n"));
    }
    t.push_str(&format!(
        "\n[mirror]\nupstream = {}\nsync_at = {}\nprojects = [{}]\npush = {{ broker = {}, topic_prefix = {} }}\n",
        quoted(UPSTREAM),
        quoted(DAILY_RUN),
        list.join(", "),
        quoted(BROKER),
        quoted(TOPIC_PREFIX)
    ));
    if vars.disable_dscp == Some(true) {
        t.push_str("\n[server]\n# The playbook's disableDSCP: this sponsor does not want egress marked CS1.\nscavenger = false\n");
    }
    if vars.tls_setup == Some(true) {
        t.push_str(&format!("\n[tls]\nacme_directory = {}\n", quoted(LETS_ENCRYPT)));
    }
    t.push_str(&format!(
        "\n[update]\nurl = {}\nsigning_key = {}\n",
        todo("where this site's updates are published, e.g. https://mirror.example.net/micromirror/NAME/"),
        todo("the fleet's update signing key, e.g. keys/fleet-updates.asc"),
    ));
    t
}

impl HostVars {
    /// Keys the host_vars file sets that no profile key takes: the continent (a profile has the
    /// country), and the older top-level location keys when `geolocation:` is there too (it
    /// wins). Empty values are not counted.
    pub fn ignored_keys(&self) -> Vec<String> {
        let set = |v: &Option<String>| v.as_ref().is_some_and(|s| !s.trim().is_empty());
        let mut out: Vec<String> = Vec::new();
        let top = [
            ("continent", &self.continent),
            ("country", &self.country),
            ("region", &self.region),
            ("city", &self.city),
        ];
        for (key, value) in top {
            if set(value) && (key == "continent" || self.geolocation.is_some()) {
                out.push(key.to_string());
            }
        }
        if self.geolocation.as_ref().is_some_and(|g| set(&g.continent)) {
            out.push("geolocation.continent".into());
        }
        out.extend(self.other.keys().cloned());
        out
    }

    /// The location in either of the playbook's forms: `geolocation:` or the older top-level
    /// keys (lowercase codes such as `us`, `nm`, kept as written, upper-cased when two letters).
    pub fn location(&self) -> Geolocation {
        if let Some(g) = &self.geolocation {
            return g.clone();
        }
        let code = |v: &Option<String>| {
            v.as_ref().filter(|s| !s.is_empty()).map(|s| if s.len() == 2 { s.to_uppercase() } else { s.clone() })
        };
        Geolocation {
            continent: self.continent.clone(),
            // The playbook writes the United Kingdom as `uk`; ISO 3166 says GB.
            country: code(&self.country).map(|c| if c == "UK" { "GB".to_string() } else { c }),
            state_province: code(&self.region),
            city: self.city.as_ref().filter(|s| !s.is_empty()).map(|c| {
                let mut chars = c.chars();
                chars.next().map_or_else(String::new, |f| f.to_uppercase().chain(chars).collect())
            }),
        }
    }
}

fn location_text(geo: &Geolocation) -> String {
    let geo = geo.clone();
    let mut parts = vec![format!("city = {}", geo.city.as_deref().map_or_else(|| todo("the city"), quoted))];
    if let Some(region) = &geo.state_province {
        parts.push(format!("region = {}", quoted(region)));
    }
    parts.push(format!("country = {}", geo.country.as_deref().map_or_else(|| todo("the country"), quoted)));
    format!("{{ {} }}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_every_group_and_names_from_the_first_label() {
        let inv = "---\nMIRROR:\n  hosts:\n    a.mm.example.net:\n    b.mm.example.net:\n  children:\n    BIG:\n      hosts:\n        c.mm.example.net:\n";
        let hosts = inventory_hosts(inv).unwrap();
        assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["a.mm.example.net", "b.mm.example.net", "c.mm.example.net"]);
        assert_eq!(site_name("Gsl_Syd.mm.fcix.net"), "gsl-syd");
    }

    #[test]
    fn hosts_sharing_a_first_label_get_names_of_their_own() {
        let names = site_names(["mirror.fra.example.net", "mirror.ams.example.net", "solo.mm.example.net"]);
        assert_eq!(names["mirror.fra.example.net"], "mirror-fra");
        assert_eq!(names["mirror.ams.example.net"], "mirror-ams");
        assert_eq!(names["solo.mm.example.net"], "solo");
        let mut distinct: Vec<&String> = names.values().collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn top_level_location_keys_beside_geolocation_are_reported_as_ignored() {
        let both = host_vars(
            "---\nhostedprojects: [centos]\ncountry: us\nregion: \ncity: fremont\ngeolocation:\n  continent: North America\n  country: US\n  city: Fremont\nfoo: 1\n",
        )
        .unwrap();
        assert_eq!(both.ignored_keys(), vec!["country", "city", "geolocation.continent", "foo"]);
        let geo_only = host_vars("---\ngeolocation:\n  country: US\n  city: Fremont\n").unwrap();
        assert!(geo_only.ignored_keys().is_empty());
    }

    #[test]
    fn host_vars_map_to_keys_and_unknown_ones_are_kept_for_the_report() {
        let v = host_vars(
            "---\nhostedprojects:\n  - epel-amd64\ntls_setup: True\nsite_sponsor: \"Ex\"\nsite_sponsor_url: \"https://ex.net/\"\n\
             geolocation:\n  continent: North America\n  country: US\n  state_province: Oregon\n  city: Portland\n\
             disableDSCP: True\nansible_port: 7777\nsomething_else: 3\n",
        )
        .unwrap();
        assert_eq!(v.hostedprojects, ["epel-amd64"]);
        assert_eq!((v.tls_setup, v.disable_dscp, v.ansible_port), (Some(true), Some(true), Some(7777)));
        assert_eq!(v.geolocation.as_ref().and_then(|g| g.city.as_deref()), Some("Portland"));
        assert!(v.other.contains_key("something_else"));
        let text =
            profile_text("ex.mm.example.net", "ex", &v, &["epel-x86_64".into()], "host_vars/ex.mm.example.net.yaml");
        for want in [
            "name = \"ex\"",
            "location = { city = \"Portland\", region = \"Oregon\", country = \"US\" }",
            "ssh_port = 7777",
            "scavenger = false",
            "acme_directory",
            "projects = [\"epel-x86_64\"]",
            "topic_prefix = \"rsync/mirror.fcix.net\"",
            "sync_at = \"01:59\"",
            "ipv4 = \"TODO:",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
        assert!(host_vars("---\n").unwrap() == HostVars::default());
        let old =
            host_vars("---\nhostedprojects: [centos]\ncontinent: na\ncountry: us\nregion: nm\ncity: albuquerque\n")
                .unwrap();
        assert!(old.other.is_empty(), "{:?}", old.other);
        assert_eq!(old.ignored_keys(), vec!["continent"], "a profile has no continent");
        let text = profile_text("abq.mm.example.net", "abq", &old, &["centos".into()], "x");
        assert!(text.contains("location = { city = \"Albuquerque\", region = \"NM\", country = \"US\" }"), "{text}");
        let empty = host_vars("---\nhostedprojects: [centos]\ncountry: uk\nregion:\ncity:\n").unwrap();
        let text = profile_text("x.mm.example.net", "x", &empty, &["centos".into()], "x");
        assert!(
            text.contains("city = \"TODO: the city\"") && text.contains("country = \"GB\""),
            "the ISO code: {text}"
        );
    }
}
