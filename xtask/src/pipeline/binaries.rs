//! The appliance's own programs: release builds of mirror-server and mirror-sync, checked to
//! run on the target distro's glibc (the build host's may be newer).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use schema::profile::Distro;

use crate::{cmd, paths, progress};

pub const PROGRAMS: &[&str] = &["mirror-server", "mirror-sync"];
/// The packages that build them.
const PACKAGES: &[&str] = &["mirror-server", "mirror-sync"];

pub struct Binaries {
    pub files: Vec<(String, PathBuf)>,
}

pub fn build(distro: Distro) -> Result<Binaries> {
    let stage = progress::stage("binaries", "cargo build --release -p mirror-server -p mirror-sync");
    cargo_build_release()?;
    let mut files = Vec::new();
    for name in PROGRAMS {
        let path = paths::target().join("release").join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let needed = max_glibc(&bytes);
        let allowed = distro.glibc();
        if let Some(v) = needed {
            if v > allowed {
                bail!(
                    "{name} needs GLIBC_{}.{} but {} has {}.{}; build on an older host (e.g. AlmaLinux 9 or Debian 11) or avoid the symbol",
                    v.0, v.1, distro.as_str(), allowed.0, allowed.1
                );
            }
        }
        files.push((name.to_string(), path));
    }
    let newest = files.iter().filter_map(|(_, p)| std::fs::read(p).ok()).filter_map(|b| max_glibc(&b)).max();
    let shown = newest.map(|(a, b)| format!("GLIBC_{a}.{b}")).unwrap_or_else(|| "no glibc versions".into());
    stage.done(&format!("{} built, highest symbol version {shown}", PROGRAMS.join(" and ")));
    Ok(Binaries { files })
}

/// `cargo build --release` of the appliance's programs, as a developer would type it.
pub fn cargo_build_release() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(paths::workspace()).args(["build", "--release", "--locked", "--bins"]);
    for p in PACKAGES {
        c.args(["-p", p]);
    }
    cmd::run(&mut c).map(|_| ())
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
