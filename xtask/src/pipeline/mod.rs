//! `cargo xtask image --site NAME`: load → base → overlay → boot → disk → update → outputs.
//! Each stage is one module with named inputs and outputs; this file only strings them together,
//! so a newcomer can read the pipeline top to bottom and stop between any two stages.

pub mod base;
pub mod binaries;
pub mod boot;
pub mod disk;
pub mod load;
pub mod outputs;
pub mod overlay;
pub mod ssh_keys;
pub mod tarball;
pub mod tree;
pub mod update;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::{host, paths};

#[derive(clap::Args, Clone)]
pub struct ImageArgs {
    /// Site name: profiles/SITE.toml
    #[arg(long, required_unless_present_any = ["sites", "all"], conflicts_with_all = ["sites", "all"])]
    pub site: Option<String>,
    /// Several sites, comma-separated, built from one cached base, ending with one table
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    pub sites: Vec<String>,
    /// Every site in profiles/
    #[arg(long)]
    pub all: bool,
    /// With --sites or --all: how many images build at once (default: 2, or 1 on one core)
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Rebuild the cached base tree even when one matches
    #[arg(long)]
    pub refresh_base: bool,
    /// Skip the .img.zst copy (faster local iterations; the manifest says so)
    #[arg(long)]
    pub no_compress: bool,
    /// Stop after this stage (load, base, overlay): to inspect or test one stage
    #[arg(long, value_enum)]
    pub until: Option<Stage>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Stage {
    Load,
    Base,
    Overlay,
}

/// What a finished build leaves in target/images/SITE/.
pub struct Built {
    pub image: PathBuf,
    pub manifest: PathBuf,
}

/// `cargo xtask image`: one site, or many (`--sites`, `--all`).
pub fn command(args: ImageArgs) -> Result<()> {
    if args.site.is_some() {
        return run(args).map(|_| ());
    }
    let sites = if args.all { load::known_sites() } else { args.sites.clone() };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = crate::many_sites::Plan {
        sites,
        jobs: args.jobs.unwrap_or(cores.min(2)),
        no_compress: args.no_compress,
        refresh_base: args.refresh_base,
    };
    crate::many_sites::run(plan).map(|_| ())
}

/// Builds the image of `args.site`; `None` when `--until` stopped it early.
pub fn run(args: ImageArgs) -> Result<Option<Built>> {
    let started = Instant::now();
    let name = args.site.clone().context("no --site given")?;
    let mut site = load::load(&name)?;
    if args.until == Some(Stage::Load) {
        eprintln!("{}: profile and catalog are valid", site.path.display());
        return Ok(None);
    }
    host::ensure(&[base::host_needs(site.profile.base.distro)])?;
    // A bad signing key or an unreachable key URL fails now, not after the slow stages.
    update::signing_key(&site)?;
    let fetched_keys = ssh_keys::fetch_all(&site, &ssh_keys::cache_dir())?;
    for f in &fetched_keys {
        site.profile.access.ssh_keys.extend(f.keys.iter().cloned());
    }
    let epoch = outputs::build_epoch();
    let version = image::version::Version::from_epoch(epoch)?;

    let work = paths::target().join("work").join(&name);
    tree::remove_dir_all_if_exists(&work)?;
    fs_err::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let root = work.join("root");

    // Our programs compile while the base installs; an early return or error stops the build.
    let bins = match args.until {
        Some(Stage::Base) => None,
        _ => Some(binaries::start(site.profile.base.distro)?),
    };
    let base = base::prepare(&site, args.refresh_base)?;
    let Some(bins) = bins else {
        eprintln!("base tree: {}", base.archive.display());
        return Ok(None);
    };
    let bins = bins.finish()?;
    base::extract(&base.archive, &root)?;
    overlay::apply(&site, &root, &bins)?;
    if args.until == Some(Stage::Overlay) {
        eprintln!("tree with overlay: {}", root.display());
        return Ok(None);
    }
    let boot = boot::make_boot_files(&site, &root, epoch, &version)?;
    let staging = work.join("out");
    let disk = disk::assemble(&site, &root, &boot, &version, epoch, &staging)?;
    let update = update::make(&site, &disk, &boot, &version, epoch, &staging)?;
    let built = outputs::finish(
        &site,
        &outputs::Parts {
            base: &base,
            disk: &disk,
            update: update.as_ref(),
            root: &root,
            version: &version,
            ssh_keys: &fetched_keys,
        },
        &staging,
        epoch,
        !args.no_compress,
        started,
    )?;
    tree::remove_dir_all_if_exists(&work)?;
    eprintln!(
        "image ready: {} ({:.0} s); manifest {}",
        built.image.display(),
        started.elapsed().as_secs_f64(),
        built.manifest.display()
    );
    Ok(Some(built))
}
