//! Pure disk-image assembly: the GPT layout, the FAT32 ESP, the Unified Kernel Image. It lays
//! out bytes and knows nothing of sites, profiles or distributions; the caller (xtask) decides
//! what goes in. No root, no mounts, no external commands: everything is unit-tested.

pub mod digest;
pub mod disk;
pub mod esp;
pub mod uki;
pub mod version;
pub mod zeros_frame;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("disk layout: {0}")]
    Layout(String),
    #[error("FAT: {0}")]
    Fat(String),
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("UKI: {0}")]
    Uki(String),
}
