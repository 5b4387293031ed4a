//! Open files kept between requests, as nginx's open_file_cache and lighttpd's stat cache keep
//! them: a hit costs no open, stat or close. Freshness comes from inotify, not from a timer:
//! every folder on a cached path is watched, and the change events waiting in the kernel are
//! applied under the cache's lock before every lookup, so a request that starts after rsync
//! renamed a file into place never gets the old one. Paths that cross a symlink are never
//! cached (the folders a link leads to are not on the path, so nothing would watch them), nor
//! are files on network or FUSE file systems, which change without this kernel seeing it.
//! Mounting something over a folder inside the tree is not an event: reload (SIGHUP) then.
//!
//! Written by hand: cache crates bound their entries, but none ties each entry to inotify
//! watches on its folders and keeps the watch set to exactly the folders in use.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::files::{classify, Opened, Root};

/// Every change that can make a cached path name other bytes, metadata or nothing at all.
const WATCHED: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

/// The mirror root, opened files under it, and the cache of those that can be reused.
pub struct FileCache {
    root: Root,
    /// None when inotify is unavailable: every request then opens its file.
    state: Option<Mutex<State>>,
    capacity: usize,
}

struct State {
    inotify: Inotify,
    events: Vec<u8>,
    entries: HashMap<Arc<str>, Entry>,
    /// The keys of `entries`, for eviction of a random one in O(1).
    keys: Vec<Arc<str>>,
    /// Folders (relative paths, "" for the root) that cached paths, or paths about to be
    /// cached, pass through.
    folders: HashMap<Arc<str>, Folder>,
    by_watch: HashMap<i32, Arc<str>>,
    rng: fastrand::Rng,
}

struct Entry {
    file: Arc<File>,
    len: u64,
    mtime: i64,
    /// Position in `keys`.
    at: usize,
}

struct Folder {
    /// None once the kernel dropped the watch (folder deleted or moved): re-added on next use.
    watch: Option<WatchDescriptor>,
    /// Entries and pending inserts that pass through this folder; unwatched at zero.
    users: usize,
    /// Change events seen in this folder: an insert that saw any in the meantime is dropped.
    changes: u64,
}

/// Watches taken for one path between its open and its insert.
struct Ticket {
    folders: Vec<Arc<str>>,
    changes: u64,
}

impl Ticket {
    fn folders(&self) -> impl Iterator<Item = &str> {
        self.folders.iter().map(|f| &**f)
    }
}

impl FileCache {
    /// `capacity`: open files kept at most (each holds a descriptor).
    pub fn new(root: Root, capacity: usize) -> FileCache {
        let state = if capacity == 0 { None } else { Self::start(capacity) };
        FileCache { root, state, capacity }
    }

    fn start(capacity: usize) -> Option<Mutex<State>> {
        match Inotify::init() {
            Ok(inotify) => Some(Mutex::new(State {
                inotify,
                events: vec![0; 16 << 10],
                entries: HashMap::new(),
                keys: Vec::new(),
                folders: HashMap::new(),
                by_watch: HashMap::new(),
                rng: fastrand::Rng::new(),
            })),
            Err(e) => {
                tracing::warn!(error = %e, capacity, "inotify unavailable: files are opened for every request");
                None
            }
        }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Opens `relative` beneath the root, from the cache when it holds the path.
    pub fn open(&self, relative: &str) -> io::Result<Opened> {
        if let Some(state) = self.lock() {
            if let Some(e) = state.entries.get(relative) {
                return Ok(Opened::File { file: e.file.clone(), len: e.len, mtime: e.mtime });
            }
        }
        let (file, direct) = self.root.open_resolving(relative)?;
        let opened = classify(file)?;
        if let (Opened::File { file, .. }, true) = (&opened, direct) {
            self.remember(relative, file);
        }
        Ok(opened)
    }

    /// Applies the changes the kernel reported so far: closes files replaced or deleted since.
    pub fn apply_changes(&self) {
        drop(self.lock());
    }

    /// Closes every cached file.
    pub fn clear(&self) {
        if let Some(mut state) = self.lock() {
            state.forget_under("");
        }
    }

    /// Open files held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |s| s.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state with every change the kernel reported so far applied.
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        let mut state = self.state.as_ref()?.lock().ok()?;
        state.apply_pending_changes();
        Some(state)
    }

