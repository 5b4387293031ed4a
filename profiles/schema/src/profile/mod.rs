//! The site profile (`profiles/NAME.toml`): the one schema that describes a micro mirror.
//! xtask reads it to bake an image; the appliance reads the same file from /etc/micromirror.
//! Loading validates everything and reports every problem at once; nothing here does I/O
//! beyond reading the file itself and the side files it names. One module per section.

mod access;
mod base;
mod checks;
mod mirror;
mod network;
mod server;
mod site;
mod telemetry;
mod tls;
mod update;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use access::{is_public_key, Access};
pub use base::{Base, Distro};
pub use checks::is_host_port;
pub use mirror::{DiskFit, Mirror, Push};
pub use network::{is_documentation, Bond, Network, NicMatch};
pub use server::{Bucket, RateLimit, Server};
pub use site::{Location, Site};
pub use telemetry::Telemetry;
pub use tls::Tls;
pub use update::{Ring, Update, Window};

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
    /// Signed image updates the box pulls itself; absent: the box runs its image until reflashed.
    #[serde(default)]
    pub update: Option<Update>,
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
/// after the site) for a build: a placeholder is an error.
pub fn load(path: &Path, catalog: &Catalog) -> Result<LoadedProfile, ProfileError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    load_named(path, catalog, Some(&stem), Placeholders::Refused)
}

/// Reads and validates a profile for `cargo xtask profiles check`: placeholders (values the
/// importer could not know) are warnings naming the key, and the rest is checked as for a build.
/// What this returns must not be built.
pub fn check(path: &Path, catalog: &Catalog) -> Result<LoadedProfile, ProfileError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    load_named(path, catalog, Some(&stem), Placeholders::Warned)
}

/// Reads and validates the profile installed on an appliance (/etc/micromirror/site.toml).
pub fn load_installed(path: &Path, catalog: &Catalog) -> Result<LoadedProfile, ProfileError> {
    load_named(path, catalog, None, Placeholders::Refused)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Placeholders {
    Refused,
    Warned,
}

fn load_named(
    path: &Path,
    catalog: &Catalog,
    file_stem: Option<&str>,
    placeholders: Placeholders,
) -> Result<LoadedProfile, ProfileError> {
    let text = read_file(path).map_err(|p| ProfileError::Invalid(Problems(vec![p])))?;
    let mut r = Reporter::new(path, &text);
    let Some(mut profile) = parse_collecting_unknown::<Profile>(&text, &mut r) else {
        return Err(ProfileError::Invalid(Problems(r.problems)));
    };
    validate(&profile, file_stem, catalog, &mut r);
    validate_side_files(&profile, path.parent().unwrap_or(Path::new(".")), &mut r);
    report_placeholders(&text, &profile.site.name, placeholders, &mut r);
    if r.has_errors() {
        return Err(ProfileError::Invalid(Problems(r.problems)));
    }
    if let Some(class) = profile.site.hardware_class() {
        profile.network.apply_class_default(class);
    }
    let projects = profile.mirror.projects.iter().filter_map(|n| catalog.get(n).cloned()).collect();
    let warnings = r.problems;
    Ok(LoadedProfile { path: path.to_path_buf(), text, profile, projects, warnings })
}

/// Marks a value the profile's author (or `profiles import`) could not know yet.
pub const PLACEHOLDER: &str = "TODO:";

/// Every string value that starts with `TODO:` is a placeholder: reported once under its own
/// key (an error for a build, a warning for a check), in place of whatever the key's own rule
/// said about the text.
fn report_placeholders(text: &str, site: &str, mode: Placeholders, r: &mut Reporter) {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else { return };
    let mut found = Vec::new();
    collect_placeholders(doc.as_table(), "", &mut found);
    for (key, value) in found {
        r.problems.retain(|p| {
            !(p.key == key || p.key.starts_with(&format!("{key}.")) || key.starts_with(&format!("{}[", p.key)))
        });
        let message = format!("site {site}: {key} is a placeholder ({})", value.trim_start_matches(PLACEHOLDER).trim());
        match mode {
            Placeholders::Refused => r.error(&key, message, "write the real value before building this site's image"),
            Placeholders::Warned => r.warn(&key, message, "write the real value before building this site's image"),
        }
    }
}

fn collect_placeholders(table: &dyn toml_edit::TableLike, prefix: &str, out: &mut Vec<(String, String)>) {
    for (k, item) in table.iter() {
        let key = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        if let Some(t) = item.as_table_like() {
            collect_placeholders(t, &key, out);
        } else if let Some(v) = item.as_value() {
            collect_value(v, &key, out);
        }
    }
}

fn collect_value(v: &toml_edit::Value, key: &str, out: &mut Vec<(String, String)>) {
    match v {
        toml_edit::Value::String(s) if s.value().starts_with(PLACEHOLDER) => {
            out.push((key.to_string(), s.value().clone()))
        }
        toml_edit::Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                collect_value(item, &format!("{key}[{i}]"), out);
            }
        }
        toml_edit::Value::InlineTable(t) => collect_placeholders(t, key, out),
        _ => {}
    }
}

