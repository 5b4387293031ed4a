//! One request as an RFC 5424 syslog message with structured data, framed by octet counting
//! for syslog over TLS (RFC 5425 §4.3: "LEN SP MSG"). Pure formatting; no I/O.

use std::fmt::Write;

use super::Record;

/// Private enterprise number 32473 is reserved for examples and documentation (RFC 5612);
/// the watchtower keys on the SD-ID, not on the number.
pub const SD_ID: &str = "request@32473";
/// facility local0 (16), severity informational (6).
const PRI: u8 = 16 * 8 + 6;

/// The client's autonomous system, when an ASN database is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asn {
    pub number: u32,
    pub organization: String,
}

/// The RFC 5424 message for one request.
pub fn format(r: &Record, hostname: &str, asn: Option<&Asn>) -> String {
    let mut out = String::with_capacity(384);
    let _ = write!(
        out,
        "<{PRI}>1 {} {} mirror-server - request [{SD_ID}",
        rfc3339_micros(r.time_us),
        header_field(hostname)
    );
    param(&mut out, "client", &r.client.to_string());
    param(&mut out, "project", r.project.as_deref().unwrap_or("-"));
    param(&mut out, "release", r.release.as_deref().unwrap_or("-"));
    if let Some(a) = asn {
        param(&mut out, "asn", &a.number.to_string());
        param(&mut out, "as_org", &a.organization);
    }
    param(&mut out, "status", &r.status.to_string());
    param(&mut out, "bytes", &r.bytes_sent.to_string());
    param(&mut out, "duration_ms", &format!("{:.3}", r.duration.as_secs_f64() * 1000.0));
    param(&mut out, "tls", r.tls.unwrap_or("-"));
    param(&mut out, "user_agent", &r.user_agent);
    out.push_str("] ");
    // MSG: the path, for humans reading the raw stream.
    out.push_str(&r.path);
    out
}

/// Octet-counted framing: the message length in bytes, a space, the message.
pub fn frame(msg: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

/// Splits a buffer of framed messages; returns the messages and the bytes of a trailing partial
/// frame (none in a well-formed spill file).
pub fn unframe(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(space) = buf[at..].iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&buf[at..at + space]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            break;
        };
        let start = at + space + 1;
        if start + len > buf.len() {
            break;
        }
        out.push(&buf[start..start + len]);
        at = start + len;
    }
    (out, buf.len() - at)
}

/// SD-PARAM: name="value" with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn param(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " {name}=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Header fields are printable US-ASCII without spaces; anything else becomes '_'.
fn header_field(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(255).collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// "2026-11-25T03:57:38.123456Z" from microseconds since the epoch.
pub fn rfc3339_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, mo, d, h, mi, s) = schema::human::civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> Record {
        Record {
            time_us: 1_795_579_001_123_456,
            client: "2001:db8::7".parse().unwrap(),
            path: "/fedora/linux/releases/41/x.rpm".into(),
            project: Some("fedora".into()),
            release: Some("41".into()),
            status: 200,
            bytes_sent: 4096,
            duration: Duration::from_micros(1500),
            user_agent: "dnf/4 \"quoted\" ]bracket\\".into(),
            tls: Some("TLSv1.3"),
        }
    }

    #[test]
    fn formats_rfc5424_with_escaped_structured_data() {
        let asn = Asn { number: 64496, organization: "Example AS".into() };
        let msg = format(&record(), "mirror.example.net", Some(&asn));
        assert!(
            msg.starts_with(
                "<134>1 2026-11-25T03:56:41.123456Z mirror.example.net mirror-server - request [request@32473 "
            ),
            "{msg}"
        );
        assert!(
            msg.contains(
                " client=\"2001:db8::7\" project=\"fedora\" release=\"41\" asn=\"64496\" as_org=\"Example AS\""
            ),
            "{msg}"
        );
        assert!(msg.contains(" status=\"200\" bytes=\"4096\" duration_ms=\"1.500\" tls=\"TLSv1.3\""), "{msg}");
        assert!(msg.contains(r#"user_agent="dnf/4 \"quoted\" \]bracket\\"]"#), "{msg}");
        assert!(msg.ends_with("] /fedora/linux/releases/41/x.rpm"));
        let plain = format(&Record { release: None, tls: None, ..record() }, "", None);
        assert!(
            plain.contains(" - mirror-server ") && plain.contains("release=\"-\"") && !plain.contains("asn="),
            "{plain}"
        );
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_reported() {
        let mut buf = Vec::new();
        frame("first message", &mut buf);
        frame("second ünïcode", &mut buf);
        assert!(buf.starts_with(b"13 first message"));
        let whole = buf.len();
        buf.extend_from_slice(b"40 torn");
        let (msgs, rest) = unframe(&buf);
        assert_eq!(msgs, vec![&b"first message"[..], "second ünïcode".as_bytes()]);
        assert_eq!(rest, buf.len() - whole);
    }
}
