//! The packages installed in a tree, read from its own package database (dpkg's status file,
//! rpm's database): name, version and installed size. The manifest lists them; a root too big
//! for its slot names the largest. Reads only; never runs a package manager that changes the tree.

use std::path::Path;

use anyhow::{bail, Context, Result};
use schema::profile::Distro;

use crate::cmd::{self, cmd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Bytes the package's files take once installed.
    pub size: u64,
}

/// Every package of the tree, by name; empty when its database cannot be read.
pub fn packages(distro: Distro, root: &Path) -> Vec<Package> {
    let mut v = match distro {
        Distro::Debian12 => {
            let status = fs_err::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
            parse_dpkg_status(&status)
        }
        Distro::Almalinux9 => {
            let query = "%{NAME} %{VERSION}-%{RELEASE} %{SIZE}\n";
            let out = cmd::shell().and_then(|sh| Ok(cmd!(sh, "rpm --root {root} -qa --qf {query}").quiet().read()?));
            parse_rpm_query(&out.unwrap_or_default())
        }
    };
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Every package of a base archive (tar+zstd of a tree): its package database is taken out
/// into a scratch folder and read there.
pub fn from_archive(distro: Distro, archive: &Path) -> Result<Vec<Package>> {
    let scratch = tempfile::tempdir()?;
    let pattern = match distro {
        Distro::Debian12 => "*var/lib/dpkg/status",
        Distro::Almalinux9 => "*var/lib/rpm/*",
    };
    let (sh, into) = (cmd::shell()?, scratch.path());
    cmd::run(cmd!(sh, "tar --zstd -xf {archive} -C {into} --wildcards {pattern}"))
        .with_context(|| format!("reading the package database of {}", archive.display()))?;
    let found = packages(distro, scratch.path());
    if found.is_empty() {
        bail!("{} lists no installed package", archive.display());
    }
    Ok(found)
}

/// The `n` largest packages, largest first.
pub fn largest(packages: &[Package], n: usize) -> Vec<&Package> {
    let mut v: Vec<&Package> = packages.iter().collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.size));
    v.truncate(n);
    v
}

/// dpkg's status file: a paragraph per package; Installed-Size is in KiB.
fn parse_dpkg_status(status: &str) -> Vec<Package> {
    status
        .split("\n\n")
        .filter_map(|para| {
            let field = |k: &str| para.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
            let size = field("Installed-Size:").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 1024;
            Some(Package { name: field("Package:")?.into(), version: field("Version:")?.into(), size })
        })
        .collect()
}

/// `rpm -qa --qf '%{NAME} %{VERSION}-%{RELEASE} %{SIZE}\n'`: size in bytes.
fn parse_rpm_query(out: &str) -> Vec<Package> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (name, version) = (f.next()?, f.next()?);
            let size = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            Some(Package { name: name.into(), version: version.into(), size })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_gives_names_versions_and_sizes_in_bytes() {
        let status = "Package: rsync\nStatus: install ok installed\nInstalled-Size: 771\nVersion: 3.2.7-1\n\n\
                      Package: linux-image-6.1.0-57-amd64\nVersion: 6.1.158-1\nInstalled-Size: 409000\n\n\
                      Package: broken\nInstalled-Size: 3\n";
        let p = parse_dpkg_status(status);
        assert_eq!(p.len(), 2, "a paragraph without a version is left out: {p:?}");
        assert_eq!(p[0], Package { name: "rsync".into(), version: "3.2.7-1".into(), size: 771 * 1024 });
        assert_eq!(largest(&p, 1)[0].name, "linux-image-6.1.0-57-amd64");
    }

    #[test]
    fn rpm_query_gives_names_versions_and_sizes() {
        let p = parse_rpm_query("kernel-core 5.14.0-503.el9 98000000\nrsync 3.2.3-20.el9 812000\n\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], Package { name: "rsync".into(), version: "3.2.3-20.el9".into(), size: 812000 });
        assert_eq!(largest(&p, 5).iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["kernel-core", "rsync"]);
    }

    #[test]
    fn a_base_archive_s_packages_are_read_from_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
        fs_err::create_dir_all(tree.join("usr/bin")).unwrap();
        fs_err::write(tree.join("var/lib/dpkg/status"), "Package: rsync\nVersion: 3.2.7-1\nInstalled-Size: 10\n")
            .unwrap();
        fs_err::write(tree.join("usr/bin/rsync"), "not read").unwrap();
        let archive = dir.path().join("base.tar.zst");
        crate::tarball::pack(&tree, &archive).unwrap();
        let found = from_archive(Distro::Debian12, &archive).unwrap();
        assert_eq!(found, vec![Package { name: "rsync".into(), version: "3.2.7-1".into(), size: 10 * 1024 }]);
        let err = from_archive(Distro::Almalinux9, &archive).unwrap_err();
        assert!(format!("{err:#}").contains("reading the package database of"), "{err:#}");
    }
}
