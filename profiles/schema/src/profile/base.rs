//! `[base]`: the distribution the image is built from and where its packages come from.

use serde::{Deserialize, Serialize};

use super::checks::is_url;
use crate::diagnostics::Reporter;

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

    /// The compression the base's kernel reads in an EROFS root, if any. Debian 12's 6.1 has
    /// EROFS with lz4 (CONFIG_EROFS_FS_ZIP=y, no LZMA). RHEL 9's, which AlmaLinux 9 rebuilds,
    /// builds EROFS for composefs without compression (CONFIG_EROFS_FS=m, CONFIG_EROFS_FS_ZIP
    /// unset: SOURCES/kernel-x86_64-rhel.config of Rocky's 9 LTS kernel, ciq-rocky-lts/kernel,
    /// and redhat/configs/rhel/generic of a RHEL 9 tree, OpenVZ/vzkernel; an older EL9 config,
    /// openela-main/kernel, has no EROFS at all), so its root is stored uncompressed.
    pub fn erofs_compression(self) -> Option<&'static str> {
        match self {
            Distro::Almalinux9 => None,
            Distro::Debian12 => Some("lz4"),
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
    /// Packages for the operator's own tools, in the distro's names, installed with the base:
    /// the root is read-only, so nothing can be installed on the box afterwards.
    #[serde(default)]
    pub packages: Vec<String>,
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

pub(super) fn validate(b: &Base, r: &mut Reporter) {
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
    for (i, name) in b.packages.iter().enumerate() {
        if !is_package_name(name) {
            r.error(
                &format!("base.packages[{i}]"),
                format!("`{name}` is not a package name"),
                "write the package's name as the distro's package manager knows it (letters, digits, + . _ -), without a version",
            );
        }
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

/// A package name as dpkg and rpm accept it; a version or an option is not one.
fn is_package_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
        && s.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_names_not_versions_or_options() {
        for good in ["htop", "tcpdump", "python3.11", "g++", "iperf3", "bind-utils", "lib_x"] {
            assert!(is_package_name(good), "{good}");
        }
        for bad in ["", "-y", "htop=3.2", "htop>=3", "a b", "../x", "--nogpgcheck"] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }
}
