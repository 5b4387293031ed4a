//! The base-tree cache as tar + zstd, packed and unpacked as GNU tar does with `--xattrs
//! --xattrs-include='*' --numeric-owner -p`: ownership, modes (setuid included), extended
//! attributes (ACLs, capabilities), hard links, device nodes, symlinks and times all survive.
//!
//! The tar crate reads and writes the format and unpacks files, links and symlinks. Two things
//! it leaves out are finished here by hand: device nodes and FIFOs (it would write them as
//! empty files) and folders' extended attributes and times (it restores neither, and a
//! folder's time moves while its entries are unpacked, so folders are finished last).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, CWD};

use crate::tree;

/// PAX records that carry one extended attribute each (GNU tar's and the tar crate's name).
const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Packs `root` into a zstd-compressed tarball at `out`, names as `./relative/path`, sorted.
pub fn pack(root: &Path, out: &Path) -> Result<()> {
    let file = fs_err::File::create(out)?;
    let mut zstd = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), 3)?;
    zstd.multithread(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))?;
    let mut builder = tar::Builder::new(zstd);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    // The first path of each (device, inode) with several links; later ones become hard links.
    let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut paths = vec![root.to_path_buf()];
    paths.extend(tree::walk(root)?);
    for path in paths {
        let name = archive_name(root, &path)?;
        let meta = fs_err::symlink_metadata(&path)?;
        let xattrs = read_xattrs(&path)?;
        if !xattrs.is_empty() {
            builder.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if !meta.is_dir() && meta.nlink() > 1 {
            if let Some(first) = first_of.get(&(meta.dev(), meta.ino())) {
                let mut header = tar::Header::new_gnu();
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &name, first)
                    .with_context(|| format!("packing {}", path.display()))?;
                continue;
            }
            first_of.insert((meta.dev(), meta.ino()), name.clone());
        }
        let ft = meta.file_type();
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            // tar 0.4.46 names special files by their path on disk, not the name given.
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let dev = meta.rdev();
            header.set_device_major(rustix::fs::major(dev))?;
            header.set_device_minor(rustix::fs::minor(dev))?;
            header.set_size(0);
            builder.append_data(&mut header, &name, std::io::empty())?;
            continue;
        }
        builder.append_path_with_name(&path, &name).with_context(|| format!("packing {}", path.display()))?;
    }
    builder.into_inner()?.finish()?.flush()?;
    Ok(())
}

fn archive_name(root: &Path, path: &Path) -> Result<PathBuf> {
    let rel = path.strip_prefix(root).with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
    Ok(Path::new(".").join(rel))
}

/// Every extended attribute of `path` (not following a symlink) as PAX records.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in xattr::list(path).with_context(|| format!("listing extended attributes of {}", path.display()))? {
        if let Some(value) = xattr::get(path, &name)? {
            out.push((format!("{XATTR_PREFIX}{}", name.to_string_lossy()), value));
        }
    }
    out.sort();
    Ok(out)
}

/// A folder whose owner, mode, attributes and time are applied once everything is in it.
struct Folder {
    path: PathBuf,
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Unpacks a zstd-compressed tarball into `root` (created if missing).
pub fn unpack(archive: &Path, root: &Path) -> Result<()> {
    fs_err::create_dir_all(root)?;
    let file = fs_err::File::open(archive)?;
    let mut tar = tar::Archive::new(zstd::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))?);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(true);
    tar.set_overwrite(true);
    tar.set_mask(0);
    let mut folders = Vec::new();
    for entry in tar.entries().with_context(|| format!("reading {}", archive.display()))? {
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let kind = entry.header().entry_type();
        let dest = dest_of(root, &entry.path()?).with_context(|| format!("in {}", archive.display()))?;
        if kind.is_dir() {
            fs_err::create_dir_all(&dest)?;
            folders.push(Folder {
                path: dest,
                uid: entry.header().uid()?,
                gid: entry.header().gid()?,
                mode: entry.header().mode()?,
                mtime: entry.header().mtime()?,
                xattrs: pax_xattrs(&mut entry)?,
            });
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_node(&entry, &dest)?;
        } else {
            entry
                .unpack_in(root)
                .with_context(|| format!("unpacking {} from {}", dest.display(), archive.display()))?;
        }
    }
    // Deepest first, so finishing a folder never touches one already finished.
    folders.sort_by(|a, b| b.path.cmp(&a.path));
    for f in &folders {
        finish_folder(f)?;
    }
    Ok(())
}

