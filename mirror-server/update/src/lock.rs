//! One updater at a time: the daemon's check, an operator's `mirror-update check` or `install`,
//! and the rollback after a failed boot each hold an exclusive lock on the state folder while
//! they download, write a slot or touch the ESP. A second one waits, and says who holds the
//! lock (its pid, what it does, since when); it never appends to the other's download or
//! rewrites the slot under it. The lock is the kernel's (flock): it ends with its holder, even
//! one that was killed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation};

/// Held while it lives.
pub struct UpdateLock {
    _file: std::fs::File,
}

/// Takes the lock on `state_dir` for `what` (e.g. "check"), waiting while another holds it.
pub fn take(state_dir: &Path, what: &str) -> Result<UpdateLock> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let holder = if holder.is_empty() { "another mirror-update" } else { holder };
        tracing::info!(%holder, "waiting for the update lock");
        eprintln!("mirror-update: waiting for {holder} (the update lock, {})", path.display());
        flock(&file, FlockOperation::LockExclusive).with_context(|| format!("locking {}", path.display()))?;
    }
    let me = format!("pid {} ({what}) since {}\n", std::process::id(), jiff::Timestamp::now().as_second());
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(me.as_bytes())?;
    Ok(UpdateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_for_the_first_and_then_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = take(dir.path(), "check").unwrap();
        let text = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert!(text.starts_with(&format!("pid {} (check)", std::process::id())), "{text}");
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        let second = std::thread::spawn(move || {
            let lock = take(&d, "install").unwrap();
            tx.send(()).unwrap();
            lock
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the second did not wait");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the second took the lock once it was free");
        drop(second.join().unwrap());
        let text = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert!(text.contains("(install)"), "{text}");
    }
}
