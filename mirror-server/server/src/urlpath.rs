//! Turning a request target into a path under the mirror root, or refusing it. Everything that
//! could step outside the root (dot segments, encoded slashes, backslashes, NUL, invalid UTF-8)
//! and rsync's in-progress `.~tmp~` folders are refused here, before any file is touched.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Decoded path segments, none empty, none "." or "..".
    pub segments: Vec<String>,
    /// The path ended with '/' (a directory URL).
    pub trailing_slash: bool,
    pub query: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BadRequest,
    NotFound,
}

/// rsync's temporary folder (--delay-updates / --partial-dir); never served.
pub const RSYNC_TMP: &str = ".~tmp~";

pub fn parse_target(target: &str) -> Result<Target, Refused> {
    let without_fragment = target.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (without_fragment, None),
    };
    // Absolute-form (proxies): keep only the path.
    let path = if let Some(rest) = path.strip_prefix("http://").or_else(|| path.strip_prefix("https://")) {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        path
    };
    if !path.starts_with('/') {
        return Err(Refused::BadRequest);
    }
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let bytes = percent_decode(raw).ok_or(Refused::BadRequest)?;
        let seg = String::from_utf8(bytes).map_err(|_| Refused::BadRequest)?;
        if seg.contains('\0') {
            return Err(Refused::BadRequest);
        }
        if seg == "." {
            // "/./" is how apt asks for flat repositories: a no-op, as RFC 3986 says.
            continue;
        }
        if seg == ".." || seg.contains('/') || seg.contains('\\') || seg == RSYNC_TMP {
            return Err(Refused::NotFound);
        }
        segments.push(seg);
    }
    Ok(Target { segments, trailing_slash: path.ends_with('/'), query })
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Escapes a file name for use in a URL path segment.
pub fn percent_encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Target {
    pub fn relative_path(&self) -> String {
        self.segments.join("/")
    }

    /// The canonical URL path of this target, for redirects and listings.
    pub fn url_path(&self, trailing_slash: bool) -> String {
        let mut s = String::from("/");
        s.push_str(&self.segments.iter().map(|x| percent_encode_segment(x)).collect::<Vec<_>>().join("/"));
        if trailing_slash && !self.segments.is_empty() {
            s.push('/');
        }
        s
    }

    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_and_encoded_names() {
        let t = parse_target("/fedora/linux/a%20b.rpm?x=1").unwrap();
        assert_eq!(t.segments, vec!["fedora", "linux", "a b.rpm"]);
        assert_eq!(t.query.as_deref(), Some("x=1"));
        assert!(!t.trailing_slash);
        assert!(parse_target("/epel/").unwrap().trailing_slash);
        assert_eq!(parse_target("http://example.net/a/b").unwrap().segments, vec!["a", "b"]);
    }

    #[test]
    fn refuses_everything_that_could_escape() {
        let not_found =
            ["/../etc/passwd", "/a/%2e%2e/b", "/a/%2E%2E/%2E%2E/etc", "/a%2fb", "/a%5cb", "/a\\..\\b", "/x/.~tmp~/f"];
        for t in not_found {
            assert_eq!(parse_target(t), Err(Refused::NotFound), "{t}");
        }
        let bad = ["/a%00b", "/a%zz", "/a%f", "/%ff%fe", "relative/path", "*"];
        for t in bad {
            assert_eq!(parse_target(t), Err(Refused::BadRequest), "{t}");
        }
    }

    #[test]
    fn url_paths_are_re_encoded() {
        let t = parse_target("/a%20b/c%23d").unwrap();
        assert_eq!(t.url_path(true), "/a%20b/c%23d/");
    }
}
