//! Stage 1: read the site profile with the catalog and validate everything before any slow step.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use schema::catalog::{Catalog, CatalogError};
use schema::profile::{self, LoadedProfile, ProfileError};

/// The catalog's folder inside a profiles folder.
pub fn catalog_dir(profiles: &Path) -> PathBuf {
    profiles.join("projects")
}

/// `profiles/SITE.toml`, loaded with the catalog beside it; warnings are printed.
pub fn load(profiles: &Path, site: &str) -> Result<LoadedProfile> {
    let path = profiles.join(format!("{site}.toml"));
    if !path.exists() {
        let known = sites_in(profiles);
        bail!("no profile {} for site `{site}`; known sites: {}\n  fix: create it (copy profiles/demo.toml) or pick a known site", path.display(), known.join(", "));
    }
    let catalog = load_catalog(profiles)?;
    match profile::load(&path, &catalog) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded)
        }
        Err(ProfileError::Invalid(problems)) => {
            bail!("profile {} is not usable:\n{problems}", path.display())
        }
    }
}

pub fn load_catalog(profiles: &Path) -> Result<Catalog> {
    match Catalog::load(&catalog_dir(profiles)) {
        Ok(c) => Ok(c),
        Err(CatalogError::Invalid(problems)) => {
            bail!("the project catalog is not usable:\n{problems}")
        }
        Err(e) => Err(e.into()),
    }
}

/// Site names: every DIR/*.toml.
pub fn sites_in(dir: &Path) -> Vec<String> {
    let mut sites: Vec<String> = fs_err::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    sites.sort();
    sites
}

/// Project → the host names of the boxes it is fetched from before the upstream, in order.
pub type Peers = std::collections::BTreeMap<String, Vec<String>>;

/// The boxes `site` fetches each project from before the upstream (`schema::topology`), from
/// every profile of its folder that carries the project from the same upstream (test sites
/// with test sites only), by host name; the fan-out from `fleet.toml` beside them.
pub fn sync_peers(site: &LoadedProfile) -> Result<Peers> {
    let dir = site.path.parent().unwrap_or(Path::new("."));
    let fanout = schema::topology::fanout_in(dir).map_err(|e| anyhow::anyhow!(e))?;
    let catalog = load_catalog(dir)?;
    let mut hosts = std::collections::BTreeMap::new();
    let mut carriers: std::collections::BTreeMap<String, Vec<schema::topology::Carrier>> = Default::default();
    for name in sites_in(dir) {
        let Ok(other) = schema::profile::check(&dir.join(format!("{name}.toml")), &catalog) else {
            continue; // a profile with placeholders is not a box yet
        };
        let (o, me) = (&other.profile, &site.profile);
        if o.site.test != me.site.test || o.mirror.upstream != me.mirror.upstream {
            continue;
        }
        hosts.insert(o.site.name.clone(), o.site.hostname.clone());
        for p in &other.projects {
            carriers.entry(p.name.clone()).or_default().push(schema::topology::Carrier::of(&o.site));
        }
    }
    let mine: std::collections::BTreeSet<&str> = site.projects.iter().map(|p| p.name.as_str()).collect();
    carriers.retain(|p, _| mine.contains(p.as_str()));
    Ok(schema::topology::peers_of(&site.profile.site.name, &carriers, fanout)
        .into_iter()
        .map(|(p, sites)| (p, sites.iter().filter_map(|s| hosts.get(s).cloned()).collect()))
        .collect())
}
