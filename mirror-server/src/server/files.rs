//! Opening files under the mirror root with openat2(RESOLVE_BENEATH): the kernel refuses any
//! path, symlink included, that would leave the root. Also reads folders for listings.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::urlpath::RSYNC_TMP;

/// The kernel's `struct open_how` (libc's is non-exhaustive and cannot be built directly).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub struct Root {
    fd: OwnedFd,
}

pub enum Opened {
    File { file: File, len: u64, mtime: i64 },
    /// `stamp` is the folder's mtime in nanoseconds: it changes whenever an entry comes or goes.
    Dir { file: File, stamp: i128 },
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a folder", path.display())));
        }
        Ok(Root { fd: OwnedFd::from(dir) })
    }

    /// Opens `relative` (no leading slash; "" is the root itself) without leaving the root.
    pub fn open_beneath(&self, relative: &str) -> io::Result<Opened> {
        let rel = if relative.is_empty() { "." } else { relative };
        let c = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let how = OpenHow { flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64, mode: 0, resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS };
        // SAFETY: valid dirfd, NUL-terminated path, and a correctly sized open_how.
        let fd = unsafe { libc::syscall(libc::SYS_openat2, self.fd.as_raw_fd(), c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        let file = unsafe { File::from_raw_fd(fd as i32) };
        let meta = file.metadata()?;
        if meta.is_dir() {
            Ok(Opened::Dir { file, stamp: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()) })
        } else if meta.is_file() {
            Ok(Opened::File { len: meta.len(), mtime: meta.mtime(), file })
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
    pub mtime: i64,
}

/// The entries of an opened folder, sorted by name; rsync temporaries and entries that cannot
/// be described (broken or escaping links, names that are not UTF-8) are left out.
pub fn read_entries(dir: &File, root: &Root, relative: &str) -> io::Result<Vec<Entry>> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name == RSYNC_TMP {
            continue;
        }
        let ft = entry.file_type()?;
        let meta = if ft.is_symlink() {
            // Describe a link by its target, and only when the target stays inside the root.
            let rel = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
            match root.open_beneath(&rel) {
                Ok(Opened::File { len, mtime, .. }) => Some((false, len, mtime)),
                Ok(Opened::Dir { stamp, .. }) => Some((true, 0, (stamp / 1_000_000_000) as i64)),
                Err(_) => None,
            }
        } else {
            entry.metadata().ok().filter(|m| m.is_dir() || m.is_file()).map(|m| (m.is_dir(), m.len(), m.mtime()))
        };
        if let Some((is_dir, len, mtime)) = meta {
            out.push(Entry { name, is_dir, len: if is_dir { 0 } else { len }, mtime });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
