//! Writing a root image into a free slot: the verified .zst is decompressed straight onto the
//! disk at the slot's offset; runs of zeros are zeroed by the device (fallocate ZERO_RANGE,
//! which SSDs and virtio do without moving the bytes) instead of written; then the page cache
//! is dropped and every chunk is read back and compared, so what the next boot reads is what
//! was signed. Nothing of the box's own goes into the slot: the root is read-only and verified
//! block by block against the version's root hash (the initramfs shows the box's machine id,
//! kept on the state partition, over /etc/machine-id).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{Advice, FallocateFlags};
use sha2::{Digest, Sha256};

use crate::slots::Slot;

const CHUNK: usize = 1 << 20;

/// What one chunk of the image was: zeros, or data with this hash.
enum Written {
    Zero,
    Data([u8; 32]),
}

/// Decompresses `root_zst` into `slot` on `disk` and reads it back; returns the image size.
pub fn root_image(root_zst: &Path, disk: &Path, slot: &Slot, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let size = content_size(root_zst)?;
    if size > slot.size {
        bail!("the root image is {size} bytes but the slot holds {}: refused before writing", slot.size);
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let input = std::fs::File::open(root_zst).with_context(|| format!("opening {}", root_zst.display()))?;
    let mut decoder = zstd::Decoder::new(input)?;
    decoder.window_log_max(image::version::ROOT_ZSTD_WINDOW_LOG)?;
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = fill(&mut decoder, &mut buf).context("decompressing the root image")?;
        if n == 0 {
            break;
        }
        if at + n as u64 > size {
            bail!("the root image decompresses to more than its declared {size} bytes");
        }
        let chunk = &buf[..n];
        let offset = slot.offset + at;
        if is_zero(chunk) {
            zero(&dev, offset, n as u64)?;
            chunks.push(Written::Zero);
        } else {
            dev.write_all_at(chunk, offset).with_context(|| format!("writing {} at {offset}", disk.display()))?;
            chunks.push(Written::Data(Sha256::digest(chunk).into()));
        }
        at += n as u64;
        progress(at);
    }
    if at != size {
        bail!("the root image ended after {at} of its declared {size} bytes");
    }
    dev.sync_all().context("flushing the slot")?;
    read_back(&dev, slot, &chunks, size)?;
    Ok(size)
}

/// The decompressed size from the zstd frame header (our builds always record it).
fn content_size(root_zst: &Path) -> Result<u64> {
    let mut head = [0u8; 18];
    let mut f = std::fs::File::open(root_zst)?;
    let n = fill(&mut f, &mut head)?;
    match zstd::zstd_safe::get_frame_content_size(&head[..n]) {
        Ok(Some(size)) => Ok(size),
        _ => bail!("{}: the zstd frame does not say its size (not made by `cargo xtask image`?)", root_zst.display()),
    }
}

/// Reads until `buf` is full or the input ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn is_zero(chunk: &[u8]) -> bool {
    chunk.iter().all(|&b| b == 0)
}

/// Zeroes a range through the device; where that is not supported, writes the zeros.
fn zero(dev: &std::fs::File, offset: u64, len: u64) -> Result<()> {
    let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
    if rustix::fs::fallocate(dev, flags, offset, len).is_ok() {
        return Ok(());
    }
    dev.write_all_at(&vec![0u8; len as usize], offset).with_context(|| format!("zeroing {len} bytes at {offset}"))
}

fn read_back(dev: &std::fs::File, slot: &Slot, chunks: &[Written], size: u64) -> Result<()> {
    // Drop the cached pages, so the comparison reads what the device holds.
    let _ = rustix::fs::fadvise(dev, slot.offset, std::num::NonZeroU64::new(size), Advice::DontNeed);
    let mut buf = vec![0u8; CHUNK];
    for (i, expected) in chunks.iter().enumerate() {
        let at = i as u64 * CHUNK as u64;
        let n = (size - at).min(CHUNK as u64) as usize;
        dev.read_exact_at(&mut buf[..n], slot.offset + at).context("reading the slot back")?;
        let same = match expected {
            Written::Zero => is_zero(&buf[..n]),
            Written::Data(hash) => Sha256::digest(&buf[..n]).as_slice() == hash,
        };
        if !same {
            bail!("the slot reads back differently at byte {at}: the disk did not keep what was written");
        }
    }
    Ok(())
}
