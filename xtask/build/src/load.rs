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
