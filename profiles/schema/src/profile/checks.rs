//! Small validators shared by the sections: names, host names, host:port, URLs.

use std::net::IpAddr;

pub(super) fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// "host", "host:port", "[v6]:port" (the port optional when `port_optional`).
pub fn is_host_port(s: &str, port_optional: bool) -> bool {
    let host_ok = |h: &str| {
        let h = h.trim_matches(['[', ']']);
        is_hostname(h) || h.parse::<IpAddr>().is_ok()
    };
    if port_optional && host_ok(s) {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => host_ok(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

pub(super) fn is_url(s: &str) -> bool {
    ["http://", "https://", "file://"].iter().any(|p| s.starts_with(p) && s.len() > p.len())
}
