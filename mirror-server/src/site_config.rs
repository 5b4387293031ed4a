//! Where the appliance keeps the site's configuration, and loading it with its catalog entries
//! (/etc/micromirror/site.toml and /etc/micromirror/projects/*.toml, installed by the image).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::catalog::{Catalog, CatalogError};
use crate::profile::{self, LoadedProfile, ProfileError};

pub const DEFAULT_PROFILE: &str = "/etc/micromirror/site.toml";

/// The catalog that goes with a profile: `projects/` next to it (the appliance's layout and the
/// repository's alike).
pub fn catalog_dir_for(profile: &Path) -> PathBuf {
    profile.parent().unwrap_or(Path::new(".")).join("projects")
}

pub fn load(profile_path: &Path) -> Result<LoadedProfile> {
    let catalog = match Catalog::load(&catalog_dir_for(profile_path)) {
        Ok(c) => c,
        Err(CatalogError::Invalid(p)) => return Err(anyhow!("the project catalog is not usable:\n{p}")),
        Err(e) => return Err(e.into()),
    };
    // The installed copy is named site.toml, not after the site: no file-name rule here.
    match profile::load_installed(profile_path, &catalog) {
        Ok(p) => Ok(p),
        Err(ProfileError::Invalid(p)) => Err(anyhow!("{} is not usable:\n{p}", profile_path.display())),
    }
}
