//! `cargo xtask profiles check`: validate every site profile and the catalog, as a build would
//! (placeholders are warnings here, errors in a build). `cargo xtask profiles import`: turn the
//! fleet's Ansible playbook into profiles (`import`, with the playbook's format in `playbook`).

mod import;
pub mod playbook;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use schema::profile::{self, ProfileError};

use crate::paths;
use build::load;

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// Validate every profile (profiles/*.toml, or DIR/*.toml) against the catalog; warnings
    /// (placeholders among them) do not fail
    Check {
        /// Folder of profiles to check instead of profiles/ (e.g. an import's --out)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write one profile per host of the fleet's Ansible playbook (inventory.yaml and
    /// host_vars/*.yaml); what the playbook lacks becomes a TODO: placeholder
    Import(import::ImportArgs),
}

pub fn run(command: ProfilesCommand) -> Result<()> {
    match command {
        ProfilesCommand::Check { dir } => check_all(&dir.unwrap_or_else(paths::profiles)),
        ProfilesCommand::Import(args) => import::run(args),
    }
}

fn check_all(dir: &std::path::Path) -> Result<()> {
    let catalog = load::load_catalog(&paths::profiles())?;
    println!("catalog: {} projects ({})", catalog.projects.len(), catalog.names().join(", "));
    let mut failed = Vec::new();
    let mut placeholders = 0;
    for site in load::sites_in(dir) {
        match profile::check(&dir.join(format!("{site}.toml")), &catalog) {
            Ok(loaded) => {
                let warnings = loaded.warnings.len();
                placeholders += loaded.warnings.iter().filter(|w| w.message.contains("is a placeholder")).count();
                println!(
                    "{site}: ok ({} projects, {}, {warnings} warning(s))",
                    loaded.projects.len(),
                    loaded.profile.base.distro.as_str()
                );
                let site_cfg = &loaded.profile.site;
                let assumed =
                    site_cfg.disk_gb.is_none() && site_cfg.hardware.is_some() && site_cfg.hardware_class().is_none();
                let prefix = if assumed { "no hardware class yet; on the default disk " } else { "" };
                println!("  disk: {prefix}{}", loaded.disk_fit().describe());
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
    if placeholders > 0 {
        println!("{placeholders} placeholder(s) to fill before those sites can be built");
    }
    if !failed.is_empty() {
        bail!("{} profile(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
