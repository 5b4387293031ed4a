//! Downloads from the update server. Artifacts are fetched in ranged chunks into a partial file
//! named by their SHA-256, so a cut connection, a reboot or a server restart resumes where it
//! stopped (and a republished artifact with another hash never resumes into the wrong bytes);
//! every chunk has its own deadline, so a stalled link is noticed; a token-bucket limit keeps
//! the box's own mirroring traffic first. A finished file is hashed before it is kept.
//!
//! Nothing the server says can make a download bigger than what it is for (`Bound`: the slot
//! the root goes into, the ESP's free space for the UKI): a total beyond it is refused before a
//! byte is written, a reply longer than the range asked for is cut at the range, and a reply
//! that brings nothing ends the check (the next one resumes).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::feed::Artifact;

/// Bytes asked for per request: small enough that one deadline bounds a stall, large enough
/// that request overhead is nothing.
const CHUNK: u64 = 8 << 20;

pub struct Fetcher {
    agent: ureq::Agent,
    base: String,
    bytes_per_second: u64,
}

/// Progress of one artifact: (bytes on disk, total when known).
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

/// The most an artifact can legitimately be, and what sets it (for the error).
#[derive(Debug, Clone)]
pub struct Bound {
    pub bytes: u64,
    pub what: String,
}

impl Fetcher {
    pub fn new(base: &str, bwlimit_mbit: u32) -> Fetcher {
        let bytes_per_second = u64::from(bwlimit_mbit.max(1)) * 1_000_000 / 8;
        // The deadline for one chunk: four times what the limit allows, plus a minute.
        let chunk_time = Duration::from_secs(CHUNK * 4 / bytes_per_second + 60);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(chunk_time))
            .user_agent(concat!("mirror-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher { agent, base: base.to_string(), bytes_per_second }
    }

    fn url(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// A small file (SHA256SUMS, its signature), whole.
    pub fn small(&self, name: &str) -> Result<Vec<u8>> {
        let url = self.url(name);
        let resp = self.agent.get(&url).call().with_context(|| format!("GET {url}"))?;
        resp.into_body().with_config().limit(4 << 20).read_to_vec().with_context(|| format!("reading {url}"))
    }

    /// Fetches `artifact` into `dir` (resuming a partial download), checks its SHA-256, and
    /// returns the finished file. A file whose hash does not match is deleted, never kept.
    pub fn artifact(&self, dir: &Path, artifact: &Artifact, bound: &Bound, progress: Progress<'_>) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let done = dir.join(&artifact.sha256);
        if done.exists() {
            return Ok(done);
        }
        let partial = dir.join(format!("{}.partial", artifact.sha256));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&partial)
            .with_context(|| format!("opening {}", partial.display()))?;
        let url = self.url(&artifact.name);
        let mut have = file.metadata()?.len();
        if have > bound.bytes {
            // Left by an updater without bounds: nothing of it can be right.
            file.set_len(0)?;
            have = 0;
        }
        if have > 0 {
            tracing::info!(file = %artifact.name, resume_at = have, "resuming a download");
        }
        loop {
            let end = have + CHUNK - 1;
            let got = self.chunk(&url, &mut file, have, end, bound)?;
            have = file.metadata()?.len();
            progress(have, got.total);
            match got.total {
                Some(total) if have >= total => break,
                None if got.whole => break,
                _ => {}
            }
        }
        file.sync_all()?;
        let actual = sha256_of(&partial)?;
        if actual != artifact.sha256 {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "{} does not match SHA256SUMS (expected {}, got {actual}); refused, nothing was written",
                artifact.name,
                artifact.sha256
            );
        }
        std::fs::rename(&partial, &done).with_context(|| format!("keeping {}", done.display()))?;
        Ok(done)
    }