    /// Caches a file opened by a path that crossed no symlink. The file was opened before its
    /// folders were watched, so once they are, the path must still name the same file; any
    /// change after that is an event, and an insert that saw one is dropped.
    fn remember(&self, relative: &str, file: &Arc<File>) {
        if !on_local_disk(file) {
            return;
        }
        let Some(ticket) = self.lock().and_then(|mut s| s.watch(&self.root, relative)) else { return };
        let meta = file
            .metadata()
            .ok()
            .filter(|m| m.is_file() && self.root.identity_of(relative).ok() == Some((m.dev(), m.ino())));
        let Some(mut state) = self.lock() else { return };
        match meta {
            Some(meta) if state.unchanged(&ticket) => {
                state.insert(relative, file.clone(), meta.len(), meta.mtime(), ticket, self.capacity)
            }
            _ => state.release(ticket.folders()),
        }
    }
}

/// Whether `file` lives on a file system that only this kernel changes, so inotify sees every
/// change (ext4, XFS, btrfs, tmpfs, f2fs, ZFS, bcachefs). NFS, CIFS and FUSE are changed by
/// other hosts or processes behind its back.
fn on_local_disk(file: &File) -> bool {
    const ZFS: libc::c_long = 0x2FC1_2FC1;
    let Ok(st) = rustix::fs::fstatfs(file) else { return false };
    [
        libc::EXT4_SUPER_MAGIC,
        libc::XFS_SUPER_MAGIC,
        libc::BTRFS_SUPER_MAGIC,
        libc::TMPFS_MAGIC,
        libc::F2FS_SUPER_MAGIC,
        libc::BCACHEFS_SUPER_MAGIC,
        ZFS,
    ]
    .contains(&(st.f_type as libc::c_long))
}

