//! Writing an image onto a disk (`cargo xtask flash --site NAME --device /dev/sdX`): the `dd`
//! step, done safely. Refuses a
//! mounted disk, the disk this system runs from, and one smaller than the image; writes only
//! the image's allocated extents (zeroing its holes so no old data shows through), wipes any
//! stale backup GPT at the end of the disk, then reads the image's span back and compares
//! hashes. A regular file works as a target too (a rehearsal of the real thing).

// The three block-device ioctls here (BLKGETSIZE64, BLKZEROOUT, BLKFLSBUF) stay hand-written
// with libc: rustix offers no wrapper for them.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cmd::{self, cmd};
use crate::progress;
use crate::sparse::{data_extents, holes, sha256_file};

/// Writes `image` onto `device` (a whole disk, or a regular file as a rehearsal) and reads it
/// back; without `confirmed`, asks on the terminal (and refuses without one).
pub fn flash(image: &Path, device: &Path, confirmed: bool) -> Result<()> {
    let image_len = fs_err::metadata(image)?.len();
    let target = fs_err::canonicalize(device).with_context(|| format!("{} does not exist", device.display()))?;
    let meta = fs_err::metadata(&target)?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.is_file() {
        bail!("{} is neither a disk nor a regular file", target.display());
    }
    if is_block {
        refuse_unsafe_disk(&target)?;
    }
    let target_len = if is_block { block_size(&target)? } else { meta.len() };
    if target_len < image_len {
        bail!(
            "{} holds {} but the image needs {}",
            target.display(),
            progress::human_bytes(target_len),
            progress::human_bytes(image_len)
        );
    }
    if !confirmed {
        confirm(&target, target_len)?;
    }
    let expected = sha256_file(image)?;
    let mut src = File::open(image)?;
    let mut dst = File::options()
        .write(true)
        .read(true)
        .open(&target)
        .with_context(|| format!("opening {} for writing", target.display()))?;
    let extents = data_extents(&src, image_len);
    let stage = progress::stage(
        "flash",
        &format!(
            "writing {} of data to {}",
            progress::human_bytes(extents.iter().map(|e| e.1).sum()),
            target.display()
        ),
    );
    let mut buf = vec![0u8; 4 << 20];
    for &(start, len) in &extents {
        copy_range(&mut src, &mut dst, start, len, &mut buf)?;
    }
    for (start, len) in holes(&extents, image_len) {
        zero_range(&mut dst, start, len, is_block)?;
    }
    if is_block && target_len > image_len {
        // A previous table's backup GPT sits at the end of the disk; repart must not find it.
        let tail = (1u64 << 20).min(target_len - image_len);
        zero_range(&mut dst, target_len - tail, tail, true)?;
    }
    dst.sync_all()?;
    stage.done("written");
    let stage = progress::stage("verify", "reading back");
    if is_block {
        // SAFETY: BLKFLSBUF drops the buffer cache so the read-back comes from the disk.
        unsafe { libc::ioctl(dst.as_raw_fd(), 0x1261) };
    }
    let got = sha256_prefix(&mut dst, image_len)?;
    if got != expected {
        bail!("verification failed: {} reads back {got}, the image is {expected}", target.display());
    }
    stage.done(&format!("sha256 {expected} matches"));
    eprintln!("{} is ready: put it in the box; it grows its data partition on first boot", target.display());
    Ok(())
}

fn copy_range(src: &mut File, dst: &mut File, start: u64, len: u64, buf: &mut [u8]) -> Result<()> {
    src.seek(SeekFrom::Start(start))?;
    dst.seek(SeekFrom::Start(start))?;
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            bail!("the image ended early at {}", start + len - left);
        }
        dst.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Zeros a range: BLKZEROOUT on disks (the drive does it), a punched hole in files.
fn zero_range(dst: &mut File, start: u64, len: u64, is_block: bool) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let rc = if is_block {
        let range = [start, len];
        // SAFETY: BLKZEROOUT takes a [start, len] pair of u64.
        unsafe { libc::ioctl(dst.as_raw_fd(), 0x127f, range.as_ptr()) }
    } else {
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&*dst, punch, start, len).map_or(-1, |()| 0)
    };
    if rc != 0 {
        // Fall back to writing zeros.
        let zeros = vec![0u8; 4 << 20];
        dst.seek(SeekFrom::Start(start))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            dst.write_all(&zeros[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
}

fn sha256_prefix(f: &mut File, len: u64) -> Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            bail!("the target ended before the image did");
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn block_size(dev: &Path) -> Result<u64> {
    let f = File::open(dev)?;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64.
    if unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_1272, &mut size) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the disk's size");
    }
    Ok(size)
}

/// Refuses a disk that is mounted (itself or any partition) or that holds this system's root.
fn refuse_unsafe_disk(dev: &Path) -> Result<()> {
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sh = cmd::shell()?;
    let text = cmd::run(cmd!(sh, "lsblk -nrpo NAME,PKNAME,MOUNTPOINT,TYPE"))?;
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let dev_str = dev.display().to_string();
    if rows.iter().any(|r| r.first() == Some(&dev_str.as_str()) && r.get(3) == Some(&"part")) {
        bail!("{dev_str} is a partition; give the whole disk (e.g. /dev/sdb, not /dev/sdb1)");
    }
    let belongs = |r: &Vec<&str>| r.first() == Some(&dev_str.as_str()) || r.get(1) == Some(&dev_str.as_str());
    for r in rows.iter().filter(|r| belongs(r)) {
        if let Some(mp) = r.get(2).filter(|m| !m.is_empty()) {
            let mp = mp.replace("\\x20", " ");
            if mp == "/" || mp.starts_with("/boot") || mp == "/usr" {
                bail!("{dev_str} holds this system ({} is mounted on {mp}); refusing to overwrite it", r[0]);
            }
            bail!("{} is mounted on {mp}; unmount it first (umount {})", r[0], r[0]);
        }
    }
    let mounts = fs_err::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        l.split(' ').next().is_some_and(|src| {
            src == dev_str
                || src.starts_with(&dev_str)
                    && src[dev_str.len()..].trim_start_matches('p').chars().all(|c| c.is_ascii_digit())
        })
    }) {
        bail!("{dev_str} ({name}) or one of its partitions is mounted; unmount it first");
    }
    Ok(())
}

fn confirm(dev: &Path, len: u64) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("not a terminal: pass --yes to write {} without asking", dev.display());
    }
    eprint!(
        "This erases everything on {} ({}). Type the device path to go on: ",
        dev.display(),
        progress::human_bytes(len)
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != dev.display().to_string() {
        bail!("not confirmed; nothing was written");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_the_gaps_between_extents() {
        assert_eq!(holes(&[(10, 5), (20, 5)], 30), vec![(0, 10), (15, 5), (25, 5)]);
        assert_eq!(holes(&[(0, 30)], 30), vec![]);
        assert_eq!(holes(&[], 8), vec![(0, 8)]);
    }
}
