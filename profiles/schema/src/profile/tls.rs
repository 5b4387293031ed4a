//! `[tls]`: HTTPS on 443, with a certificate from ACME or from files someone else renews.

use serde::{Deserialize, Serialize};

use super::checks::is_hostname;
use crate::diagnostics::Reporter;

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

pub(super) fn validate(t: &Tls, r: &mut Reporter) {
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
