//! Downloads from the update server. Artifacts are fetched in ranged chunks into a partial file
//! named by their SHA-256, so a cut connection, a reboot or a server restart resumes where it
//! stopped (and a republished artifact with another hash never resumes into the wrong bytes);
//! a read that brings nothing for a minute ends the download (a stalled link is noticed), and
//! every reply has a deadline in proportion to its size (four times what the rate limit allows,
//! plus a minute: a trickle is noticed too), so a server that ignores ranges and sends the whole
//! file still delivers on a slow link. A token-bucket limit keeps the box's own mirroring
//! traffic first. A finished file is hashed before it is kept.
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

/// How downloads are paced and when one is given up.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes asked for per request: large enough that request overhead is nothing, small
    /// enough that a cut costs little.
    pub chunk: u64,
    /// Added to every reply's deadline (connection set-up, a slow start).
    pub slack: Duration,
    /// The longest a single read may bring nothing.
    pub per_read: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace { chunk: 8 << 20, slack: Duration::from_secs(60), per_read: Duration::from_secs(60) }
    }
}

pub struct Fetcher {
    agent: ureq::Agent,
    base: String,
    bytes_per_second: u64,
    pace: Pace,
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
        Fetcher::with_pace(base, bwlimit_mbit, Pace::default())
    }

    pub fn with_pace(base: &str, bwlimit_mbit: u32, pace: Pace) -> Fetcher {
        let bytes_per_second = u64::from(bwlimit_mbit.max(1)) * 1_000_000 / 8;
        // No total for a body (ureq's would cut a whole-file reply on a slow link): a read that
        // brings nothing fails here, a reply slower than its deadline fails in `copy_limited`.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(pace.slack))
            .timeout_recv_body(None)
            .timeout_per_read(Some(pace.per_read))
            .user_agent(concat!("mirror-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher { agent, base: base.to_string(), bytes_per_second, pace }
    }

    /// How long a reply of `bytes` may take: four times what the rate limit allows, plus slack.
    fn deadline(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 4.0 / self.bytes_per_second as f64) + self.pace.slack
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
            let end = have + self.pace.chunk - 1;
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
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_range = header("content-range");
        let length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
        let mut body = resp.into_body().into_reader();
        match (status, content_range.as_deref().and_then(parse_content_range)) {
            (206, Some(r)) if r.from == start && r.to >= r.from && r.to <= end => {
                refuse_beyond(url, r.total, bound)?;
                let len = r.to - r.from + 1;
                let mut part = (&mut body).take(len);
                let got = self
                    .copy_limited(&mut part, file, self.deadline(len))
                    .with_context(|| format!("downloading {url} ({range})"))?;
                if got == 0 {
                    bail!("{url}: the server sent nothing for {range}; the next check resumes");
                }
                Ok(Chunk { total: Some(r.total), whole: false })
            }
            (206, _) => bail!("{url}: the server answered {range} with Content-Range {content_range:?}"),
            _ => {
                // A server that ignores ranges sends the whole file: take it from the start, no
                // more than the bound, at the rate limit, with a deadline for its whole length.
                if let Some(len) = length {
                    refuse_beyond(url, len, bound)?;
                }
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                let mut whole = (&mut body).take(bound.bytes + 1);
                let deadline = self.deadline(length.unwrap_or(bound.bytes));
                let got = self
                    .copy_limited(&mut whole, file, deadline)
                    .with_context(|| format!("downloading {url} (the server ignores ranges: the whole file)"))?;
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

    /// Copies at most `bytes_per_second` on average, sleeping when ahead of the limit; gives up
    /// when a read brings nothing for `pace.per_read` or the copy runs past `deadline`. What
    /// was written stays (the next check resumes from it where the server allows ranges).
    fn copy_limited(&self, from: &mut impl Read, to: &mut std::fs::File, deadline: Duration) -> Result<u64> {
        let started = Instant::now();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if is_timeout(&e) => {
                    bail!(
                        "the server sent nothing for {} s after {total} bytes (stalled); the next check resumes",
                        self.pace.per_read.as_secs()
                    )
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                break;
            }
            if started.elapsed() > deadline {
                bail!(
                    "{total} bytes in {:.0} s, under a quarter of the rate limit (too slow); the next check resumes",
                    started.elapsed().as_secs_f64()
                );
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

/// A read that timed out, as the socket says it or as ureq wraps its own timeouts.
fn is_timeout(e: &std::io::Error) -> bool {
    let wrapped = e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>());
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
        || matches!(wrapped, Some(ureq::Error::Timeout(_)))
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
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    /// An update server on loopback that answers connection `n` (from 0) with
    /// `answer(n, start of the range asked, stream)`; bounded to `connections`.
    fn serve(connections: usize, answer: impl Fn(usize, u64, &mut TcpStream) + Send + Sync + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().take(connections).enumerate() {
                let Ok(mut stream) = stream else { continue };
                let answer = answer.clone();
                // One thread per connection: a stalled reply must not hold up the next request.
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut start = 0;
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            start = r.split('-').next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                        }
                        line.clear();
                    }
                    answer(n, start, &mut stream);
                });
            }
        });
        base
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn artifact_of(data: &[u8]) -> Artifact {
        Artifact { name: "root.zst".into(), sha256: format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(data)) }
    }

    const QUICK: Pace = Pace { chunk: 64 << 10, slack: Duration::from_secs(1), per_read: Duration::from_secs(2) };

    #[test]
    fn a_server_that_ignores_ranges_delivers_a_file_slower_than_one_chunks_deadline() {
        // 600 kB at 1 Mbit/s takes about 5 s; one 64 KiB chunk's deadline is about 3 s.
        let data = pattern(600_000);
        let served = data.clone();
        let base = serve(4, move |_, _, out| {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", served.len());
            let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(&served));
        });
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::with_pace(&base, 1, QUICK);
        let bound = Bound { bytes: 1 << 20, what: "root slot".into() };
        let done = fetcher.artifact(dir.path(), &artifact_of(&data), &bound, &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::read(done).unwrap(), data);
    }

    #[test]
    fn a_reply_that_stalls_ends_the_check_and_the_next_one_resumes_where_it_stopped() {
        let data = pattern(200_000);
        let served = data.clone();
        let total = data.len() as u64;
        let base = serve(8, move |n, start, out| {
            let end = (start + QUICK.chunk - 1).min(total - 1);
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                end - start + 1
            );
            let body = &served[start as usize..=end as usize];
            // The second request gets half its range, then nothing (bounded: the test's
            // client gives up long before).
            let sent = if n == 1 { &body[..body.len() / 2] } else { body };
            let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(sent));
            if n == 1 {
                std::thread::sleep(Duration::from_secs(10));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::with_pace(&base, 100, QUICK);
        let bound = Bound { bytes: 1 << 20, what: "root slot".into() };
        let artifact = artifact_of(&data);
        let err = fetcher.artifact(dir.path(), &artifact, &bound, &mut |_, _| {}).unwrap_err();
        assert!(format!("{err:#}").contains("stalled"), "{err:#}");
        let partial = dir.path().join(format!("{}.partial", artifact.sha256));
        let kept = std::fs::metadata(&partial).unwrap().len();
        assert_eq!(kept, QUICK.chunk + QUICK.chunk / 2, "the first range and half the second stay");
        let done = fetcher.artifact(dir.path(), &artifact, &bound, &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::read(done).unwrap(), data);
    }

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
