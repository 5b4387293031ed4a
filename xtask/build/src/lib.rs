//! The image build as a library: one `Request` in (the site, its profiles folder, the output
//! folder, the build time, the signing home, the caches), one site's disk image and update out.
//! `run` reads as the pipeline's own description: load → base → overlay → boot → root slot
//! image → UKI → disk → update → outputs, each stage one module with named inputs and outputs,
//! so a newcomer can stop between any two stages.
//!
//! Nothing here reads an environment variable or assumes a folder: `cargo xtask image` (the
//! command line), the tests and the benchmarks say everything in the request. It depends on
//! `schema` and `image` only, never on the appliance's runtime crates.

pub mod base;
pub mod binaries;
pub mod boot;
pub mod cmd;
pub mod disk;
pub mod flash;
pub mod host;
pub mod installed;
pub mod load;
pub mod modules;
pub mod outputs;
pub mod overlay;
pub mod progress;
pub mod publish;
pub mod signing;
pub mod slot_image;
pub mod source;
pub mod sparse;
pub mod ssh_keys;
pub mod tarball;
pub mod tree;
pub mod update;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Everything one site's build depends on besides the workspace's own files (overlay, package
/// lists, our programs' sources).
#[derive(Debug, Clone)]
pub struct Request {
    /// Site name: `profiles/SITE.toml`.
    pub site: String,
    /// The profiles folder: SITE.toml, `projects/` (the catalog), and the files profiles name.
    pub profiles: PathBuf,
    /// Where the finished outputs go (SITE.img, SITE.img.zst, manifest.json, update/); replaced
    /// whole at the end, untouched by a failed build. Scratch space is made beside it.
    pub out: PathBuf,
    /// The build time (Unix seconds): file times, the version, the signature's time.
    pub epoch: i64,
    /// The GnuPG home holding the update signing key's private half; `None` is gpg's default.
    pub signing_home: Option<PathBuf>,
    /// Cached base trees, shared by every build on this machine.
    pub base_cache: PathBuf,
    /// Copies of the SSH keys fetched by URL, for offline rebuilds.
    pub ssh_key_cache: PathBuf,
    /// cargo's target folder for the release build of our programs.
    pub cargo_target: PathBuf,
    /// Rebuild the cached base tree even when one matches.
    pub refresh_base: bool,
    /// Write the .img.zst copy.
    pub compress: bool,
    /// Stop after this stage.
    pub until: Option<Stage>,
}

impl Request {
    /// A request with the usual folders under `target` (`base-cache/`, `ssh-keys/`,
    /// `images/SITE/`), compressed, the build time given.
    pub fn new(site: &str, profiles: &Path, target: &Path, epoch: i64) -> Request {
        Request {
            site: site.to_string(),
            profiles: profiles.to_path_buf(),
            out: target.join("images").join(site),
            epoch,
            signing_home: None,
            base_cache: target.join("base-cache"),
            ssh_key_cache: target.join("ssh-keys"),
            cargo_target: target.to_path_buf(),
            refresh_base: false,
            compress: true,
            until: None,
        }
    }

    /// Scratch space for the build's trees, beside the output folder (same file system, so the
    /// finished outputs move into place with a rename).
    pub fn work(&self) -> PathBuf {
        self.out.with_extension("work")
    }
}

/// Where `--until` stops a build.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Stage {
    Load,
    Base,
    Overlay,
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Stage, String> {
        match s {
            "load" => Ok(Stage::Load),
            "base" => Ok(Stage::Base),
            "overlay" => Ok(Stage::Overlay),
            _ => Err(format!("`{s}` is no stage to stop after: load, base or overlay")),
        }
    }
}

/// What a build made.
#[derive(Debug)]
pub enum Built {
    /// The whole image, in `Request::out`.
    Image { image: PathBuf, manifest: PathBuf },
    /// `--until load`: the profile and catalog are valid.
    Loaded,
    /// `--until base`: the cached base tree.
    Base(PathBuf),
    /// `--until overlay`: the tree with the overlay laid over it (in the scratch space).
    Tree(PathBuf),
}

/// The workspace this library was built in: the overlay and the package lists live there.
pub fn workspace() -> PathBuf {
    // This crate's manifest folder is <workspace>/xtask/build.
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default()
}

