//! `cargo xtask flash --site NAME --device /dev/sdX`: the command line over `build::flash`,
//! which writes target/images/SITE/SITE.img onto a disk safely and reads it back.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::paths;

#[derive(clap::Args)]
pub struct FlashArgs {
    /// Site name: writes target/images/SITE/SITE.img
    #[arg(long)]
    pub site: String,
    /// The disk to write, e.g. /dev/sdb (the whole disk, not a partition)
    #[arg(long)]
    pub device: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: FlashArgs) -> Result<()> {
    let image = paths::images(&args.site).join(format!("{}.img", args.site));
    if !image.exists() {
        bail!("no image at {}; build it with: cargo xtask image --site {}", image.display(), args.site);
    }
    build::flash::flash(&image, &args.device, args.yes)
}
