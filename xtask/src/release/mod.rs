//! `cargo xtask release --to DIR`: security updates reach the fleet as images. Each distro's
//! base is installed afresh (its changed packages printed), every site whose inputs changed is
//! built (nothing is built when nothing changed), then the new versions are published in
//! waves: the canary sites (`update.ring = "canary"`) first; the rest only once every canary
//! reports the new version running and blessed, read from its metrics as `fleet status` reads
//! them. A canary that rolled back, or did not report within the wait, stops the release with
//! its name and reason, and nothing more is published. The decisions are in `plan`; this
//! module does the effects (bases, builds, publishing, polling) and never decides on its own.

pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schema::profile::{LoadedProfile, Ring};

use crate::fleet::{self, status, Which};
use crate::paths;
use plan::{Inputs, Report, SiteState, Verdict};

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// The served folder the sites' update.url point at; each site's updates go to DIR/SITE/
    #[arg(long)]
    pub to: PathBuf,
    #[command(flatten)]
    pub which: Which,
    /// Only these sites (repeat); default: every site with an [update] section
    #[arg(long)]
    pub site: Vec<String>,
    /// Where builds go and are read from (default: target/images)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Build nothing: publish, in waves, what the images folder holds
    #[arg(long)]
    pub no_build: bool,
    /// Build on the cached bases instead of installing each distro's base afresh
    #[arg(long)]
    pub keep_bases: bool,
    /// Read SITE's metrics at HOST[:PORT] instead of its host name on 9100 (repeat)
    #[arg(long, value_name = "SITE=HOST[:PORT]")]
    pub address: Vec<String>,
    /// How long the canaries get to run the new version blessed. A box checks every
    /// update.check_interval_minutes (or at once on a push) and reboots inside its
    /// maintenance window, so the default covers a day and a check
    #[arg(long, default_value_t = 30 * 60)]
    pub canary_wait_minutes: u64,
    /// Seconds between two looks at the canaries
    #[arg(long, default_value_t = 60)]
    pub poll_seconds: u64,
    /// Milliseconds each canary may take to answer, all of its metrics included
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// How many versions each published tree keeps
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
}

pub fn run(args: ReleaseArgs) -> Result<()> {
    let all = fleet::sites(&args.which)?;
    let sites = releasable(&args, &all)?;
    let images = args.images.clone().unwrap_or_else(|| paths::target().join("images"));
    if !args.no_build {
        build_changed(&args, &sites, &images)?;
    }
    // The chosen sites and every canary (which the rest waits for, also under --site).
    let states: Vec<SiteState> = all
        .iter()
        .filter(|s| {
            sites.iter().any(|c| c.profile.site.name == s.profile.site.name)
                || s.profile.update.as_ref().is_some_and(|u| u.ring == Ring::Canary)
        })
        .map(|s| state(s, &images, &args.to))
        .collect::<Result<_>>()?;
    let waves = plan::waves(&states, |name| sites.iter().any(|c| c.profile.site.name == name));
    for name in &waves.nothing_new {
        eprintln!("{name}: nothing newer to publish");
    }
    let by_name: BTreeMap<&str, &LoadedProfile> = sites.iter().map(|s| (s.profile.site.name.as_str(), s)).collect();
    let publish_wave = |names: &[String]| -> Result<()> {
        for name in names {
            publish(by_name[name.as_str()], &images, &args)?;
        }
        Ok(())
    };
    if waves.is_idle() {
        eprintln!("nothing to publish");
        return Ok(());
    }
    publish_wave(&waves.canaries)?;
    let targets = fleet::targets(&all, &args.address)?;
    let canaries: Vec<(fleet::Target, image::version::Version)> = waves
        .watched
        .iter()
        .filter_map(|(name, version)| targets.iter().find(|t| &t.site == name).map(|t| (t.clone(), version.clone())))
        .collect();
    if canaries.is_empty() {
        bail!(
            "no canary to try the release first: no site with update.ring = \"canary\" has a build\n  \
             fix: set ring = \"canary\" in the [update] of one or two sites (one per hardware class) and release again"
        );
    }
    match watch_canaries(&canaries, &args) {
        Ok(()) => {
            if !waves.rest.is_empty() {
                eprintln!("every canary runs its latest build, blessed: publishing to the rest");
            }
            publish_wave(&waves.rest)
        }
        Err(why) => bail!(
            "release stopped: {why}\n  nothing more was published: {} still offer their previous version",
            if waves.rest.is_empty() { "no other site".to_string() } else { waves.rest.join(", ") }
        ),
    }
}

/// The sites a release takes: every profile with an [update] section, or the ones named.
fn releasable(args: &ReleaseArgs, all: &[LoadedProfile]) -> Result<Vec<LoadedProfile>> {
    for wanted in &args.site {
        if !all.iter().any(|s| &s.profile.site.name == wanted) {
            bail!("--site {wanted}: no such site in the profiles folder (test sites need --include-test)");
        }
    }
    let sites: Vec<LoadedProfile> = all
        .iter()
        .filter(|s| args.site.is_empty() || args.site.contains(&s.profile.site.name))
        .filter(|s| {
            let has = s.profile.update.is_some();
            if !has {
                eprintln!("{}: no [update] section, left out of the release", s.profile.site.name);
            }
            has
        })
        .cloned()
        .collect();
    if sites.is_empty() {
        bail!(
            "no site to release: none has an [update] section\n  fix: add [update] to the profiles that take updates"
        );
    }
    Ok(sites)
}

