//! Stage 2: the base tree, installed by the distribution's own package manager (mmdebstrap for
//! Debian 12, `dnf --installroot` for AlmaLinux 9) and cached as tar+zstd keyed by distro,
//! release, package set and package source, so a second site reuses it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use schema::profile::{Distro, LoadedProfile};
use sha2::{Digest, Sha256};

use crate::cmd::{self, cmd};
use crate::host::{self, Need};
use crate::progress;
use crate::tarball;

/// Bump when the way a base is made changes, so old caches are not reused.
const RECIPE_VERSION: u32 = 1;

pub fn host_needs(distro: Distro) -> &'static [Need] {
    match distro {
        Distro::Debian12 => host::IMAGE_DEBIAN,
        Distro::Almalinux9 => host::IMAGE_ALMALINUX,
    }
}

/// What a site's base installs: a headless micro mirror's packages and the profile's own
/// (`base.packages`), sorted, each once.
pub fn packages(site: &LoadedProfile) -> Vec<String> {
    let base = &site.profile.base;
    let mut v: Vec<String> = builtin_packages(base.distro).into_iter().map(String::from).collect();
    v.extend(base.packages.iter().cloned());
    v.sort_unstable();
    v.dedup();
    v
}

/// Packages of a headless micro mirror, in each distro's names: data in xtask/build/packages/.
pub fn builtin_packages(distro: Distro) -> Vec<&'static str> {
    let list: &'static str = match distro {
        Distro::Debian12 => include_str!("../packages/debian-12.txt"),
        Distro::Almalinux9 => include_str!("../packages/almalinux-9.txt"),
    };
    let mut v: Vec<&str> =
        list.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect();
    v.sort_unstable();
    v
}

/// The package sources of a base: (name, URL) pairs.
pub fn sources(site: &LoadedProfile) -> Vec<(String, String)> {
    let base = &site.profile.base;
    let mirror = base.mirror_url();
    match base.distro {
        Distro::Debian12 => {
            let mut v = vec![("main".to_string(), format!("deb {mirror} bookworm main"))];
            if base.mirror.is_none() {
                v.push(("updates".into(), format!("deb {mirror} bookworm-updates main")));
                v.push(("security".into(), "deb http://deb.debian.org/debian-security bookworm-security main".into()));
            }
            v
        }
        Distro::Almalinux9 => {
            let mut v = vec![
                ("baseos".to_string(), format!("{mirror}/9/BaseOS/x86_64/os")),
                ("appstream".to_string(), format!("{mirror}/9/AppStream/x86_64/os")),
            ];
            if let Some(epel) = &base.epel_mirror {
                v.push(("epel".into(), format!("{}/9/Everything/x86_64", epel.trim_end_matches('/'))));
            }
            v
        }
    }
}

/// GPG keys packages must be signed with (AlmaLinux).
pub fn gpg_keys(site: &LoadedProfile) -> Vec<String> {
    let base = &site.profile.base;
    if !base.gpg_keys.is_empty() {
        return base.gpg_keys.clone();
    }
    let mut keys = vec![format!("{}/RPM-GPG-KEY-AlmaLinux-9", base.mirror_url())];
    if let Some(epel) = &base.epel_mirror {
        keys.push(format!("{}/RPM-GPG-KEY-EPEL-9", epel.trim_end_matches('/')));
    }
    keys
}

