//! `[access]`: who may log in (the admin user and SSH keys) and from where admin ports answer.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::checks::is_simple_name;
use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Access {
    #[serde(default = "default_admin")]
    pub admin_user: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Where more keys are published (e.g. "https://github.com/NAME.keys"): fetched when the
    /// image is built, pinned into it and listed in its manifest; the box never fetches them.
    #[serde(default)]
    pub ssh_key_urls: Vec<String>,
    /// The port sshd listens on (the playbook's `ansible_port`).
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// Prefixes allowed to reach admin-only ports (metrics).
    #[serde(default)]
    pub admin_prefixes: Vec<String>,
}

fn default_admin() -> String {
    "mirror".into()
}

fn default_ssh_port() -> u16 {
    22
}

/// Ports sshd must not take: the mirror's own services.
const TAKEN_PORTS: &[u16] = &[80, 443, 873, 9100];

/// One line of an OpenSSH `.pub` file (or of a GitHub `.keys` list): a known key type and a body.
pub fn is_public_key(key: &str) -> bool {
    // As OpenSSH reads an authorized_keys line: a known type, a base64 blob that decodes, and the
    // blob's own type field equal to the one written before it.
    !key.contains('\n') && ssh_key::PublicKey::from_openssh(key.trim()).is_ok()
}

pub(super) fn validate(a: &Access, test_site: bool, r: &mut Reporter) {
    if !is_simple_name(&a.admin_user) || a.admin_user == "root" {
        r.error(
            "access.admin_user",
            format!("`{}` is not a usable user name", a.admin_user),
            "use a lowercase name other than root, e.g. \"mirror\"",
        );
    }
    if a.ssh_keys.is_empty() && a.ssh_key_urls.is_empty() {
        r.error(
            "access.ssh_keys",
            "no SSH key: nobody could log in to the box",
            "add at least one public key (the content of ~/.ssh/id_ed25519.pub) or ssh_key_urls",
        );
    }
    for (i, url) in a.ssh_key_urls.iter().enumerate() {
        // Keys arrive over TLS; a lab site may fetch them from a local http server.
        let scheme_ok = url.starts_with("https://") || (test_site && url.starts_with("http://"));
        if !scheme_ok || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            r.error(
                &format!("access.ssh_key_urls[{i}]"),
                format!("`{url}` is not an https URL"),
                "write e.g. \"https://github.com/NAME.keys\" (keys come over TLS only)",
            );
        }
    }
    if a.ssh_port == 0 || TAKEN_PORTS.contains(&a.ssh_port) {
        r.error(
            "access.ssh_port",
            format!("port {} is not free for SSH", a.ssh_port),
            "keep 22 or pick a free port such as 7777",
        );
    }
    for (i, key) in a.ssh_keys.iter().enumerate() {
        if !is_public_key(key) {
            r.error(
                &format!("access.ssh_keys[{i}]"),
                "not an OpenSSH public key",
                "paste one line of a .pub file: \"ssh-ed25519 AAAA… comment\"",
            );
        }
    }
    if a.admin_prefixes.is_empty() && !test_site {
        r.warn(
            "access.admin_prefixes",
            "no admin prefix: the metrics port (9100) answers nobody, so the fleet's Prometheus cannot watch this box",
            "list the operators' and the Prometheus server's prefixes, e.g. [\"198.51.100.0/24\"]",
        );
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
