//! Reading files without making a worker thread wait for the disk: what is in the page cache
//! is read (or sent) on the runtime; what is not is read on the blocking pool, so a cold file
//! stalls only its own client. Works on file systems that refuse RWF_NOWAIT (FUSE, NFS): there
//! residency comes from mincore(2).

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustix::io::{Errno, ReadWriteFlags};

const PAGE: u64 = 4096;

/// Residency is probed every this many bytes: a cold stretch shorter than this can still make
/// a worker thread wait, for one read of under 1 MiB (about 3 ms on the T620's SSD). Cold data
/// comes in long runs (files never read, the readahead frontier, least-recently-used heads of
/// files); probing every 256 KiB instead cost 4 % more CPU per GB on a hot stream.
const PROBE_STRIDE: u64 = 1 << 20;

/// Whether `[offset, offset + len)` of `file` is in the page cache: one-byte RWF_NOWAIT reads
/// every PROBE_STRIDE and at the end (about 1 µs each, where mincore(2) over 4 MiB takes some
/// 80 µs); file systems that refuse RWF_NOWAIT are asked with mincore.
fn resident(file: &File, offset: u64, len: usize) -> bool {
    let end = offset + len as u64;
    let mut at = offset;
    while at < end {
        match cached_byte(file, at) {
            Some(true) => {}
            Some(false) => return false,
            None => return resident_by_mincore(file, offset, len),
        }
        at = if at + 1 == end { end } else { (at + PROBE_STRIDE).min(end - 1) };
    }
    true
}

/// Some(whether the byte at `offset` is cached), or None when the file system cannot say.
fn cached_byte(file: &File, offset: u64) -> Option<bool> {
    let mut byte = [0u8; 1];
    match rustix::io::preadv2(file, &mut [IoSliceMut::new(&mut byte)], offset, ReadWriteFlags::NOWAIT) {
        Ok(_) => Some(true),
        Err(Errno::AGAIN) => Some(false),
        Err(Errno::OPNOTSUPP) => None,
        // Any other error will show up, with its cause, in the real read.
        Err(_) => Some(true),
    }
}

/// Residency by mincore(2) over a mapping of the range, which faults nothing in. Written with
/// libc by hand: rustix has no mincore, and the mapping is never read through.
fn resident_by_mincore(file: &File, offset: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let start = offset & !(PAGE - 1);
    let span = (offset + len as u64 - start) as usize;
    // SAFETY: a read-only mapping of our own file; nothing reads through it, and it is unmapped
    // before returning.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        return false;
    }
    let mut pages = vec![0u8; span.div_ceil(PAGE as usize)];
    // SAFETY: `addr` is the mapping just made, `pages` has one byte per page of it.
    let rc = unsafe { libc::mincore(addr, span, pages.as_mut_ptr()) };
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(addr, span) };
    rc == 0 && pages.iter().all(|p| p & 1 == 1)
}

/// Appends `len` bytes of `file` at `offset` to `out`: what the page cache holds is copied at
/// once (one preadv2 with RWF_NOWAIT), the rest is read on the blocking pool.
pub async fn read_into(file: &Arc<File>, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + len as usize, 0);
    let cached = read_cached(file, &mut out[start..], offset);
    if cached < len as usize {
        let (f, at, rest) = (file.clone(), offset + cached as u64, len as usize - cached);
        let tail = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; rest];
            f.read_exact_at(&mut buf, at).map(|_| buf)
        })
        .await
        .map_err(io::Error::other)?;
        match tail {
            Ok(bytes) => out[start + cached..].copy_from_slice(&bytes),
            Err(e) => {
                out.truncate(start);
                return Err(shrank_or(e));
            }
        }
    }
    Ok(())
}

/// Reads from the page cache only; returns how many bytes it got (0 when the file system
/// cannot say without waiting).
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut [IoSliceMut::new(&mut buf[done..])];
        match rustix::io::preadv2(file, rest, offset + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
    done
}

/// Makes sure `[offset, offset + len)` is in the page cache before the caller sends it from the
/// runtime: a cold range is read on the blocking pool by sendfile(2) into /dev/null, which
/// waits for the disk but copies nothing to user space.
pub async fn warm(file: &Arc<File>, offset: u64, len: usize) {
    if resident(file, offset, len) {
        return;
    }
    let f = file.clone();
    let _ = tokio::task::spawn_blocking(move || {
        static DEV_NULL: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();
        let Some(null) = DEV_NULL.get_or_init(|| File::options().write(true).open("/dev/null").ok()) else { return };
        let mut off = offset;
        let end = offset + len as u64;
        while off < end {
            // The kernel moves `off` on by what it read.
            let rest = (end - off) as usize;
            match rustix::fs::sendfile(null, &*f, Some(&mut off), rest) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    })
    .await;
}

fn shrank_or(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        shrank()
    } else {
        e
    }
}

/// The file shrank under us (rsync replaced it): the transfer stops rather than send garbage.
pub fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder on the build disk (beside the test binary): tmpfs would keep every page.
    fn on_disk() -> tempfile::TempDir {
        let exe = std::env::current_exe().unwrap();
        tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn dropped_pages_are_not_resident_and_are_read_off_the_runtime() {
        let d = on_disk();
        let path = d.path().join("f");
        let data: Vec<u8> = (0..3 * PAGE as u32 + 10).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = Arc::new(File::open(&path).unwrap());
        assert!(resident(&f, 0, data.len()));
        assert!(resident(&f, PAGE + 7, 100));
        assert!(resident_by_mincore(&f, PAGE + 7, 100), "unaligned ranges are rounded to pages");
        f.sync_all().unwrap();
        // The advice is only advice (pages still batched on another CPU survive a call): repeat
        // it for a bounded while.
        for _ in 0..100 {
            let _ = rustix::fs::fadvise(&*f, 0, None, rustix::fs::Advice::DontNeed);
            if !resident_by_mincore(&f, 0, data.len()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!resident(&f, 0, data.len()), "dropped pages are not resident");
        assert!(!resident_by_mincore(&f, 0, data.len()), "mincore agrees");
        let mut out = Vec::new();
        read_into(&f, 1, data.len() as u64 - 1, &mut out).await.unwrap();
        assert_eq!(out, &data[1..], "a cold read finished on the blocking pool");
    }

    #[tokio::test]
    async fn read_into_appends_exactly_and_reports_a_shrunk_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = Arc::new(File::open(&path).unwrap());
        let mut out = b"head".to_vec();
        read_into(&f, 10, 60_000, &mut out).await.unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..], &data[10..60_010]);
        let mut out = Vec::new();
        let e = read_into(&f, 69_000, 5_000, &mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(out.is_empty());
    }
}
