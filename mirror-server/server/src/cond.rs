//! Conditional requests and byte ranges (RFC 9110 §13, §14), decided from the request headers
//! and a file's length, mtime and ETag. Pure: the connection code acts on the decision.

use std::time::UNIX_EPOCH;

/// Above this many ranges a request gets the whole file (as nginx's max_ranges would).
const MAX_RANGES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub mtime: i64,
}

impl FileMeta {
    /// nginx's strong ETag: "hex(mtime)-hex(size)".
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.mtime, self.len)
    }

    pub fn last_modified(&self) -> String {
        super::timefmt::format_http_date(self.mtime)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NotModified,
    Full,
    /// Inclusive byte ranges, in request order.
    Partial(Vec<(u64, u64)>),
    Unsatisfiable,
}

/// The request headers that matter here.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub range: Option<&'a str>,
}

/// `etag` is `meta.etag()`, which the caller has already made for the reply.
pub fn decide(c: &Conditions, meta: &FileMeta, etag: &str) -> Decision {
    if let Some(inm) = c.if_none_match {
        if etag_list_matches(inm, etag) {
            return Decision::NotModified;
        }
    } else if let Some(ims) = c.if_modified_since.and_then(parse_date) {
        if meta.mtime <= ims {
            return Decision::NotModified;
        }
    }
    let Some(range) = c.range else {
        return Decision::Full;
    };
    if let Some(if_range) = c.if_range {
        let still_same = if if_range.trim_start().starts_with('"') {
            if_range.trim() == etag
        } else {
            parse_date(if_range) == Some(meta.mtime)
        };
        if !still_same {
            return Decision::Full;
        }
    }
    match parse_ranges(range, meta.len) {
        None => Decision::Full,
        Some(r) if r.is_empty() => Decision::Unsatisfiable,
        Some(r) if r.len() > MAX_RANGES => Decision::Full,
        Some(r) => Decision::Partial(r),
    }
}

fn etag_list_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

fn parse_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// `None`: not a byte-range header we understand (serve the whole file).
/// `Some(empty)`: syntactically fine but no range overlaps the file (416).
pub fn parse_ranges(header: &str, len: u64) -> Option<Vec<(u64, u64)>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let range = if a.is_empty() {
            let suffix: u64 = b.parse().ok()?;
            if suffix == 0 || len == 0 {
                continue;
            }
            (len.saturating_sub(suffix), len - 1)
        } else {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() { u64::MAX } else { b.parse().ok()? };
            if end < start {
                return None;
            }
            if start >= len {
                continue;
            }
            (start, end.min(len - 1))
        };
        out.push(range);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: FileMeta = FileMeta { len: 1000, mtime: 1_700_000_000 };

    fn with_range(r: &str) -> Decision {
        decide(&Conditions { range: Some(r), ..Default::default() }, &META, &META.etag())
    }

    #[test]
    fn etag_is_nginx_style() {
        assert_eq!(META.etag(), "\"6553f100-3e8\"");
        assert_eq!(META.last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn ranges_single_suffix_open_multiple_and_unsatisfiable() {
        assert_eq!(with_range("bytes=0-99"), Decision::Partial(vec![(0, 99)]));
        assert_eq!(with_range("bytes=-100"), Decision::Partial(vec![(900, 999)]));
        assert_eq!(with_range("bytes=990-"), Decision::Partial(vec![(990, 999)]));
        assert_eq!(with_range("bytes=995-2000"), Decision::Partial(vec![(995, 999)]));
        assert_eq!(with_range("bytes=0-0, 10-19"), Decision::Partial(vec![(0, 0), (10, 19)]));
        assert_eq!(with_range("bytes=1000-"), Decision::Unsatisfiable);
        assert_eq!(with_range("bytes=5-1"), Decision::Full);
        assert_eq!(with_range("items=0-1"), Decision::Full);
    }

    #[test]
    fn conditionals() {
        let inm = |v| decide(&Conditions { if_none_match: Some(v), ..Default::default() }, &META, &META.etag());
        assert_eq!(inm("\"6553f100-3e8\""), Decision::NotModified);
        assert_eq!(inm("\"x\", W/\"6553f100-3e8\""), Decision::NotModified);
        assert_eq!(inm("\"other\""), Decision::Full);
        let ims = |v| decide(&Conditions { if_modified_since: Some(v), ..Default::default() }, &META, &META.etag());
        assert_eq!(ims("Tue, 14 Nov 2023 22:13:20 GMT"), Decision::NotModified);
        assert_eq!(ims("Tue, 14 Nov 2023 22:13:19 GMT"), Decision::Full);
        let if_range = |v| {
            decide(
                &Conditions { if_range: Some(v), range: Some("bytes=0-9"), ..Default::default() },
                &META,
                &META.etag(),
            )
        };
        assert_eq!(if_range("\"6553f100-3e8\""), Decision::Partial(vec![(0, 9)]));
        assert_eq!(if_range("\"stale\""), Decision::Full);
        assert_eq!(if_range("Tue, 14 Nov 2023 22:13:20 GMT"), Decision::Partial(vec![(0, 9)]));
        assert_eq!(if_range("Mon, 13 Nov 2023 22:13:20 GMT"), Decision::Full);
    }
}