/// The cache key: everything that changes the bytes of a base tree.
pub fn cache_key(site: &LoadedProfile) -> String {
    let mut h = Sha256::new();
    h.update(format!("recipe={RECIPE_VERSION}\ndistro={}\n", site.profile.base.distro.as_str()));
    for p in packages(site) {
        h.update(format!("package={p}\n"));
    }
    for (name, url) in sources(site) {
        h.update(format!("source={name} {url}\n"));
    }
    for k in gpg_keys(site) {
        h.update(format!("key={k}\n"));
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", site.profile.base.distro.as_str())
}

pub struct Base {
    pub archive: PathBuf,
    pub key: String,
    pub reused: bool,
}

/// The base tree of `site` from the cache in `dir`, installed first when there is none (or
/// `refresh` asks for a new one).
pub fn prepare(site: &LoadedProfile, dir: &Path, refresh: bool) -> Result<Base> {
    let key = cache_key(site);
    let distro = site.profile.base.distro;
    let mut installing = None;
    let (archive, reused) = cached(dir, &key, refresh, |partial| {
        installing = Some(progress::stage(
            "base",
            &format!("installing {} packages ({})", packages(site).len(), distro.as_str()),
        ));
        match distro {
            Distro::Debian12 => mmdebstrap(site, partial),
            Distro::Almalinux9 => dnf_installroot(site, partial, dir),
        }
    })?;
    match installing {
        Some(stage) => {
            let size = fs_err::metadata(&archive).map(|m| m.len()).unwrap_or(0);
            stage.done(&format!("base {key} ({})", progress::human_bytes(size)))
        }
        None => progress::stage("base", &format!("reusing cached {key}"))
            .done(&format!("cached base {}", archive.display())),
    };
    Ok(Base { archive, key, reused })
}

/// `dir/KEY.tar.zst`, made by `make` (into a partial file it is given) unless it is there
/// already. Builds running side by side (parallel tests, two sites) take a kernel lock on the
/// key first, so one installs and the others wait and reuse its archive: two installs would
/// race for the one partial file and cost twice the time.
fn cached(dir: &Path, key: &str, refresh: bool, make: impl FnOnce(&Path) -> Result<()>) -> Result<(PathBuf, bool)> {
    use rustix::fs::{flock, FlockOperation};
    fs_err::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(format!(".{key}.lock"));
    let lock = fs_err::File::create(&lock_path)?;
    flock(lock.file(), FlockOperation::LockExclusive).with_context(|| format!("locking {}", lock_path.display()))?;
    let archive = dir.join(format!("{key}.tar.zst"));
    if archive.exists() && !refresh {
        return Ok((archive, true));
    }
    let partial = dir.join(format!(".{key}.partial.tar.zst"));
    let _ = fs_err::remove_file(&partial);
    if let Err(e) = make(&partial) {
        let _ = fs_err::remove_file(&partial);
        return Err(e);
    }
    fs_err::rename(&partial, &archive).with_context(|| format!("storing {}", archive.display()))?;
    Ok((archive, false))
}

fn mmdebstrap(site: &LoadedProfile, out: &Path) -> Result<()> {
    let include = format!("--include={}", packages(site).join(","));
    let sources: Vec<String> = sources(site).into_iter().map(|(_, line)| line).collect();
    // An apt.conf line, written into the tree as it is (so the quotes stay).
    let retries = r#"--aptopt=Acquire::Retries "3""#;
    let sh = cmd::shell()?;
    let c = cmd!(
        sh,
        "mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr {retries}
            --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/*
            --dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-include=/usr/share/doc/*/copyright
            {include} bookworm {out} {sources...}"
    );
    // INITRD=No: the kernel's postinst would build an initramfs we rebuild anyway.
    cmd::run(c.env("INITRD", "No")).map(|_| ()).with_context(|| {
        format!("installing the Debian base from {} failed; if that mirror is unreachable, set base.mirror in {} to one that is", site.profile.base.mirror_url(), site.path.display())
    })
}

fn dnf_installroot(site: &LoadedProfile, out: &Path, cache: &Path) -> Result<()> {
    for (name, url) in sources(site) {
        probe_repository(site, &name, &url)?;
    }
    let tmp = tempfile::Builder::new().prefix(".dnf-").tempdir_in(cache)?;
    let root = tmp.path().join("root");
    let conf = dnf_config(site, tmp.path());
    fs_err::create_dir_all(tmp.path().join("repos"))?;
    fs_err::write(tmp.path().join("dnf.conf"), conf.main)?;
    fs_err::write(tmp.path().join("repos/micromirror.repo"), conf.repos)?;
    // Debian's rpm keeps its database in ~/.rpmdb; AlmaLinux's lives in /var/lib/rpm.
    fs_err::write(tmp.path().join(".rpmmacros"), "%_dbpath /var/lib/rpm\n")?;
    let (args, packages) = (dnf_args(tmp.path(), &root), packages(site));
    let sh = cmd::shell()?;
    cmd::run(cmd!(sh, "dnf {args...} {packages...}").env("HOME", tmp.path())).with_context(|| {
        format!("dnf could not install the AlmaLinux base; check base.mirror in {}", site.path.display())
    })?;
    // Package caches and logs are not part of the image.
    for junk in
        ["var/cache/dnf", "var/log/dnf.log", "var/log/dnf.librepo.log", "var/log/dnf.rpm.log", "var/log/hawkey.log"]
    {
        let p = root.join(junk);
        let _ = if p.is_dir() { fs_err::remove_dir_all(&p) } else { fs_err::remove_file(&p) };
    }
    tarball::pack(&root, out)
}

pub struct DnfConfig {
    pub main: String,
    pub repos: String,
}

/// dnf's configuration for an installroot: our repositories only, GPG checks on.
pub fn dnf_config(site: &LoadedProfile, dir: &Path) -> DnfConfig {
    let main = format!(
        "[main]\ngpgcheck=1\ninstallonly_limit=2\ninstall_weak_deps=0\nkeepcache=0\nskip_if_unavailable=0\nreposdir={}\ncachedir={}\n",
        dir.join("repos").display(),
        dir.join("cache").display()
    );
    let keys = gpg_keys(site).join(" ");
    let repos = sources(site)
        .into_iter()
        .map(|(name, url)| format!("[{name}]\nname=micromirror {name}\nbaseurl={url}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=0\ngpgkey={keys}\n\n"))
        .collect();
    DnfConfig { main, repos }
}

pub fn dnf_args(confdir: &Path, root: &Path) -> Vec<String> {
    vec![
        format!("--config={}", confdir.join("dnf.conf").display()),
        format!("--installroot={}", root.display()),
        "--releasever=9".into(),
        "--forcearch=x86_64".into(),
        "--setopt=tsflags=nodocs".into(),
        "--assumeyes".into(),
        "--quiet".into(),
        "install".into(),
    ]
}

/// Fails early and clearly when a repository cannot be reached (dnf's own error is long).
fn probe_repository(site: &LoadedProfile, name: &str, url: &str) -> Result<()> {
    let repomd = format!("{url}/repodata/repomd.xml");
    let sh = cmd::shell()?;
    let probe = cmd!(sh, "curl -fsS --max-time 20 -o /dev/null {repomd}").quiet().ignore_status().output()?;
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr).trim().to_string();
        bail!(
            "cannot reach the {name} repository: {repomd}\n  ({why})\n  fix: make that URL reachable from this machine, or point base.mirror (and base.epel_mirror) in {} at a mirror that is",
            site.path.display()
        );
    }
    Ok(())
}

