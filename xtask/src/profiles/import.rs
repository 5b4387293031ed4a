//! `cargo xtask profiles import --ansible DIR [--out DIR] [--force]`: one profile per host of the
//! fleet's playbook. Reads inventory.yaml and host_vars/*.yaml, resolves the playbook's project
//! names through the catalog (names and aliases), and writes each profile whole (a temporary
//! file renamed into place). Never overwrites a profile without --force; reports every host
//! found on one side only, every project the catalog lacks and every key it ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::playbook::{self, HostVars};
use crate::paths;
use build::load;

#[derive(Args)]
pub struct ImportArgs {
    /// The playbook's folder (holding inventory.yaml and host_vars/)
    #[arg(long, value_name = "DIR")]
    pub ansible: PathBuf,
    /// Where the profiles go (default: profiles/)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace profiles that already exist
    #[arg(long)]
    pub force: bool,
}

/// What an import did, for the operator (and the tests).
#[derive(Debug, Default)]
pub struct Report {
    pub notes: Vec<String>,
    pub written: Vec<PathBuf>,
    pub kept: usize,
    pub broken: usize,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(paths::profiles);
    let report = import(&args.ansible, &out, args.force)?;
    for n in &report.notes {
        println!("{n}");
    }
    println!(
        "{} profile(s) written to {}, {} kept, {} unreadable; next: cargo xtask profiles check{}",
        report.written.len(),
        out.display(),
        report.kept,
        report.broken,
        if out == paths::profiles() { String::new() } else { format!(" --dir {}", out.display()) }
    );
    if report.broken > 0 {
        bail!("{} host_vars file(s) could not be read (see above)", report.broken);
    }
    Ok(())
}

pub fn import(ansible: &Path, out: &Path, force: bool) -> Result<Report> {
    let inventory = inventory(ansible)?;
    let vars = host_vars(ansible)?;
    let catalog = load::load_catalog(&paths::profiles())?;
    fs_err::create_dir_all(out)?;
    let mut report = Report::default();
    for host in inventory.iter().filter(|h| !vars.contains_key(*h)) {
        report.notes.push(format!("{host}: in inventory.yaml but has no host_vars file: not imported"));
    }
    let names = playbook::site_names(vars.keys().map(String::as_str));
    for (host, name) in &names {
        if name != &playbook::site_name(host) {
            report.notes.push(format!(
                "{host}: another host shares its first label `{}`: imported as site `{name}`",
                playbook::site_name(host)
            ));
        }
    }
    for (host, parsed) in &vars {
        let name = &names[host];
        let source = format!("host_vars/{host}.yaml");
        let v = match parsed {
            Ok(v) => v,
            Err(e) => {
                report.notes.push(format!("{source}: not readable YAML ({e}): not imported"));
                report.broken += 1;
                continue;
            }
        };
        if !inventory.contains(host) {
            report.notes.push(format!("{host}: has {source} but is not in inventory.yaml: imported anyway"));
        }
        for key in v.ignored_keys() {
            let why = match key.as_str() {
                "country" | "region" | "city" => "geolocation: is there too and wins",
                _ => "it has no place in a profile",
            };
            report.notes.push(format!("{source}: key `{key}` ignored: {why}"));
        }
        let projects = resolve_projects(host, v, &catalog, &mut report.notes);
        let path = out.join(format!("{name}.toml"));
        if path.exists() && !force {
            report.notes.push(format!("{}: exists, kept (use --force to replace it)", path.display()));
            report.kept += 1;
            continue;
        }
        write_whole(&path, &playbook::profile_text(host, name, v, &projects, &source))?;
        report.written.push(path);
    }
    Ok(report)
}

fn inventory(dir: &Path) -> Result<std::collections::BTreeSet<String>> {
    let path =
        ["inventory.yaml", "inventory.yml"].iter().map(|n| dir.join(n)).find(|p| p.exists()).with_context(|| {
            format!("{} holds no inventory.yaml\n  fix: point --ansible at the playbook's folder", dir.display())
        })?;
    let text = fs_err::read_to_string(&path)?;
    playbook::inventory_hosts(&text).map_err(|e| anyhow::anyhow!("{}: not readable YAML: {e}", path.display()))
}

/// Every host_vars file by host name, parsed (or why not).
fn host_vars(dir: &Path) -> Result<BTreeMap<String, Result<HostVars, String>>> {
    let folder = dir.join("host_vars");
    let mut out = BTreeMap::new();
    for entry in fs_err::read_dir(&folder).with_context(|| {
        format!(
            "{} holds no host_vars folder
  fix: point --ansible at the playbook's folder",
            dir.display()
        )
    })? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(host) = name.strip_suffix(".yaml").or_else(|| name.strip_suffix(".yml")) else { continue };
        let text = fs_err::read_to_string(&path)?;
        out.insert(host.to_string(), playbook::host_vars(&text));
    }
    Ok(out)
}