/// Installs each distro's base afresh (once per base), then builds every site whose inputs
/// differ from its last build's.
fn build_changed(args: &ReleaseArgs, sites: &[LoadedProfile], images: &Path) -> Result<()> {
    let cache = paths::target().join("base-cache");
    let mut bases: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let source = build::source::source(&paths::workspace());
    let catalog = build::source::catalog(&args.which.folder());
    let now = now_epoch();
    for site in sites {
        let name = &site.profile.site.name;
        let key = build::base::cache_key(site);
        if !bases.contains_key(&key) {
            let refresh = !args.keep_bases;
            let base = build::base::prepare(site, &cache, refresh)
                .with_context(|| format!("{name}: installing its base ({key})"))?;
            let installed = build::installed::from_archive(site.profile.base.distro, &base.archive)?;
            bases.insert(key.clone(), installed.into_iter().map(|p| (p.name, p.version)).collect());
        }
        let now_inputs = Inputs {
            profile_sha256: build::source::profile(site),
            source: source.clone(),
            catalog: catalog.clone(),
            peers: Some(build::source::peers(site)?),
            packages: bases[&key].clone(),
        };
        let out = images.join(name);
        let last = fs_err::read(out.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| Inputs::from_manifest(&m));
        let changes = plan::changes(last.as_ref(), &now_inputs);
        if changes.is_empty() {
            eprintln!("{name}: inputs unchanged since its last build: nothing built");
            continue;
        }
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        eprintln!("{name}: building, changed: {}", shown.join(", "));
        let mut request = build::Request::new(name, &args.which.folder(), &paths::target(), now);
        request.out = out;
        build::run(&request).with_context(|| format!("{name}: the build failed; nothing of it is published"))?;
    }
    Ok(())
}

/// The site's ring, its last build's version and what its published tree offers.
fn state(site: &LoadedProfile, images: &Path, to: &Path) -> Result<SiteState> {
    let name = &site.profile.site.name;
    let built_dir = images.join(name).join("update");
    let built = if built_dir.join(build::update::SUMS).exists() {
        Some(build::publish::built_version(&built_dir).with_context(|| format!("{name}: {}", built_dir.display()))?)
    } else {
        None
    };
    Ok(SiteState {
        name: name.clone(),
        ring: site.profile.update.as_ref().map(|u| u.ring).unwrap_or(Ring::Main),
        built,
        offered: build::publish::offered(to, name)?,
    })
}

fn publish(site: &LoadedProfile, images: &Path, args: &ReleaseArgs) -> Result<()> {
    let name = &site.profile.site.name;
    let said = build::publish::publish(&build::publish::Publication {
        site,
        built: &images.join(name).join("update"),
        to: &args.to,
        keep: args.keep,
        epoch: now_epoch(),
        signing_home: None,
    })
    .with_context(|| format!("publishing {name}"))?;
    eprintln!("{name}: {said}");
    Ok(())
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Looks at every canary until the verdict is Go (Ok) or Stop (Err, why); says when a canary's
/// state changes.
fn watch_canaries(canaries: &[(fleet::Target, image::version::Version)], args: &ReleaseArgs) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.canary_wait_minutes * 60);
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let targets: Vec<fleet::Target> = canaries.iter().map(|(t, _)| t.clone()).collect();
        let rows = status::collect(&targets, Duration::from_millis(args.timeout_ms));
        let looks: Vec<(String, Result<Report, String>)> = rows
            .into_iter()
            .zip(canaries)
            .map(|(row, (t, version))| (t.site.clone(), row.metrics.map(|m| plan::judge(version, &m))))
            .collect();
        for (site, look) in &looks {
            // A box that does not answer (rebooting) is said once, whatever its socket said.
            let now = match look {
                Ok(report) => format!("{report:?}"),
                Err(_) => "no answer".to_string(),
            };
            if said.get(site) != Some(&now) {
                eprintln!("canary {site}: {}", describe(look));
                said.insert(site.clone(), now);
            }
        }
        match plan::verdict(&looks, Instant::now() >= deadline) {
            Verdict::Wait => {
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(Duration::from_secs(args.poll_seconds.max(1)).min(left));
            }
            Verdict::Go => return Ok(()),
            Verdict::Stop(why) => return Err(why),
        }
    }
}

fn describe(look: &Result<Report, String>) -> String {
    match look {
        Ok(Report::Blessed) => "runs the new version, blessed".into(),
        Ok(Report::OnTrial) => "runs the new version, on trial".into(),
        Ok(Report::RolledBack(why)) => format!("rolled back: {why}"),
        Ok(Report::Waiting(what)) => format!("waiting: {what}"),
        Err(e) => format!("no answer: {e}"),
    }
}
