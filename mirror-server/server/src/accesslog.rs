//! The access log: nginx's combined format plus request time, bytes actually sent and the TLS
//! protocol. Requests append their line to a shared buffer (a short lock, no wake-up, no I/O);
//! a writer thread flushes it twice a second, so the request path never waits on the disk.
//! SIGUSR1 makes the writer reopen the file (log rotation).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::timefmt::push_clf;

/// Above this much unwritten log, lines are dropped (and counted) rather than held in memory.
const MAX_PENDING: usize = 16 << 20;

pub struct Record<'a> {
    pub client: IpAddr,
    pub time: i64,
    pub request_line: &'a str,
    pub status: u16,
    pub body_bytes: u64,
    pub bytes_sent: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub duration: Duration,
    pub tls: Option<&'static str>,
}

pub fn format_line(r: &Record) -> String {
    let mut out = Vec::with_capacity(256);
    write_line(&mut out, r);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends one log line to `out` (built from pieces: this runs for every request).
pub fn write_line(out: &mut Vec<u8>, r: &Record) {
    let client = match r.client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(r.client),
        v4 => v4,
    };
    let mut number = itoa::Buffer::new();
    let _ = write!(out, "{client}");
    out.extend_from_slice(b" - - [");
    push_clf(out, r.time);
    out.extend_from_slice(b"] \"");
    push_quoted(out, r.request_line);
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(number.format(r.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(number.format(r.body_bytes).as_bytes());
    out.extend_from_slice(b" \"");
    push_quoted(out, if r.referer.is_empty() { "-" } else { r.referer });
    out.extend_from_slice(b"\" \"");
    push_quoted(out, if r.user_agent.is_empty() { "-" } else { r.user_agent });
    out.extend_from_slice(b"\" ");
    // Seconds with milliseconds, as nginx's $request_time.
    let ms = r.duration.as_millis();
    out.extend_from_slice(number.format(ms / 1000).as_bytes());
    out.push(b'.');
    let frac = number.format(1000 + ms % 1000);
    out.extend_from_slice(&frac.as_bytes()[1..]);
    out.push(b' ');
    out.extend_from_slice(number.format(r.bytes_sent).as_bytes());
    out.extend_from_slice(b" \"");
    out.extend_from_slice(r.tls.unwrap_or("-").as_bytes());
    out.extend_from_slice(b"\"\n");
}

/// Appends `s` escaped as nginx does: quotes, backslashes and control bytes as \xHH.
fn push_quoted(out: &mut Vec<u8>, s: &str) {
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if s.bytes().all(plain) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[derive(Clone)]
pub struct AccessLog {
    pending: Arc<Mutex<Vec<u8>>>,
    /// The open file; held while writing, so batches land whole and in order.
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    target: Arc<Target>,
    reopen: Arc<AtomicBool>,
}

pub static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

pub enum Target {
    Stdout,
    File(PathBuf),
    Off,
}

impl AccessLog {
    /// Opens the log and starts the thread that writes it out twice a second.
    pub fn start(target: Target) -> AccessLog {
        let log = AccessLog {
            pending: Arc::new(Mutex::new(Vec::with_capacity(1 << 20))),
            out: Arc::new(Mutex::new(open(&target))),
            target: Arc::new(target),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        let writer = log.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                writer.flush();
            })
            .ok();
        log
    }

    pub fn log(&self, r: &Record) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if pending.len() > MAX_PENDING {
            DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        write_line(&mut pending, r);
    }

    /// Asks for the file to be reopened (after logrotate moved it away).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes out everything logged so far (twice a second, and once more at shutdown).
    pub fn flush(&self) {
        let Ok(mut out) = self.out.lock() else { return };
        let batch = match self.pending.lock() {
            Ok(mut p) => std::mem::replace(&mut *p, Vec::with_capacity(1 << 20)),
            Err(_) => return,
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
        }
        let _ = out.flush();
        if self.reopen.swap(false, Ordering::Relaxed) {
            *out = open(&self.target);
        }
    }
}

pub fn open(target: &Target) -> Box<dyn Write + Send> {
    match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::Off => Box::new(std::io::sink()),
        Target::File(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the access log; lines are dropped until SIGUSR1");
                Box::new(std::io::sink())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format_with_extras() {
        let r = Record {
            client: "::ffff:192.0.2.7".parse().unwrap(),
            time: 1_700_000_000,
            request_line: "GET /fedora/x.rpm HTTP/1.1",
            status: 200,
            body_bytes: 1000,
            bytes_sent: 1234,
            referer: "",
            user_agent: "dnf/4 \"quoted\"\u{7f}",
            duration: Duration::from_millis(1500),
            tls: None,
        };
        assert_eq!(format_line(&r), "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /fedora/x.rpm HTTP/1.1\" 200 1000 \"-\" \"dnf/4 \\x22quoted\\x22\\x7F\" 1.500 1234 \"-\"\n");
    }
}
