//! File-tree helpers shared by the stages: removing, copying with modes, sizing, and pinning
//! every timestamp to the build epoch so filesystem images come out byte-identical.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};

pub fn remove_dir_all_if_exists(path: &Path) -> Result<()> {
    match fs_err::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Every regular file, directory and symlink under `root`, sorted, without following links.
pub fn walk(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs_err::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = fs_err::symlink_metadata(&p)?;
            if meta.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Sets atime and mtime of everything under `root` (and `root`) to `epoch`, not following links.
pub fn pin_timestamps(root: &Path, epoch: i64) -> Result<()> {
    let mut paths = walk(root)?;
    paths.push(root.to_path_buf());
    let t = Timespec { tv_sec: epoch, tv_nsec: 0 };
    let times = Timestamps { last_access: t, last_modification: t };
    for p in paths {
        utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(std::io::Error::from)
            .with_context(|| format!("setting times of {}", p.display()))?;
    }
    Ok(())
}

/// Writes a file, creating parent folders, with the given mode.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // Replace rather than write through: the base may hold a symlink here (e.g. /etc/resolv.conf).
    if fs_err::symlink_metadata(path).is_ok() {
        fs_err::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    fs_err::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}
