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
        /// List every placeholder (by default each site says how many it has)
        #[arg(long)]
        verbose: bool,
    },
    /// Write one profile per host of the fleet's Ansible playbook (inventory.yaml and
    /// host_vars/*.yaml); what the playbook lacks becomes a TODO: placeholder
    Import(import::ImportArgs),
}

pub fn run(command: ProfilesCommand) -> Result<()> {
    match command {
        ProfilesCommand::Check { dir, verbose } => check_all(&dir.unwrap_or_else(paths::profiles), verbose),
        ProfilesCommand::Import(args) => import::run(args),
    }
}

fn check_all(dir: &std::path::Path, verbose: bool) -> Result<()> {
    let catalog = load::load_catalog(&paths::profiles())?;
    let entries: Vec<&str> = catalog.projects.keys().map(String::as_str).collect();
    let aliases = catalog.names().len() - entries.len();
    println!("catalog: {} projects ({}), {aliases} aliases", entries.len(), entries.join(", "));
    let mut failed = Vec::new();
    let mut placeholders = 0;
    for site in load::sites_in(dir) {
        match profile::check(&dir.join(format!("{site}.toml")), &catalog) {
            Ok(loaded) => {
                let (todo, other): (Vec<_>, Vec<_>) =
                    loaded.warnings.iter().partition(|w| w.message.contains("is a placeholder"));
                placeholders += todo.len();
                let fit = loaded.disk_fit();
                let verdict = if fit.fits() { "ok" } else { "does NOT fit its disk" };
                println!(
                    "{site}: {verdict} ({} projects, {}, {} warning(s), {} placeholder(s){})",
                    loaded.projects.len(),
                    loaded.profile.base.distro.as_str(),
                    other.len(),
                    todo.len(),
                    if todo.is_empty() || verbose { "" } else { "; --verbose lists them" }
                );
                let site_cfg = &loaded.profile.site;
                let assumed =
                    site_cfg.disk_gb.is_none() && site_cfg.hardware.is_some() && site_cfg.hardware_class().is_none();
                let prefix = if assumed { "no hardware class yet; on the default disk " } else { "" };
                println!("  disk: {prefix}{}", fit.describe());
                if !fit.fits() {
                    failed.push(format!("{site} (its projects do not fit the disk)"));
                }
                for w in other.iter().chain(todo.iter().filter(|_| verbose)) {
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
