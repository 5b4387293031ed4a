//! `cargo xtask render --site NAME --out DIR [--distro D]`: the site's rendered configuration
//! files (every `*.j2` of overlay/common and overlay/<distro>) written under DIR as they land in
//! the image, without a base tree: to review what a box will run, and for the tests that load
//! them into the real programs (NetworkManager, chronyd) on this machine.

use std::path::PathBuf;

use anyhow::Result;
use schema::profile::Distro;

use build::overlay;

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Site name: profiles/SITE.toml
    #[arg(long)]
    pub site: String,
    /// Where the files go (DIR/etc/…)
    #[arg(long)]
    pub out: PathBuf,
    /// Render for this base instead of the profile's (debian-12, almalinux-9)
    #[arg(long)]
    pub distro: Option<String>,
}

pub fn run(args: RenderArgs) -> Result<()> {
    let mut site = crate::paths::load(&args.site)?;
    if let Some(d) = &args.distro {
        site.profile.base.distro = match d.as_str() {
            "debian-12" => Distro::Debian12,
            "almalinux-9" => Distro::Almalinux9,
            other => anyhow::bail!("--distro {other}: not a base\n  fix: use debian-12 or almalinux-9"),
        };
    }
    let count = overlay::render_site(&site, &args.out)?;
    eprintln!(
        "{count} files rendered for {} ({}) in {}",
        args.site,
        site.profile.base.distro.as_str(),
        args.out.display()
    );
    Ok(())
}
