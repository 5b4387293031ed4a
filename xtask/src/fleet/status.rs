//! `cargo xtask fleet status`: every box's metrics fetched at once (one thread per box, each
//! bounded by the timeout for connect, write and read), so a dead box costs its timeout and
//! never stalls the table; then one row per site.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::exposition::{self, Sample};
use super::Target;

/// What one box said, or why it said nothing.
#[derive(Debug, Clone)]
pub struct Row {
    pub target: Target,
    pub metrics: Result<Vec<Sample>, String>,
}

pub fn collect(targets: &[Target], timeout: Duration) -> Vec<Row> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| scope.spawn(move || Row { target: t.clone(), metrics: fetch(&t.address, timeout) }))
            .collect();
        handles
            .into_iter()
            .zip(targets)
            .map(|(h, t)| h.join().unwrap_or_else(|_| Row { target: t.clone(), metrics: Err("crashed".into()) }))
            .collect()
    })
}

/// GET /metrics over plain HTTP/1.0, everything bounded by `timeout`.
fn fetch(address: &str, timeout: Duration) -> Result<Vec<Sample>, String> {
    let addr = address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.take(64 << 20).read_to_end(&mut body).map_err(|e| e.to_string())?;
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
                out.push_str(&format!("{site:<width$}  {:<11} ({e})\n", "no"));
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