/// Unpacks a cached base into `root` (which must not exist yet).
pub fn extract(archive: &Path, root: &Path) -> Result<()> {
    let stage = progress::stage("extract", "unpacking the base tree");
    tarball::unpack(archive, root)?;
    stage.done("base tree unpacked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_sets_cover_the_same_roles() {
        for distro in [Distro::Debian12, Distro::Almalinux9] {
            let p = builtin_packages(distro);
            for role in ["rsync", "xfsprogs", "openssh-server", "sudo", "nftables", "zstd", "tzdata"] {
                assert!(p.contains(&role), "{} lacks {role}", distro.as_str());
            }
        }
        assert!(builtin_packages(Distro::Almalinux9).contains(&"rsync-daemon"));
        assert!(builtin_packages(Distro::Debian12).windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    }

    #[test]
    fn the_profile_s_packages_join_the_base_and_its_cache_key() {
        let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles");
        let mut site = crate::load::load(&profiles, "demo").unwrap();
        let plain = (packages(&site), cache_key(&site));
        site.profile.base.packages = vec!["htop".into(), "rsync".into()];
        let with_tools = packages(&site);
        assert!(with_tools.contains(&"htop".to_string()));
        assert_eq!(with_tools.len(), plain.0.len() + 1, "rsync is in the base already: listed once");
        assert!(with_tools.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        assert_ne!(cache_key(&site), plain.1, "another package set is another base");
    }

    #[test]
    fn builds_side_by_side_install_a_base_once_and_share_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let installs = AtomicUsize::new(0);
        let results: Vec<(PathBuf, bool)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        cached(dir.path(), "k", false, |partial| {
                            installs.fetch_add(1, Ordering::SeqCst);
                            // Slow enough that the other threads arrive while it runs.
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            fs_err::write(partial, b"base")?;
                            Ok(())
                        })
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap().unwrap()).collect()
        });
        assert_eq!(installs.load(Ordering::SeqCst), 1, "one install, the rest reuse it");
        assert_eq!(results.iter().filter(|(_, reused)| !reused).count(), 1);
        assert!(results.iter().all(|(archive, _)| fs_err::read(archive).unwrap() == b"base"));
    }

    #[test]
    fn a_failed_install_leaves_no_archive_and_the_next_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let failed = cached(dir.path(), "k", false, |partial| {
            fs_err::write(partial, b"half")?;
            bail!("mirror unreachable")
        });
        assert!(failed.is_err());
        assert!(!dir.path().join("k.tar.zst").exists());
        assert!(!dir.path().join(".k.partial.tar.zst").exists());
        let (_, reused) = cached(dir.path(), "k", false, |partial| Ok(fs_err::write(partial, b"base")?)).unwrap();
        assert!(!reused);
    }
}
