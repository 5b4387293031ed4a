//! The access log: nginx's combined format plus request time, bytes actually sent and the TLS
//! protocol. Lines go through a bounded channel to a writer task, so the request path never
//! waits on the disk; the file is reopened on SIGUSR1 for rotation.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::timefmt::format_clf;

pub struct Record {
    pub client: IpAddr,
    pub time: i64,
    pub request_line: String,
    pub status: u16,
    pub body_bytes: u64,
    pub bytes_sent: u64,
    pub referer: String,
    pub user_agent: String,
    pub duration: Duration,
    pub tls: Option<&'static str>,
}

pub fn format_line(r: &Record) -> String {
    let client = match r.client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(r.client),
        v4 => v4,
    };
    format!(
        "{client} - - [{}] \"{}\" {} {} \"{}\" \"{}\" {:.3} {} \"{}\"\n",
        format_clf(r.time),
        quote(&r.request_line),
        r.status,
        r.body_bytes,
        quote(if r.referer.is_empty() { "-" } else { &r.referer }),
        quote(if r.user_agent.is_empty() { "-" } else { &r.user_agent }),
        r.duration.as_secs_f64(),
        r.bytes_sent,
        r.tls.unwrap_or("-"),
    )
}

/// Escapes as nginx does: quotes, backslashes and control bytes as \xHH.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

pub static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

pub enum Target {
    Stdout,
    File(PathBuf),
    Off,
}

impl AccessLog {
    /// Starts the writer task. `reopen` fires on SIGUSR1.
    pub fn start(target: Target, mut reopen: mpsc::Receiver<()>) -> AccessLog {
        let (tx, mut rx) = mpsc::channel::<String>(65_536);
        tokio::spawn(async move {
            let mut out = open(&target);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => { let _ = out.write_all(line.as_bytes()); }
                        None => { let _ = out.flush(); return; }
                    },
                    _ = tick.tick() => { let _ = out.flush(); }
                    Some(()) = reopen.recv() => { let _ = out.flush(); out = open(&target); }
                }
            }
        });
        AccessLog { tx }
    }

    pub fn log(&self, r: &Record) {
        if self.tx.try_send(format_line(r)).is_err() {
            DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open(target: &Target) -> Box<dyn Write + Send> {
    match target {
        Target::Stdout => Box::new(std::io::BufWriter::with_capacity(64 << 10, std::io::stdout())),
        Target::Off => Box::new(std::io::sink()),
        Target::File(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(64 << 10, f)),
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
            request_line: "GET /fedora/x.rpm HTTP/1.1".into(),
            status: 200,
            body_bytes: 1000,
            bytes_sent: 1234,
            referer: String::new(),
            user_agent: "dnf/4 \"quoted\"".into(),
            duration: Duration::from_millis(1500),
            tls: None,
        };
        assert_eq!(format_line(&r), "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /fedora/x.rpm HTTP/1.1\" 200 1000 \"-\" \"dnf/4 \\x22quoted\\x22\" 1.500 1234 \"-\"\n");
    }
}
