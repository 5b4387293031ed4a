//! Loading the installed site configuration: /etc/micromirror/site.toml with the catalog
//! entries of its projects beside it in /etc/micromirror/projects (installed by the image).

use std::path::Path;

use crate::catalog::{Catalog, CatalogError};
use crate::diagnostics::Problems;
use crate::paths::catalog_dir_for;
use crate::profile::{self, LoadedProfile, ProfileError};

#[derive(Debug, thiserror::Error)]
pub enum SiteConfigError {
    #[error("the project catalog is not usable:\n{0}")]
    Catalog(Problems),
    #[error("{0}")]
    CatalogFolder(CatalogError),
    #[error("{path} is not usable:\n{problems}")]
    Profile { path: String, problems: Problems },
    #[error("{0} is a folder: --config takes the site profile file itself, e.g. {0}/site.toml")]
    Folder(String),
}

pub fn load(profile_path: &Path) -> Result<LoadedProfile, SiteConfigError> {
    if profile_path.is_dir() {
        return Err(SiteConfigError::Folder(profile_path.display().to_string()));
    }
    let catalog = match Catalog::load(&catalog_dir_for(profile_path)) {
        Ok(c) => c,
        Err(CatalogError::Invalid(p)) => return Err(SiteConfigError::Catalog(p)),
        Err(e) => return Err(SiteConfigError::CatalogFolder(e)),
    };
    // The installed copy is named site.toml, not after the site: no file-name rule here.
    profile::load_installed(profile_path, &catalog).map_err(|ProfileError::Invalid(problems)| {
        SiteConfigError::Profile { path: profile_path.display().to_string(), problems }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_folder_is_not_a_profile_and_the_error_says_which_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let err = super::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a folder: --config takes the site profile file itself"), "{err}");
        assert!(err.contains(&format!("{}/site.toml", dir.path().display())), "{err}");
    }
}
