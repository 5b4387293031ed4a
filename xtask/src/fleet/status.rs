//! `cargo xtask fleet status`: every box's metrics fetched at once (one thread per box), each box
//! bounded as a whole by the timeout (name lookup, connect, and a box that trickles its answer
//! byte by byte alike), so a dead or slow box costs the timeout and never stalls the table; then
//! one row per site.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::exposition::{self, Sample};
use super::Target;

/// What one box said, or why it said nothing.
#[derive(Debug, Clone)]
pub struct Row {
    pub target: Target,
    pub metrics: Result<Vec<Sample>, String>,
}

pub fn collect(targets: &[Target], timeout: Duration) -> Vec<Row> {
    let deadline = Instant::now() + timeout;
    // Threads of their own, not scoped: one stuck in a name lookup (which has no timeout) is
    // left behind at the deadline and ends with the program.
    let answers: Vec<mpsc::Receiver<Result<Vec<Sample>, String>>> = targets
        .iter()
        .map(|t| {
            let (tx, rx) = mpsc::channel();
            let address = t.address.clone();
            std::thread::spawn(move || {
                let _ = tx.send(fetch(&address, deadline));
            });
            rx
        })
        .collect();
    answers
        .into_iter()
        .zip(targets)
        .map(|(rx, t)| {
            let left = deadline.saturating_duration_since(Instant::now());
            let metrics = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| Err(format!("no whole answer in time ({} ms)", timeout.as_millis())));
            Row { target: t.clone(), metrics }
        })
        .collect()
}

/// GET /metrics over plain HTTP/1.0, all of it before `deadline`.
fn fetch(address: &str, deadline: Instant) -> Result<Vec<Sample>, String> {
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(String::from("no whole answer in time"))
        } else {
            Ok(d)
        }
    };
    let addr = address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(|e| e.to_string())?;
        let read = s.read(&mut buf).map_err(|e| match e.kind() {
            // What a socket's read timeout says on Linux.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "no whole answer in time".to_string(),
            _ => e.to_string(),
        });
        match read? {
            0 => break,
            n if body.len() + n > 64 << 20 => return Err("an answer over 64 MiB".into()),
            n => body.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("no status").to_string());
    }
    Ok(exposition::parse(rest))
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
}

/// The table for people, `now` in Unix seconds.
pub fn table(rows: &[Row], now: i64) -> String {
    let width = rows.iter().map(|r| r.target.site.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$}  {:<11} {:>10} {:>7} {:<8} {:>9} {:<15}  syncs (age)\n",
        "site", "reachable", "today", "p95 24h", "verdict", "cert days", "image"
    );
    for r in rows {
        let site = &r.target.site;
        let m = match &r.metrics {
            Ok(m) => m,
            Err(e) => {
                out.push_str(&format!("{site:<width$}  {:<11} ({}: {e})\n", "no", r.target.address));
                continue;
            }
        };
        let today: f64 = m.iter().filter(|s| s.name == "micromirror_http_sent_today_bytes").map(|s| s.value).sum();
        let p95 = m
            .iter()
            .find(|s| {
                s.name == "micromirror_link_utilisation_ratio"
                    && s.labels.get("window").map(String::as_str) == Some("24h")
                    && s.labels.get("stat").map(String::as_str) == Some("p95")
            })
            .map_or("-".to_string(), |s| format!("{:.1} %", s.value * 100.0));
        let verdict = m
            .iter()
            .find(|s| s.name == "micromirror_capacity_verdict")
            .and_then(|s| s.labels.get("verdict").cloned())
            .unwrap_or_else(|| "-".into());
        let cert = value(m, "micromirror_tls_certificate_expiry_timestamp_seconds", None)
            .map_or("-".to_string(), |t| format!("{:.0}", (t - now as f64) / 86_400.0));
        let image = m
            .iter()
            .find(|s| s.name == "micromirror_update_info")
            .and_then(|s| s.labels.get("running").cloned())
            .unwrap_or_else(|| "-".into());
        let syncs: Vec<String> = m
            .iter()
            .filter(|s| s.name == "micromirror_sync_last_success_timestamp_seconds")
            .map(|s| {
                let p = s.labels.get("project").map_or("?", String::as_str);
                format!("{p} {}", schema::human::age(now - s.value as i64))
            })
            .collect();
        out.push_str(&format!(
            "{site:<width$}  {:<11} {:>10} {:>7} {:<8} {:>9} {:<15}  {}\n",
            "yes",
            schema::human::human_bytes(today as u64),
            p95,
            verdict,
            cert,
            image,
            if syncs.is_empty() { "-".to_string() } else { syncs.join(", ") }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(site: &str, address: String) -> Target {
        Target { site: site.into(), address, sponsor: String::new(), hardware: String::new(), projects: vec![] }
    }

    #[test]
    fn a_box_that_trickles_its_answer_costs_the_timeout_not_the_table() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // One byte every 100 ms, for at most 20 s: each read succeeds well inside a per-read
        // timeout, so only a bound on the whole answer ends it.
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                for _ in 0..200 {
                    if s.write_all(b"H").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let started = Instant::now();
        let rows = collect(&[target("slow", address)], Duration::from_millis(1500));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "the table waited {took:?}");
        let err = rows[0].metrics.as_ref().unwrap_err();
        assert!(err.contains("no whole answer in time"), "{err}");
    }
}
