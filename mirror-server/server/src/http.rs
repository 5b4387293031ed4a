//! HTTP/1.x request heads: parsing with httparse under limits (header bytes, URI length,
//! header count), and the few header semantics the server needs. Pure: bytes in, values out.

pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_URI_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
    /// The request line as received, for the access log.
    pub line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP, or a request we cannot frame (e.g. a body on GET).
    Malformed,
    /// 414
    UriTooLong,
    /// 431
    HeadTooLarge,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge => 431,
        }
    }
}

#[derive(Debug)]
pub enum Parsed {
    /// A whole request head and the number of bytes it used.
    Complete(Request, usize),
    /// Need more bytes.
    Partial,
    Error(HeadError),
}

pub fn parse(buf: &[u8]) -> Parsed {
    // A request line longer than the URI limit is refused before the whole head arrives.
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_end > MAX_URI_BYTES + 32 {
        return Parsed::Error(HeadError::UriTooLong);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(HeadError::HeadTooLarge),
        Err(_) => return Parsed::Error(HeadError::Malformed),
    };
    let used = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() > MAX_HEAD_BYTES { Parsed::Error(HeadError::HeadTooLarge) } else { Parsed::Partial };
        }
    };
    if used > MAX_HEAD_BYTES {
        return Parsed::Error(HeadError::HeadTooLarge);
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Error(HeadError::Malformed);
    };
    if path.len() > MAX_URI_BYTES {
        return Parsed::Error(HeadError::UriTooLong);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let mut out = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            // Latin-1 header values are legal but none we read may contain them; keep lossy.
            out.push((h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()));
            continue;
        };
        out.push((h.name.to_ascii_lowercase(), value.to_string()));
    }
    let line = String::from_utf8_lossy(&buf[..line_end]).trim_end().to_string();
    let request = Request { method, target: path.to_string(), minor_version: version, headers: out, line };
    if request.has_body() {
        // We serve no method with a body; without reading it we cannot find the next request.
        return Parsed::Error(HeadError::Malformed);
    }
    if request.minor_version == 1 && request.header("host").is_none() {
        return Parsed::Error(HeadError::Malformed);
    }
    Parsed::Complete(request, used)
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some() || self.header("content-length").is_some_and(|v| v.trim() != "0")
    }

    /// HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(|v| v.to_ascii_lowercase());
        let has = |token: &str| conn.as_deref().is_some_and(|c| c.split(',').any(|t| t.trim() == token));
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Whether the client prefers JSON (listings).
    pub fn wants_json(&self) -> bool {
        self.header("accept").is_some_and(|a| a.contains("application/json"))
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> (Request, usize) {
        match parse(raw.as_bytes()) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_get_and_finds_the_next_pipelined_request() {
        let raw = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, n) = complete(raw);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/a");
        let (r2, _) = complete(&raw[n..]);
        assert_eq!(r2.method, Method::Head);
        assert_eq!(r2.line, "HEAD /b HTTP/1.1");
    }

    #[test]
    fn keep_alive_follows_the_version_defaults() {
        assert!(complete("GET / HTTP/1.1\r\nHost: x\r\n\r\n").0.keep_alive());
        assert!(!complete("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0.keep_alive());
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").0.keep_alive());
        assert!(complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").0.keep_alive());
    }

    #[test]
    fn limits_and_malformed_heads_map_to_statuses() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_URI_BYTES + 100));
        assert!(matches!(parse(long.as_bytes()), Parsed::Error(HeadError::UriTooLong)));
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "b".repeat(MAX_HEAD_BYTES));
        assert!(matches!(parse(big.as_bytes()), Parsed::Error(HeadError::HeadTooLarge)));
        for bad in [
            "\x16\x03\x01\x00garbage\r\n\r\n",
            "GET / HTTP/9.9\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        ] {
            assert!(matches!(parse(bad.as_bytes()), Parsed::Error(HeadError::Malformed)), "{bad:?}");
        }
    }
}
