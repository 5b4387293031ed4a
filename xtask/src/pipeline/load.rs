//! Stage 1: read the site profile with the catalog and validate everything before any slow step.

use anyhow::{bail, Result};
use schema::catalog::{Catalog, CatalogError};
use schema::profile::{self, LoadedProfile, ProfileError};

use crate::paths;

pub fn load(site: &str) -> Result<LoadedProfile> {
    let path = paths::profile(site);
    if !path.exists() {
        let known = known_sites();
        bail!("no profile {} for site `{site}`; known sites: {}\n  fix: create it (copy profiles/demo.toml) or pick a known site", path.display(), known.join(", "));
    }
    let catalog = load_catalog()?;
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

pub fn load_catalog() -> Result<Catalog> {
    match Catalog::load(&paths::catalog()) {
        Ok(c) => Ok(c),
        Err(CatalogError::Invalid(problems)) => {
            bail!("the project catalog is not usable:\n{problems}")
        }
        Err(e) => Err(e.into()),
    }
}

/// Site names: every profiles/*.toml.
pub fn known_sites() -> Vec<String> {
    sites_in(&paths::profiles())
}

/// Site names: every DIR/*.toml.
pub fn sites_in(dir: &std::path::Path) -> Vec<String> {
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