    /// One ranged request, appended to `file`; says what it learned of the total size. Never
    /// writes past `end` or past the bound.
    fn chunk(&self, url: &str, file: &mut std::fs::File, start: u64, end: u64, bound: &Bound) -> Result<Chunk> {
        let range = format!("bytes={start}-{end}");
        let resp = match self.agent.get(url).header("Range", &range).call() {
            Ok(r) => r,
            // Asked past the end: the partial file is already whole (or longer: start over).
            Err(ureq::Error::StatusCode(416)) => {
                let total = self.length(url)?;
                if start > total {
                    file.set_len(0)?;
                    bail!("{url}: the partial download was longer than the file; starting over");
                }
                return Ok(Chunk { total: Some(total), whole: true });
            }
            Err(e) => return Err(e).with_context(|| format!("GET {url} ({range})")),
        };
        let status = resp.status().as_u16();
        let content_range = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = resp.into_body().into_reader();
        match (status, content_range.as_deref().and_then(parse_content_range)) {
            (206, Some(r)) if r.from == start && r.to >= r.from && r.to <= end => {
                refuse_beyond(url, r.total, bound)?;
                let mut part = (&mut body).take(r.to - r.from + 1);
                let got = self.copy_limited(&mut part, file).with_context(|| format!("downloading {url} ({range})"))?;
                if got == 0 {
                    bail!("{url}: the server sent nothing for {range}; the next check resumes");
                }
                Ok(Chunk { total: Some(r.total), whole: false })
            }
            (206, _) => bail!("{url}: the server answered {range} with Content-Range {content_range:?}"),
            _ => {
                // A server that ignores ranges sends the whole file: take it from the start, no
                // more than the bound.
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                let mut whole = (&mut body).take(bound.bytes + 1);
                let got = self.copy_limited(&mut whole, file).with_context(|| format!("downloading {url}"))?;
                if got > bound.bytes {
                    file.set_len(0)?;
                    refuse_beyond(url, got, bound)?;
                }
                Ok(Chunk { total: None, whole: true })
            }
        }
    }

    fn length(&self, url: &str) -> Result<u64> {
        let resp = self.agent.head(url).call().with_context(|| format!("HEAD {url}"))?;
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("HEAD {url}: no Content-Length"))
    }

    /// Copies at most `bytes_per_second` on average, sleeping when ahead of the limit.
    fn copy_limited(&self, from: &mut impl Read, to: &mut std::fs::File) -> Result<u64> {
        let started = Instant::now();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
            total += n as u64;
            let due = Duration::from_secs_f64(total as f64 / self.bytes_per_second as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        Ok(total)
    }
}

struct Chunk {
    total: Option<u64>,
    /// The response was the whole file.
    whole: bool,
}

/// A Content-Range: which bytes (`from` to `to`, inclusive) of a file of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub from: u64,
    pub to: u64,
    pub total: u64,
}

/// "bytes 0-99/1234" → 0, 99, 1234.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (from, to) = range.split_once('-')?;
    Some(ContentRange {
        from: from.trim().parse().ok()?,
        to: to.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
    })
}

/// An error when a file of `size` bytes cannot be what it claims to be.
fn refuse_beyond(url: &str, size: u64, bound: &Bound) -> Result<()> {
    if size > bound.bytes {
        bail!(
            "{url}: the server says the file is {size} bytes, more than {} can hold ({} bytes): refused, \
             nothing more is downloaded",
            bound.what,
            bound.bytes
        );
    }
    Ok(())
}

pub fn sha256_of(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    image::digest::sha256_hex(f).with_context(|| format!("reading {}", path.display()))
}

/// Deletes downloads other than `keep` (hash names), finished or partial.
pub fn prune(dir: &Path, keep: &[&str]) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    for e in read.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let hash = name.strip_suffix(".partial").unwrap_or(&name);
        if !keep.contains(&hash) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-99/1234"), Some(ContentRange { from: 0, to: 99, total: 1234 }));
        assert_eq!(
            parse_content_range("bytes 8388608-16777215/163355678"),
            Some(ContentRange { from: 8_388_608, to: 16_777_215, total: 163_355_678 })
        );
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
