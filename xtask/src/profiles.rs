//! `cargo xtask profiles check`: validate every site profile and the catalog, as a build would.

use anyhow::{bail, Result};
use clap::Subcommand;
use schema::profile::{self, ProfileError};

use crate::paths;
use crate::pipeline::load;

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// Validate every profiles/*.toml against the catalog; warnings do not fail
    Check,
}

pub fn run(command: ProfilesCommand) -> Result<()> {
    match command {
        ProfilesCommand::Check => check_all(),
    }
}

fn check_all() -> Result<()> {
    let catalog = load::load_catalog()?;
    println!(
        "catalog: {} projects ({})",
        catalog.projects.len(),
        catalog.projects.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let mut failed = Vec::new();
    for site in load::known_sites() {
        match profile::check(&paths::profile(&site), &catalog) {
            Ok(loaded) => {
                let warnings = loaded.warnings.len();
                println!(
                    "{site}: ok ({} projects, {}, {warnings} warning(s))",
                    loaded.projects.len(),
                    loaded.profile.base.distro.as_str()
                );
                for w in &loaded.warnings {
                    println!("{w}");
                }
            }
            Err(ProfileError::Invalid(problems)) => {
                println!("{site}: NOT usable\n{problems}");
                failed.push(site);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} profile(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
