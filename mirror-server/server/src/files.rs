//! Opening files under the mirror root with openat2(RESOLVE_BENEATH): the kernel refuses any
//! path, symlink included, that would leave the root. Also reads folders for listings.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::urlpath::RSYNC_TMP;

/// How every file under the root is opened: read-only, never a controlling tty, never blocking
/// on a FIFO someone put there.
const READ: OFlags = OFlags::RDONLY.union(OFlags::CLOEXEC).union(OFlags::NOCTTY).union(OFlags::NONBLOCK);

pub struct Root {
    fd: OwnedFd,
    path: std::path::PathBuf,
}

pub enum Opened {
    File {
        file: Arc<File>,
        len: u64,
        mtime: i64,
    },
    /// `stamp` is the folder's mtime in nanoseconds: it changes whenever an entry comes or goes.
    Dir {
        stamp: i128,
    },
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a folder", path.display())));
        }
        // Without links: inotify watches are taken by path, and must land on these folders.
        let path = std::fs::canonicalize(path)?;
        Ok(Root { fd: OwnedFd::from(dir), path })
    }

    /// Opens `relative` (no leading slash; "" is the root itself) without leaving the root.
    pub fn open_beneath(&self, relative: &str) -> io::Result<Opened> {
        let (file, _) = self.open_resolving(relative)?;
        classify(file)
    }

    /// Opens `relative` beneath the root; the flag says whether the path crossed no symlink
    /// (only such paths may be cached: the folders a link leads to are not on the path).
    pub fn open_resolving(&self, relative: &str) -> io::Result<(File, bool)> {
        if relative.contains('\0') {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let rel = if relative.is_empty() { "." } else { relative };
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let open = |resolve| rustix::fs::openat2(&self.fd, rel, READ, Mode::empty(), resolve).map(File::from);
        match open(beneath | ResolveFlags::NO_SYMLINKS) {
            Ok(file) => Ok((file, true)),
            Err(Errno::LOOP) => Ok((open(beneath)?, false)),
            // systemd's seccomp sandboxes (and pre-5.6 kernels) answer openat2 with ENOSYS.
            Err(Errno::NOSYS) => self.open_by_walking(relative),
            Err(e) => Err(e.into()),
        }
    }

    /// The folder the root was opened from (for inotify watches, which take paths).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Identity (device, inode) of what `relative` names now, without following a final link.
    pub fn identity_of(&self, relative: &str) -> io::Result<(u64, u64)> {
        let st = rustix::fs::statat(&self.fd, relative, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok((st.st_dev, st.st_ino))
    }
}

/// A regular file or a folder; anything else (devices, sockets) is not found.
pub fn classify(file: File) -> io::Result<Opened> {
    let meta = file.metadata()?;
    if meta.is_dir() {
        Ok(Opened::Dir { stamp: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()) })
    } else if meta.is_file() {
        Ok(Opened::File { len: meta.len(), mtime: meta.mtime(), file: Arc::new(file) })
    } else {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }
}

