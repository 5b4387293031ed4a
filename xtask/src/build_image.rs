//! `cargo xtask image`: the command line over the build library (`build`). One site builds in
//! this process; `--sites`/`--all` go to `many_sites`.

use anyhow::Result;
use build::Stage;

use crate::paths;

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
    #[arg(long)]
    pub until: Option<Stage>,
}

/// `cargo xtask image`: one site, or many (`--sites`, `--all`).
pub fn command(args: ImageArgs) -> Result<()> {
    if let Some(site) = &args.site {
        let mut request = paths::request(site);
        request.refresh_base = args.refresh_base;
        request.compress = !args.no_compress;
        request.until = args.until;
        return build::run(&request).map(|_| ());
    }
    let sites = if args.all { paths::known_sites() } else { args.sites.clone() };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = crate::many_sites::Plan {
        sites,
        jobs: args.jobs.unwrap_or(cores.min(2)),
        no_compress: args.no_compress,
        refresh_base: args.refresh_base,
    };
    crate::many_sites::run(plan).map(|_| ())
}