/// The folders a path passes through: "a/b/c" → "", "a", "a/b".
fn folders_of(relative: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(relative.match_indices('/').map(move |(i, _)| &relative[..i]))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

impl State {
    /// Reads and applies the change events waiting in the kernel. One ioctl when there are none.
    fn apply_pending_changes(&mut self) {
        loop {
            if !rustix::io::ioctl_fionread(&self.inotify).is_ok_and(|pending| pending > 0) {
                return;
            }
            let changes: Vec<(i32, EventMask, Option<String>)> = match self.inotify.read_events(&mut self.events) {
                Ok(events) => events
                    .map(|e| (e.wd.get_watch_descriptor_id(), e.mask, e.name.map(|n| n.to_string_lossy().into_owned())))
                    .collect(),
                Err(_) => {
                    // Events we cannot read are changes we cannot place: forget everything.
                    self.forget_under("");
                    return;
                }
            };
            for (wd, mask, name) in changes {
                self.changed(wd, mask, name.as_deref());
            }
        }
    }

    fn changed(&mut self, wd: i32, mask: EventMask, name: Option<&str>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            // Events were lost: nothing cached can be trusted, and no pending insert either.
            self.forget_under("");
            self.folders.values_mut().for_each(|f| f.changes += 1);
            return;
        }
        let Some(folder) = self.by_watch.get(&wd).cloned() else { return };
        if let Some(f) = self.folders.get_mut(&folder) {
            f.changes += 1;
        }
        match name {
            Some(name) => {
                let path = join(&folder, name);
                self.forget(&path);
                if mask.contains(EventMask::ISDIR) {
                    self.forget_under(&path);
                }
            }
            None => {
                // The folder itself was deleted, moved or unmounted: its watch no longer
                // follows this path.
                self.forget_under(&folder);
                self.unwatch(&folder);
            }
        }
    }

    /// Takes a watch on every folder of `relative` (adding the missing ones).
    fn watch(&mut self, root: &Root, relative: &str) -> Option<Ticket> {
        let mut ticket = Ticket { folders: Vec::new(), changes: 0 };
        for folder in folders_of(relative) {
            let key: Arc<str> = match self.folders.get_key_value(folder) {
                Some((k, _)) => k.clone(),
                None => Arc::from(folder),
            };
            let f = self.folders.entry(key.clone()).or_insert(Folder { watch: None, users: 0, changes: 0 });
            f.users += 1;
            ticket.folders.push(key.clone());
            if f.watch.is_none() {
                match self.inotify.watches().add(root.path().join(folder), WATCHED) {
                    // A watch id already ours belongs to another path (a moved folder): refuse.
                    Ok(wd) if !self.by_watch.contains_key(&wd.get_watch_descriptor_id()) => {
                        self.by_watch.insert(wd.get_watch_descriptor_id(), key.clone());
                        f.watch = Some(wd);
                    }
                    _ => {
                        self.release(ticket.folders());
                        return None;
                    }
                }
            }
            ticket.changes += self.folders.get(&key).map_or(0, |f| f.changes);
        }
        Some(ticket)
    }

    fn unchanged(&self, ticket: &Ticket) -> bool {
        let mut sum = 0;
        for key in &ticket.folders {
            match self.folders.get(key) {
                Some(f) if f.watch.is_some() => sum += f.changes,
                _ => return false,
            }
        }
        sum == ticket.changes
    }

    fn insert(&mut self, relative: &str, file: Arc<File>, len: u64, mtime: i64, ticket: Ticket, capacity: usize) {
        if self.entries.contains_key(relative) {
            // Another request cached it meanwhile; its watches stand for both.
            self.release(ticket.folders());
            return;
        }
        while self.entries.len() >= capacity && !self.keys.is_empty() {
            let victim = self.keys[self.rng.usize(..self.keys.len())].clone();
            self.forget(&victim);
        }
        let key: Arc<str> = Arc::from(relative);
        self.keys.push(key.clone());
        self.entries.insert(key, Entry { file, len, mtime, at: self.keys.len() - 1 });
    }

    fn forget(&mut self, path: &str) {
        let Some(entry) = self.entries.remove(path) else { return };
        self.keys.swap_remove(entry.at);
        if let Some(moved) = self.keys.get(entry.at) {
            if let Some(e) = self.entries.get_mut(moved) {
                e.at = entry.at;
            }
        }
        self.release(folders_of(path));
    }

    /// Forgets every entry below `folder` ("" for all).
    fn forget_under(&mut self, folder: &str) {
        let doomed: Vec<Arc<str>> = self
            .keys
            .iter()
            .filter(|k| folder.is_empty() || (k.starts_with(folder) && k[folder.len()..].starts_with('/')))
            .cloned()
            .collect();
        for key in doomed {
            self.forget(&key);
        }
    }

    /// Drops one use of each folder; a folder nobody uses any more is unwatched.
    fn release<'a>(&mut self, folders: impl IntoIterator<Item = &'a str>) {
        for key in folders {
            let Some(f) = self.folders.get_mut(key) else { continue };
            f.users = f.users.saturating_sub(1);
            if f.users == 0 {
                self.unwatch(key);
                self.folders.remove(key);
            }
        }
    }

    /// Removes the watch on `folder` (the record stays while it has users).
    fn unwatch(&mut self, folder: &str) {
        let Some(f) = self.folders.get_mut(folder) else { return };
        if let Some(wd) = f.watch.take() {
            self.by_watch.remove(&wd.get_watch_descriptor_id());
            // Fails harmlessly when the kernel already dropped it (folder deleted).
            let _ = self.inotify.watches().remove(wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, FileCache) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("p/os")).unwrap();
        std::fs::write(d.path().join("p/os/repomd.xml"), b"old").unwrap();
        std::fs::write(d.path().join("top.txt"), b"top").unwrap();
        let cache = FileCache::new(Root::open(d.path()).unwrap(), 100);
        (d, cache)
    }

    fn read(cache: &FileCache, rel: &str) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        match cache.open(rel).unwrap() {
            Opened::File { file, len, .. } => {
                let mut buf = vec![0; len as usize];
                file.read_exact_at(&mut buf, 0).unwrap();
                buf
            }
            Opened::Dir { .. } => panic!("{rel} is a folder"),
        }
    }

    #[test]
    fn folders_of_a_path_start_at_the_root() {
        assert_eq!(folders_of("a/b/c").collect::<Vec<_>>(), ["", "a", "a/b"]);
        assert_eq!(folders_of("top").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn a_file_renamed_into_place_is_seen_by_the_next_request() {
        let (d, cache) = tree();
        assert_eq!(read(&cache, "p/os/repomd.xml"), b"old");
        assert_eq!(cache.len(), 1, "the first request caches the file");
        // What rsync --delay-updates does: write elsewhere, rename over the old name.
        std::fs::write(d.path().join("p/new.tmp"), b"newer").unwrap();
        std::fs::rename(d.path().join("p/new.tmp"), d.path().join("p/os/repomd.xml")).unwrap();
        assert_eq!(read(&cache, "p/os/repomd.xml"), b"newer");
    }

    #[test]
    fn in_place_writes_deletions_and_moved_folders_are_seen() {
        let (d, cache) = tree();
        assert_eq!(read(&cache, "top.txt"), b"top");
        std::fs::write(d.path().join("top.txt"), b"longer top").unwrap();
        assert_eq!(read(&cache, "top.txt"), b"longer top", "length and bytes follow an in-place write");

        assert_eq!(read(&cache, "p/os/repomd.xml"), b"old");
        std::fs::rename(d.path().join("p/os"), d.path().join("p/os.old")).unwrap();
        assert!(cache.open("p/os/repomd.xml").is_err(), "a moved folder takes its files with it");
        std::fs::create_dir(d.path().join("p/os")).unwrap();
        std::fs::write(d.path().join("p/os/repomd.xml"), b"again").unwrap();
        assert_eq!(read(&cache, "p/os/repomd.xml"), b"again");
        std::fs::remove_file(d.path().join("p/os/repomd.xml")).unwrap();
        assert!(cache.open("p/os/repomd.xml").is_err());
    }

    #[test]
    fn paths_through_symlinks_are_served_but_not_cached() {
        let (d, cache) = tree();
        std::os::unix::fs::symlink("os", d.path().join("p/current")).unwrap();
        assert_eq!(read(&cache, "p/current/repomd.xml"), b"old");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn capacity_bounds_open_files_and_watches_follow_entries() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..20 {
            std::fs::create_dir_all(d.path().join(format!("d{i}"))).unwrap();
            std::fs::write(d.path().join(format!("d{i}/f")), i.to_string()).unwrap();
        }
        let cache = FileCache::new(Root::open(d.path()).unwrap(), 5);
        for i in 0..20 {
            assert_eq!(read(&cache, &format!("d{i}/f")), i.to_string().as_bytes());
        }
        assert_eq!(cache.len(), 5);
        let state = cache.lock().unwrap();
        assert_eq!(state.keys.len(), 5);
        // The root and the five entries' folders, nothing left behind by evicted ones.
        assert_eq!(state.folders.len(), 6);
        assert_eq!(state.by_watch.len(), 6);
        for (i, key) in state.keys.iter().enumerate() {
            assert_eq!(state.entries[key].at, i);
        }
    }
}