impl Root {
    /// RESOLVE_BENEATH by hand: open one component at a time without following links, and
    /// resolve each link ourselves, refusing absolute targets and any `..` above the root.
    fn open_by_walking(&self, relative: &str) -> io::Result<(File, bool)> {
        const MAX_LINKS: usize = 40;
        let mut pending: Vec<String> =
            relative.split('/').filter(|c| !c.is_empty() && *c != ".").rev().map(str::to_string).collect();
        // Folders from the root down to where we are; the root itself is not in the stack.
        let mut stack: Vec<File> = Vec::new();
        let mut links = 0;
        while let Some(component) = pending.pop() {
            if component == ".." {
                if stack.pop().is_none() {
                    return Err(Errno::XDEV.into());
                }
                continue;
            }
            let parent: BorrowedFd = stack.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            match rustix::fs::openat(parent, component.as_str(), READ | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(f) => stack.push(File::from(f)),
                Err(Errno::LOOP) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = readlinkat(parent, &component)?;
                    if target.starts_with('/') {
                        return Err(Errno::XDEV.into());
                    }
                    pending.extend(target.split('/').filter(|c| !c.is_empty() && *c != ".").rev().map(str::to_string));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let file = match stack.pop() {
            Some(f) => f,
            None => File::from(rustix::fs::openat(&self.fd, ".", READ, Mode::empty())?),
        };
        Ok((file, links == 0))
    }
}

fn readlinkat(dir: BorrowedFd, name: &str) -> io::Result<String> {
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    target.into_string().map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
    pub mtime: i64,
}

/// The entries of a folder under the root, sorted by name; rsync temporaries and entries that
/// cannot be described (broken or escaping links, names that are not UTF-8) are left out. The
/// folder is opened beneath the root and read through that descriptor, and each entry is
/// looked at relative to it: no path is resolved again outside the kernel's RESOLVE_BENEATH.
pub fn read_entries(root: &Root, relative: &str) -> io::Result<Vec<Entry>> {
    let (folder, _) = root.open_resolving(relative)?;
    let folder = OwnedFd::from(folder);
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(&folder)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name == "." || name == ".." || name == RSYNC_TMP {
            continue;
        }
        let Ok(st) = rustix::fs::statat(&folder, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let meta = match kind {
            rustix::fs::FileType::Directory => Some((true, 0, st.st_mtime)),
            rustix::fs::FileType::RegularFile => Some((false, st.st_size as u64, st.st_mtime)),
            rustix::fs::FileType::Symlink => {
                // Describe a link by its target, and only when the target stays inside the root.
                let rel = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
                match root.open_beneath(&rel) {
                    Ok(Opened::File { len, mtime, .. }) => Some((false, len, mtime)),
                    Ok(Opened::Dir { stamp, .. }) => Some((true, 0, (stamp / 1_000_000_000) as i64)),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        if let Some((is_dir, len, mtime)) = meta {
            out.push(Entry { name, is_dir, len, mtime });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f.txt"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("b/f.txt", r.join("a/link")).unwrap();
        std::os::unix::fs::symlink("../a/b", r.join("a/up-and-back")).unwrap();
        std::os::unix::fs::symlink("../../secret", r.join("a/escape")).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        d
    }

    #[test]
    fn both_resolvers_agree_on_what_stays_inside() {
        let d = tree();
        let root = Root::open(&d.path().join("root")).unwrap();
        let inside = ["a/b/f.txt", "a/link", "a/up-and-back/f.txt", "", "a"];
        let outside = ["a/escape", "abs", "loop", "a/../../secret", "missing"];
        for rel in inside {
            let direct = !rel.contains("link") && !rel.contains("up-and-back");
            let (_, by_openat2) = root.open_resolving(rel).unwrap_or_else(|e| panic!("openat2 refused {rel}: {e}"));
            let (_, by_walk) = root.open_by_walking(rel).unwrap_or_else(|e| panic!("walk refused {rel}: {e}"));
            assert_eq!((by_openat2, by_walk), (direct, direct), "{rel}: crossed no symlink?");
        }
        for rel in outside {
            assert!(root.open_beneath(rel).is_err(), "openat2 allowed {rel}");
            assert!(root.open_by_walking(rel).is_err(), "walk allowed {rel}");
        }
    }

    #[test]
    fn listings_never_show_or_follow_what_lies_outside_the_root() {
        let d = tree();
        let root = Root::open(&d.path().join("root")).unwrap();
        let names = |rel: &str| read_entries(&root, rel).unwrap().into_iter().map(|e| e.name).collect::<Vec<_>>();
        // The escaping, absolute and looping links are left out; the inside ones are described.
        assert_eq!(names("a"), vec!["b", "link", "up-and-back"]);
        assert_eq!(names(""), vec!["a"]);
        // A folder reached through a link that leaves the root is not listed at all.
        std::os::unix::fs::symlink(d.path(), d.path().join("root/outside")).unwrap();
        assert!(read_entries(&root, "outside").is_err());
        assert!(read_entries(&root, "a/escape").is_err());
        let link = read_entries(&root, "a").unwrap().into_iter().find(|e| e.name == "link").unwrap();
        assert_eq!((link.is_dir, link.len), (false, 1), "a link inside is described by its target");
    }
}