/// Where an entry goes under `root`: leading `/` and `./` dropped as GNU tar does; an entry
/// that climbs out with `..` is refused.
fn dest_of(root: &Path, name: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let mut dest = root.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(part) => dest.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                anyhow::bail!("the entry {} leaves the tree", name.display())
            }
        }
    }
    Ok(dest)
}

fn pax_xattrs<R: std::io::Read>(entry: &mut tar::Entry<R>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(exts) = entry.pax_extensions()? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext?;
        if let Some(name) = ext.key_bytes().strip_prefix(XATTR_PREFIX.as_bytes()) {
            out.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// A character or block device, or a FIFO, with its owner, mode and time.
fn make_node<R: std::io::Read>(entry: &tar::Entry<R>, dest: &Path) -> Result<()> {
    let h = entry.header();
    let kind = h.entry_type();
    let file_type = if kind.is_character_special() {
        FileType::CharacterDevice
    } else if kind.is_block_special() {
        FileType::BlockDevice
    } else {
        FileType::Fifo
    };
    let dev = rustix::fs::makedev(h.device_major()?.unwrap_or(0), h.device_minor()?.unwrap_or(0));
    let mode = h.mode()?;
    if let Some(parent) = dest.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let _ = fs_err::remove_file(dest);
    rustix::fs::mknodat(CWD, dest, file_type, Mode::from_raw_mode(mode), dev)
        .with_context(|| format!("making the device node {}", dest.display()))?;
    set_owner_mode_time(dest, h.uid()?, h.gid()?, mode, h.mtime()?)
}

fn finish_folder(f: &Folder) -> Result<()> {
    for (name, value) in &f.xattrs {
        xattr::set(&f.path, std::ffi::OsStr::from_bytes(name), value)
            .with_context(|| format!("setting {} on {}", String::from_utf8_lossy(name), f.path.display()))?;
    }
    set_owner_mode_time(&f.path, f.uid, f.gid, f.mode, f.mtime)
}

/// Owner first (chown clears setuid bits), then the mode, then the time.
fn set_owner_mode_time(path: &Path, uid: u64, gid: u64, mode: u32, mtime: u64) -> Result<()> {
    // Numeric owners, as --numeric-owner: the build host's names mean nothing in the tree.
    let (uid, gid) = (Uid::from_raw(uid as u32), Gid::from_raw(gid as u32));
    rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("chown {}", path.display()))?;
    rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(mode), AtFlags::empty())
        .with_context(|| format!("chmod {}", path.display()))?;
    let t = Timespec { tv_sec: mtime as i64, tv_nsec: 0 };
    rustix::fs::utimensat(CWD, path, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("setting the time of {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// What a tree is, to compare two: every entry's type, owner, mode, size and content
    /// digest, link target, device, extended attributes and time, and which entries are hard
    /// links of one another.
    fn describe(root: &Path) -> Vec<String> {
        use sha2::Digest;
        let mut first_of: HashMap<(u64, u64), String> = HashMap::new();
        let mut out = Vec::new();
        let mut paths = vec![root.to_path_buf()];
        paths.extend(tree::walk(root).unwrap());
        for p in paths {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link->{}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!("file {} {:x}", data.len(), sha2::Sha256::digest(&data))
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {}", m.rdev())
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                "dir".into()
            };
            let mut xattrs: Vec<String> = xattr::list(&p)
                .unwrap()
                .map(|n| format!("{}={:?}", n.to_string_lossy(), xattr::get(&p, &n).unwrap()))
                .collect();
            xattrs.sort();
            let linked = if !m.is_dir() && m.nlink() > 1 {
                first_of.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone()
            } else {
                String::new()
            };
            // A symlink's mode is always 0777 and meaningless; its time is kept.
            let mode = if ft.is_symlink() { 0 } else { m.permissions().mode() };
            out.push(format!(
                "{rel}: {what} {}:{} {mode:o} t={} x=[{}] hardlink-of={linked}",
                m.uid(),
                m.gid(),
                m.mtime(),
                xattrs.join(",")
            ));
        }
        out
    }

    /// A tree with what a base holds: setuid, other owners, hard links, symlinks, a device
    /// node, a FIFO, and extended attributes on a file and on a folder.
    fn fixture(root: &Path) {
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("var/log/journal")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("usr/bin/perl"), b"#!perl\n").unwrap();
        std::fs::hard_link(root.join("usr/bin/perl"), root.join("usr/bin/perl5.36.0")).unwrap();
        std::fs::write(root.join("usr/bin/sudo"), b"sudo").unwrap();
        std::os::unix::fs::chown(root.join("usr/bin/sudo"), Some(0), Some(0)).unwrap();
        std::fs::set_permissions(root.join("usr/bin/sudo"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("perl", root.join("usr/bin/perl-link")).unwrap();
        std::os::unix::fs::lchown(root.join("usr/bin/perl-link"), Some(1234), Some(5678)).unwrap();
        std::fs::write(root.join("var/log/journal/owned"), b"x").unwrap();
        std::os::unix::fs::chown(root.join("var/log/journal"), Some(0), Some(101)).unwrap();
        std::fs::set_permissions(root.join("var/log/journal"), std::fs::Permissions::from_mode(0o2755)).unwrap();
        xattr::set(root.join("var/log/journal"), "trusted.micromirror", b"folder").unwrap();
        xattr::set(root.join("usr/bin/perl"), "trusted.micromirror", b"file").unwrap();
        rustix::fs::mknodat(
            CWD,
            root.join("dev/null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::mknodat(CWD, root.join("dev/fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        tree::pin_timestamps(root, 1_700_000_000).unwrap();
    }

    /// GNU tar as the cache used it: `create` packs `dir`, otherwise it unpacks into `dir`.
    fn gnu_tar(create: bool, archive: &Path, dir: &Path) {
        let mut c = Command::new("tar");
        c.args(["--zstd", "--xattrs", "--xattrs-include=*", "--numeric-owner"]);
        if create {
            c.args(["--sort=name", "-cpf"]).arg(archive).arg("-C").arg(dir).arg(".");
        } else {
            c.arg("-xpf").arg(archive).arg("-C").arg(dir);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "GNU tar (create: {create}): {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn our_tarballs_and_gnu_tars_make_the_same_trees() {
        // Under target/ (a real disk file system: tmpfs may refuse trusted.* attributes).
        let work = tempfile::tempdir_in(crate::workspace().join("target")).unwrap();
        let original = work.path().join("original");
        fixture(&original);
        let want = describe(&original);

        // Ours packed, GNU tar unpacks.
        let ours = work.path().join("ours.tar.zst");
        pack(&original, &ours).unwrap();
        let by_gnu = work.path().join("ours-by-gnu");
        std::fs::create_dir_all(&by_gnu).unwrap();
        gnu_tar(false, &ours, &by_gnu);
        assert_eq!(describe(&by_gnu), want, "GNU tar unpacking our tarball");

        // GNU tar packed (as the cache was made before), ours unpacks.
        let theirs = work.path().join("gnu.tar.zst");
        gnu_tar(true, &theirs, &original);
        let by_us = work.path().join("gnu-by-us");
        unpack(&theirs, &by_us).unwrap();
        assert_eq!(describe(&by_us), want, "unpacking GNU tar's tarball");

        // And our own round trip.
        let round = work.path().join("round");
        unpack(&ours, &round).unwrap();
        assert_eq!(describe(&round), want, "our round trip");
    }
}
