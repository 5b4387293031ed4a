//! Access-log lines to records: nginx's combined format (`$remote_addr - $remote_user
//! [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`), with
//! the fleet's extras after it (`$request_time`, the TLS protocol) or mirror-server's (request
//! time, bytes sent, TLS). Hand-written: no crate parses nginx's log format, and the line is
//! simple enough to split by its quotes.

use crate::Record;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadLine(pub &'static str);

/// One line; the error says which part is not in the format.
pub fn parse_line(line: &str) -> Result<Record, BadLine> {
    let open = line.find('[').ok_or(BadLine("no [time]"))?;
    let close = line[open..].find(']').map(|i| open + i).ok_or(BadLine("no [time]"))?;
    let end = clf_time(&line[open + 1..close]).ok_or(BadLine("the time is not dd/Mon/yyyy:hh:mm:ss +zzzz"))?;
    let rest = &line[close + 1..];
    let (request, rest) = quoted(rest).ok_or(BadLine("no \"request\""))?;
    let mut nums = rest.split_whitespace();
    let _status: u16 = nums.next().and_then(|s| s.parse().ok()).ok_or(BadLine("no status"))?;
    let body: u64 =
        nums.next().and_then(|s| if s == "-" { Some(0) } else { s.parse().ok() }).ok_or(BadLine("no body bytes"))?;
    // Referer and user agent, then the extras.
    let after_numbers = rest.trim_start().splitn(3, ' ').nth(2).unwrap_or("");
    let (_, rest) = quoted(after_numbers).unwrap_or(("", after_numbers));
    let (_, extras) = quoted(rest).unwrap_or(("", rest));
    let mut duration = None;
    let mut sent = None;
    for token in extras.split_whitespace() {
        if token.contains('.') && !token.starts_with("TLS") {
            duration = token.parse().ok();
        } else if let Ok(n) = token.parse::<u64>() {
            sent = Some(n);
        }
    }
    Ok(Record { end, duration, bytes: sent.unwrap_or(body), project: project_of(request) })
}

/// `"GET /fedora/x.rpm HTTP/1.1"` → `fedora`; the root and anything unreadable → `-`.
fn project_of(request: &str) -> String {
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let first = path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("");
    if first.is_empty() {
        "-".into()
    } else {
        first.to_string()
    }
}

/// The text inside the first pair of double quotes (with `\"` inside), and what follows.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let start = s.find('"')? + 1;
    let bytes = s.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[start..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// `10/Oct/2000:13:55:36 -0700` → Unix seconds.
fn clf_time(s: &str) -> Option<f64> {
    let (dt, zone) = s.split_once(' ')?;
    let t = jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", format!("{dt} {zone}")).ok()?;
    Some(t.to_timestamp().ok()?.as_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_combined_the_fleet_s_and_ours() {
        let combined =
            r#"203.0.113.9 - - [10/Oct/2026:13:55:36 -0700] "GET /fedora/x.rpm HTTP/1.1" 200 2326 "-" "dnf/4.14""#;
        let r = parse_line(combined).unwrap();
        assert_eq!((r.bytes, r.project.as_str(), r.duration), (2326, "fedora", None), "the plain format has no time");
        assert_eq!(r.end, 1_791_665_736.0);
        let fleet = r#"203.0.113.9 - - [10/Oct/2026:13:55:36 +0000] "GET /ubuntu-releases/x.iso HTTP/2.0" 200 5000000 "-" "curl \"q\"" 12.500 TLSv1.3"#;
        let r = parse_line(fleet).unwrap();
        assert_eq!((r.bytes, r.project.as_str(), r.duration), (5_000_000, "ubuntu-releases", Some(12.5)));
        let ours =
            r#"::1 - - [10/Oct/2026:13:55:36 +0000] "GET /arch/big HTTP/1.1" 200 1048576 "-" "curl/8" 0.250 1048900 -"#;
        let r = parse_line(ours).unwrap();
        assert_eq!((r.bytes, r.duration), (1_048_900, Some(0.25)), "bytes sent win over body bytes");
        assert_eq!(
            parse_line(r#"x - - [junk] "GET / HTTP/1.1" 200 1 "-" "-""#).unwrap_err(),
            BadLine("the time is not dd/Mon/yyyy:hh:mm:ss +zzzz")
        );
        assert_eq!(
            parse_line(r#"x - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#).unwrap().project,
            "-"
        );
    }
}