/// The catalog names of a host's projects (the playbook's names resolve as names or aliases).
fn resolve_projects(
    host: &str,
    v: &HostVars,
    catalog: &schema::catalog::Catalog,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in &v.hostedprojects {
        let resolved = match catalog.get(name) {
            Some(p) => p.name.clone(),
            None => {
                notes.push(format!(
                    "{host}: project `{name}` is not in the catalog: written as is, profiles check will refuse it"
                ));
                name.clone()
            }
        };
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    out
}

/// A profile appears whole or not at all.
fn write_whole(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    fs_err::write(&tmp, text)?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::diagnostics::Severity;

    #[test]
    fn the_fixture_playbook_imports_to_profiles_that_check_with_only_placeholder_warnings() {
        let playbook = paths::workspace().join("tests/fixtures/playbook");
        let out = tempfile::tempdir().unwrap();
        let report = import(&playbook, out.path(), false).unwrap();
        assert_eq!(report.written.len(), 4, "{:?}", report.notes);
        let said = report.notes.join("\n");
        assert!(
            said.contains(
                "orphan.mm.example.net: has host_vars/orphan.mm.example.net.yaml but is not in inventory.yaml"
            ),
            "{said}"
        );
        assert!(said.contains("novars.mm.example.net: in inventory.yaml but has no host_vars file"), "{said}");
        assert!(said.contains("key `collectd_enabled` ignored: it has no place in a profile"), "{said}");
        for key in ["country", "city"] {
            let note = format!("host_vars/west.mm.example.net.yaml: key `{key}` ignored: geolocation: is there too");
            assert!(said.contains(&note), "{note} in {said}");
        }

        let catalog = load::load_catalog(&paths::profiles()).unwrap();
        for path in &report.written {
            let loaded = schema::profile::check(path, &catalog).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let other: Vec<String> = loaded
                .warnings
                .iter()
                .filter(|w| w.severity == Severity::Warning && !w.message.contains("is a placeholder"))
                .map(|w| w.to_string())
                .collect();
            assert!(other.is_empty(), "{}: warnings besides placeholders: {other:?}", path.display());
            assert!(
                schema::profile::load(path, &catalog).is_err(),
                "{}: a placeholder must stop a build",
                path.display()
            );
        }
        let west = schema::profile::check(&out.path().join("west.toml"), &catalog).unwrap();
        let p = &west.profile;
        assert_eq!(
            west.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["ubuntu-releases", "fedora-x86_64", "epel-x86_64", "kde"]
        );
        assert_eq!((p.access.ssh_port, p.server.scavenger, p.tls.is_some()), (7777, false, true));
        assert_eq!(p.site.location.to_string(), "Portland, Oregon, US");
        assert_eq!(p.mirror.push.as_ref().map(|p| p.topic_prefix.as_str()), Some("rsync/mirror.fcix.net"));
        let warned: Vec<&str> = west.warnings.iter().map(|w| w.key.as_str()).collect();
        for key in ["site.hardware", "network.ipv4", "network.ipv6_gateway", "access.ssh_keys[0]", "update.url"] {
            assert!(warned.contains(&key), "{key}: {warned:?}");
        }

        // A second import keeps what is there unless told otherwise.
        fs_err::write(out.path().join("west.toml"), "edited by hand\n").unwrap();
        let again = import(&playbook, out.path(), false).unwrap();
        assert!(again.written.is_empty() && again.kept == 4, "{:?}", again.notes);
        assert_eq!(fs_err::read_to_string(out.path().join("west.toml")).unwrap(), "edited by hand\n");
        let forced = import(&playbook, out.path(), true).unwrap();
        assert_eq!(forced.written.len(), 4);
    }

    #[test]
    fn two_hosts_with_one_first_label_become_two_sites_and_the_report_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let vars = "---\nhostedprojects:\n  - ubuntu-releases\ntls_setup: False\n";
        fs_err::create_dir_all(dir.path().join("host_vars")).unwrap();
        let hosts = ["mirror.fra.example.net", "mirror.ams.example.net"];
        for host in hosts {
            fs_err::write(dir.path().join(format!("host_vars/{host}.yaml")), vars).unwrap();
        }
        let inventory = format!("---\nMIRROR:\n  hosts:\n    {}:\n    {}:\n", hosts[0], hosts[1]);
        fs_err::write(dir.path().join("inventory.yaml"), inventory).unwrap();
        let out = dir.path().join("profiles");
        let report = import(dir.path(), &out, false).unwrap();
        let mut written: Vec<String> =
            report.written.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        written.sort();
        assert_eq!(written, ["mirror-ams.toml", "mirror-fra.toml"], "{:?}", report.notes);
        let said = report.notes.join("\n");
        assert!(said.contains("mirror.fra.example.net: another host shares its first label `mirror`"), "{said}");
        let text = fs_err::read_to_string(out.join("mirror-ams.toml")).unwrap();
        assert!(text.contains("name = \"mirror-ams\""), "{text}");
    }
}
