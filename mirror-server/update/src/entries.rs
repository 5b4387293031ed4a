//! Boot entries on the ESP (\EFI\Linux\micromirror_*.efi, mounted at /efi): listing them with
//! systemd-boot's counters, adding one (written under a temporary name, flushed, then renamed,
//! so a half-written UKI is never an entry), and removing them. Files that are not ours are
//! never touched.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::version::Entry;

const TEMP_SUFFIX: &str = ".partial";

pub fn dir(esp: &Path) -> PathBuf {
    esp.join("EFI/Linux")
}

/// Our entries, in name order.
pub fn list(esp: &Path) -> Result<Vec<Entry>> {
    let d = dir(esp);
    let read = std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))?;
    let mut entries: Vec<Entry> =
        read.filter_map(|e| e.ok()).filter_map(|e| Entry::parse(&e.file_name().to_string_lossy())).collect();
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(entries)
}

/// Writes `uki` as entry `name`; the entry exists only once every byte is on the ESP.
pub fn add(esp: &Path, name: &str, uki: &[u8]) -> Result<()> {
    let d = dir(esp);
    let temp = d.join(format!("{name}{TEMP_SUFFIX}"));
    let mut f = std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
    f.write_all(uki).with_context(|| format!("writing {}", temp.display()))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&temp, d.join(name)).with_context(|| format!("renaming {} into place", temp.display()))?;
    sync_dir(&d)
}

/// Removes entries by file name, and any temporary file an interrupted `add` left.
pub fn remove(esp: &Path, names: &[String]) -> Result<()> {
    let d = dir(esp);
    for name in names {
        match std::fs::remove_file(d.join(name)) {
            Ok(()) => tracing::info!(entry = %name, "boot entry removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", d.join(name).display())),
        }
    }
    if let Ok(read) = std::fs::read_dir(&d) {
        for e in read.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    sync_dir(&d)
}

fn sync_dir(d: &Path) -> Result<()> {
    std::fs::File::open(d).and_then(|f| f.sync_all()).with_context(|| format!("flushing {}", d.display()))
}
