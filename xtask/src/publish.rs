//! `cargo xtask publish --site NAME --to DIR`: the command line over `build::publish`, which
//! lays target/images/SITE/update/ out in DIR/SITE/, signed, keeping the newest versions.

use std::path::PathBuf;

use anyhow::Result;

use crate::paths;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// Site name: publishes target/images/SITE/update/
    #[arg(long)]
    pub site: String,
    /// The served folder; the site's updates go to DIR/SITE/
    #[arg(long)]
    pub to: PathBuf,
    /// How many versions the tree keeps (the newest and the ones before it)
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
}

pub fn run(args: PublishArgs) -> Result<()> {
    let site = paths::load(&args.site)?;
    let built = paths::images(&args.site).join("update");
    let said = build::publish::publish(&build::publish::Publication {
        site: &site,
        built: &built,
        to: &args.to,
        keep: args.keep,
        epoch: paths::build_epoch(),
        signing_home: None,
    })?;
    eprintln!("{said}");
    Ok(())
}