/// The build time when none is given: the last commit's, so the same sources give the same
/// bytes.
pub fn last_commit_epoch() -> i64 {
    let last_commit = || cmd::shell().ok()?.cmd("git").args(["log", "-1", "--format=%ct"]).quiet().read().ok();
    last_commit().and_then(|s| s.trim().parse().ok()).unwrap_or(1_700_000_000)
}

/// Builds the image the request describes.
pub fn run(request: &Request) -> Result<Built> {
    let started = Instant::now();
    let name = &request.site;
    let mut site = load::load(&request.profiles, name)?;
    if request.until == Some(Stage::Load) {
        eprintln!("{}: profile and catalog are valid", site.path.display());
        return Ok(Built::Loaded);
    }
    host::ensure(&[base::host_needs(site.profile.base.distro)])?;
    // A bad signing key or an unreachable key URL fails now, not after the slow stages.
    update::signing_key(&site, request.signing_home.as_deref())?;
    let fetched_keys = ssh_keys::fetch_all(&site, &request.ssh_key_cache)?;
    for f in &fetched_keys {
        site.profile.access.ssh_keys.extend(f.keys.iter().cloned());
    }
    let work = request.work();
    tree::remove_dir_all_if_exists(&work)?;
    fs_err::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let built = stages(request, &site, &fetched_keys, &work, started);
    if built.is_err() {
        // A failed build leaves nothing behind: the last outputs as they were, no scratch tree.
        let _ = tree::remove_dir_all_if_exists(&work);
    }
    built
}

/// The stages after loading: base → overlay → boot → root slot image → UKI → disk → update →
/// outputs, in `work`.
fn stages(
    request: &Request,
    site: &schema::profile::LoadedProfile,
    fetched_keys: &[ssh_keys::Fetched],
    work: &Path,
    started: Instant,
) -> Result<Built> {
    let epoch = request.epoch;
    let version = image::version::Version::from_epoch(epoch)?;
    let root = work.join("root");

    // Our programs compile while the base installs; an early return or error stops the build.
    let bins = match request.until {
        Some(Stage::Base) => None,
        _ => Some(binaries::start(site.profile.base.distro, &request.cargo_target)?),
    };
    let base = base::prepare(site, &request.base_cache, request.refresh_base)?;
    let Some(bins) = bins else {
        eprintln!("base tree: {}", base.archive.display());
        tree::remove_dir_all_if_exists(work)?;
        return Ok(Built::Base(base.archive));
    };
    let bins = bins.finish()?;
    base::extract(&base.archive, &root)?;
    // The site's place in the fleet's sync topology: written into the tree, fingerprinted in
    // the manifest (a box joining the fleet changes it).
    let peers = load::sync_peers(site)?;
    overlay::apply(site, &load::catalog_dir(&request.profiles), &root, &bins, &peers)?;
    if request.until == Some(Stage::Overlay) {
        eprintln!("tree with overlay: {}", root.display());
        return Ok(Built::Tree(root));
    }
    modules::trim(site, &root)?;
    let boot = boot::prepare(site, &root, epoch)?;
    overlay::seal_read_only(&root, epoch)?;
    tree::pin_timestamps(&root, epoch)?;
    let slot = slot_image::make(site, &root, epoch, &work.join("slot"))?;
    let boot = boot.uki(site, &version, &slot.verity)?;
    let staging = work.join("out");
    let disk = disk::assemble(site, &slot, &boot, &version, &staging)?;
    let update = update::make(site, request.signing_home.as_deref(), &disk, &boot, &version, epoch, &staging)?;
    let (source_id, catalog) = (source::source(&workspace()), source::catalog(&request.profiles));
    let peers = source::peers_fingerprint(&peers);
    let parts = outputs::Parts {
        base: &base,
        disk: &disk,
        update: update.as_ref(),
        root: &root,
        version: &version,
        ssh_keys: fetched_keys,
        source: source_id.as_deref(),
        catalog: &catalog,
        peers: &peers,
    };
    let built = outputs::finish(site, &parts, &staging, &request.out, epoch, request.compress, started)?;
    tree::remove_dir_all_if_exists(work)?;
    let Built::Image { image, manifest } = &built else { bail!("internal: the outputs stage made no image") };
    eprintln!(
        "image ready: {} ({:.0} s); manifest {}",
        image.display(),
        started.elapsed().as_secs_f64(),
        manifest.display()
    );
    Ok(built)
}
