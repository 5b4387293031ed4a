//! Sparse files: which byte ranges of an image hold data and which are holes, reading a range
//! in order with holes as zeros (never read from disk), and the SHA-256 and allocated size of a
//! file. The build's outputs, the update's compression and `cargo xtask flash` share these; none
//! of them writes.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// (offset, length) of each allocated extent of a sparse file.
pub fn data_extents(file: &File, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Ok(data) = rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) else { break };
        let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data)).map_or(len, |hole| hole.min(len));
        out.push((data, end - data));
        pos = end;
    }
    out
}

/// The gaps between extents within `len`: what must read as zeros on the target.
pub fn holes(extents: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &(start, l) in extents {
        if start > pos {
            out.push((pos, start - pos));
        }
        pos = start + l;
    }
    if pos < len {
        out.push((pos, len - pos));
    }
    out
}

/// Calls `sink` with every byte of `[start, end)` of the file in order, and whether it is a
/// hole: data read in 1 MiB pieces, holes as zeros.
pub fn feed(
    file: &fs_err::File,
    extents: &[(u64, u64)],
    start: u64,
    end: u64,
    sink: &mut dyn FnMut(&[u8], bool),
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 1 << 20;
    let zeros = vec![0u8; PIECE];
    let mut buf = vec![0u8; PIECE];
    let mut pos = start;
    while pos < end {
        // The first extent that ends after pos (extents are sorted and disjoint).
        let i = extents.partition_point(|(o, l)| o + l <= pos);
        match extents.get(i) {
            Some(&(o, l)) if o <= pos => {
                let n = ((o + l).min(end) - pos).min(PIECE as u64) as usize;
                file.file().read_exact_at(&mut buf[..n], pos)?;
                sink(&buf[..n], false);
                pos += n as u64;
            }
            next => {
                let hole_end = next.map_or(end, |&(o, _)| o).min(end);
                let n = (hole_end - pos).min(PIECE as u64) as usize;
                sink(&zeros[..n], true);
                pos += n as u64;
            }
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let f = fs_err::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    image::digest::sha256_hex(f).with_context(|| format!("reading {}", path.display()))
}

pub fn allocated(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs_err::metadata(path)?.blocks() * 512)
}