/// Every rule a profile must meet; each broken rule becomes one problem naming its key.
pub fn validate(p: &Profile, file_stem: Option<&str>, catalog: &Catalog, r: &mut Reporter) {
    site::validate(&p.site, file_stem, r);
    base::validate(&p.base, r);
    network::validate(&p.network, p.site.test, r);
    access::validate(&p.access, p.site.test, r);
    // A hardware key that names no class yet (a placeholder) leaves the disk unknown; without
    // the key the default disk is the documented one and is held to.
    let disk_known = p.site.disk_gb.is_some() || p.site.hardware.is_none() || p.site.hardware_class().is_some();
    mirror::validate(&p.mirror, p.site.disk_gb(), disk_known, catalog, r);
    server::validate(&p.server, r);
    if let Some(tls) = &p.tls {
        tls::validate(tls, r);
    }
    if let Some(t) = &p.telemetry {
        telemetry::validate(t, r);
    }
    match &p.update {
        Some(u) => update::validate(u, p.site.test, p.mirror.push.is_some(), r),
        None => r.warn(
            "update",
            "no [update] section: this box will never update itself (a new kernel, program or profile needs a reflash on site)",
            "add [update] with url and signing_key (see the README's profile reference)",
        ),
    }
}

/// Files a profile names next to itself (CA certificates): they must exist and hold PEM
/// certificates, since the image copies them and the box cannot fetch them later.
fn validate_side_files(p: &Profile, profile_dir: &Path, r: &mut Reporter) {
    let named = [
        ("tls.acme_ca_file", p.tls.as_ref().and_then(|t| t.acme_ca_file.as_ref())),
        ("telemetry.ca_file", p.telemetry.as_ref().map(|t| &t.ca_file)),
    ];
    if let Some(u) = &p.update {
        validate_signing_key(&u.signing_key, profile_dir, r);
    }
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

/// The update signing key: a file inside the profiles folder holding an OpenPGP public key
/// (armored, or binary: a public-key packet first), never a secret key.
fn validate_signing_key(file: &str, profile_dir: &Path, r: &mut Reporter) {
    const KEY: &str = "update.signing_key";
    if file.starts_with('/') || file.split('/').any(|c| c == "..") {
        r.error(
            KEY,
            format!("`{file}` must be a path inside the profiles folder"),
            "write e.g. \"keys/fleet-updates.asc\"",
        );
        return;
    }
    let path = profile_dir.join(file);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            r.error(
                KEY,
                format!("cannot read {}: {e}", path.display()),
                "export the public key there: gpg --export --armor KEYID > FILE",
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&data);
    if text.contains("PRIVATE KEY BLOCK") {
        r.error(
            KEY,
            format!("{file} holds a secret key"),
            "put only the public key in the profiles folder (gpg --export --armor KEYID)",
        );
    } else if !(text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        || data.first().is_some_and(|b| [0x99, 0xc6].contains(b)))
    {
        r.error(
            KEY,
            format!("{file} holds no OpenPGP public key"),
            "export one there: gpg --export --armor KEYID > FILE",
        );
    }
}

impl LoadedProfile {
    /// How full the disk will be with the hosted projects, and for how long they fit.
    pub fn disk_fit(&self) -> mirror::DiskFit {
        mirror::DiskFit::new(self.projects.iter().map(|p| p.size_gb).sum(), self.profile.site.disk_gb())
    }
}

impl Profile {
    /// Files the profile names relative to itself, to install next to it on the box.
    pub fn side_files(&self) -> Vec<&str> {
        let tls = self.tls.as_ref().and_then(|t| t.acme_ca_file.as_deref());
        let telemetry = self.telemetry.as_ref().map(|t| t.ca_file.as_str());
        let update = self.update.as_ref().map(|u| u.signing_key.as_str());
        tls.into_iter().chain(telemetry).chain(update).collect()
    }
}

#[cfg(test)]
mod tests;
