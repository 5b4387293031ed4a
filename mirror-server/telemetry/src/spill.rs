//! The spill file: framed records kept on disk while the watchtower is unreachable, bounded in
//! size (beyond the bound records are dropped and counted), replayed in order when it returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct Spill {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    len: u64,
}

impl Spill {
    /// Opens (or creates) the spill file; records a previous run left are kept for replay.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Spill> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Spill { path: path.to_path_buf(), file, max_bytes, len })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Appends one framed record; false (nothing written) when the bound would be passed.
    pub fn push(&mut self, framed: &[u8]) -> io::Result<bool> {
        if self.len + framed.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        self.file.write_all(framed)?;
        self.len += framed.len() as u64;
        Ok(true)
    }

    /// Everything spilled so far, oldest first.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.len as usize);
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Forgets the records once they are delivered.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_honours_the_bound_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill/records");
        let mut s = Spill::open(&path, 20).unwrap();
        assert!(s.push(b"5 first").unwrap());
        assert!(s.push(b"6 second").unwrap());
        assert!(!s.push(b"5 third").unwrap(), "21 bytes would pass the 20-byte bound");
        drop(s);
        let mut s = Spill::open(&path, 20).unwrap();
        assert_eq!(s.read_all().unwrap(), b"5 first6 second");
        s.clear().unwrap();
        assert!(s.is_empty());
        assert!(s.push(b"5 third").unwrap());
        assert_eq!(s.read_all().unwrap(), b"5 third");
    }
}
