//! The appliance's own programs: release builds of mirror-server, mirror-sync and mirror-update,
//! checked to
//! run on the target distro's glibc (the build host's may be newer). The build starts as a
//! child process so it can compile while the base tree installs (one waits on the network and
//! dpkg, the other on the CPU); a build that is not waited for is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use schema::profile::Distro;

use crate::{cmd, progress};

pub const PROGRAMS: &[&str] = &["mirror-server", "mirror-sync", "mirror-update"];
/// The packages that build them.
const PACKAGES: &[&str] = &["mirror-server", "mirror-sync", "mirror-update"];

pub struct Binaries {
    pub files: Vec<(String, PathBuf)>,
}

/// A release build under way; `finish` waits for it and checks what it made.
pub struct Pending {
    child: Option<Child>,
    shown: String,
    log: PathBuf,
    distro: Distro,
    target: PathBuf,
    stage: Option<progress::Stage>,
}

/// Starts `cargo build --release` of the programs in the background, into `target` (cargo's
/// target folder).
pub fn start(distro: Distro, target: &Path) -> Result<Pending> {
    let sh = cmd::shell()?;
    let build = release_build(&sh, target);
    let shown = build.to_string();
    let mut c = Command::from(build);
    let stage = progress::stage("binaries", &format!("{shown} (alongside the base)"));
    let log = target.join("xtask-binaries.log");
    fs_err::create_dir_all(target)?;
    let out = fs_err::File::create(&log)?.into_file();
    let child = c
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    Ok(Pending { child: Some(child), shown, log, distro, target: target.to_path_buf(), stage: Some(stage) })
}

impl Pending {
    pub fn finish(mut self) -> Result<Binaries> {
        let status = self.child.take().map(|mut c| c.wait()).transpose()?;
        if !status.is_some_and(|s| s.success()) {
            let text = fs_err::read_to_string(&self.log).unwrap_or_default();
            bail!("`{}` failed:\n{}", self.shown, cmd::tail(&text, 40));
        }
        let stage = self.stage.take().context("a build is finished once")?;
        let files = check(self.distro, &self.target)?;
        let newest = files.iter().filter_map(|(_, p)| fs_err::read(p).ok()).filter_map(|b| max_glibc(&b)).max();
        let shown = newest.map(|(a, b)| format!("GLIBC_{a}.{b}")).unwrap_or_else(|| "no glibc versions".into());
        stage.done(&format!("{} built, highest symbol version {shown}", PROGRAMS.join(" and ")));
        Ok(Binaries { files })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The built programs, each checked against the target's glibc.
fn check(distro: Distro, target: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for name in PROGRAMS {
        let path = target.join("release").join(name);
        runs_on(distro, name, &path)?;
        files.push((name.to_string(), path));
    }
    Ok(files)
}

/// `cargo build --release` of the appliance's programs into `target`, as a developer would type
/// it.
fn release_build<'a>(sh: &'a cmd::Shell, target: &Path) -> cmd::Cmd<'a> {
    let packages = PACKAGES.iter().flat_map(|p| ["-p", p]);
    cmd::cargo(sh).args(["build", "--release", "--locked", "--bins", "--target-dir"]).arg(target).args(packages)
}

/// Builds the programs into `target` and waits (the benchmarks).
pub fn cargo_build_release(target: &Path) -> Result<()> {
    let sh = cmd::shell()?;
    cmd::run(release_build(&sh, target)).map(|_| ())
}

/// Builds one more program of the workspace (`bin` of `package`, not part of the image) into
/// `target` and checks it runs on `distro`'s glibc: the USB installer's program, which runs on
/// the image's own system.
pub fn build_program(package: &str, bin: &str, target: &Path, distro: Distro) -> Result<PathBuf> {
    let sh = cmd::shell()?;
    let build = cmd::cargo(&sh)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(target)
        .args(["-p", package, "--bin", bin]);
    cmd::run(build)?;
    let path = target.join("release").join(bin);
    runs_on(distro, bin, &path)?;
    Ok(path)
}

/// Refuses a program that needs a newer glibc than `distro` has.
fn runs_on(distro: Distro, name: &str, path: &Path) -> Result<()> {
    let bytes = fs_err::read(path).with_context(|| format!("reading {}", path.display()))?;
    let allowed = distro.glibc();
    if let Some(v) = max_glibc(&bytes).filter(|v| *v > allowed) {
        bail!(
            "{name} needs GLIBC_{}.{} but {} has {}.{}; build on an older host (e.g. AlmaLinux 9 or Debian 11) or avoid the symbol",
            v.0, v.1, distro.as_str(), allowed.0, allowed.1
        );
    }
    Ok(())
}

/// The highest `GLIBC_x.y` symbol version an ELF file references.
pub fn max_glibc(elf: &[u8]) -> Option<(u32, u32)> {
    const TAG: &[u8] = b"GLIBC_";
    let mut best = None;
    let mut i = 0;
    while let Some(pos) = elf[i..].windows(TAG.len()).position(|w| w == TAG) {
        let start = i + pos + TAG.len();
        let end =
            elf[start..].iter().position(|b| !(b.is_ascii_digit() || *b == b'.')).map_or(elf.len(), |n| start + n);
        let text = String::from_utf8_lossy(&elf[start..end]);
        let mut parts = text.split('.').map(|p| p.parse::<u32>());
        if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
            best = best.max(Some((major, minor)));
        }
        i = end.max(start);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_highest_glibc_version() {
        let blob = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0GLIBC_PRIVATE\0";
        assert_eq!(max_glibc(blob), Some((2, 34)));
        assert_eq!(max_glibc(b"nothing here"), None);
    }
}
