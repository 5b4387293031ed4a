//! UTC timestamps in the shapes the request path writes (the access log's, HTTP's Date),
//! formatted once per second per thread; the civil calendar comes from `schema::human`.

use schema::human::civil;
pub use schema::human::{format_time, format_time_iso};

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// nginx's $time_local, in UTC: "01/May/2024:12:34:56 +0000"
pub fn format_clf(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(t);
    format!("{d:02}/{}/{y:04}:{hh:02}:{mm:02}:{ss:02} +0000", MONTHS[(m - 1) as usize])
}

/// Appends `format(t)` to `out`, formatting once per second per thread and per format (the
/// request path writes the same second thousands of times).
fn push_cached(
    cache: &'static std::thread::LocalKey<std::cell::RefCell<(i64, String)>>,
    out: &mut Vec<u8>,
    t: i64,
    format: fn(i64) -> String,
) {
    cache.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != t || c.1.is_empty() {
            *c = (t, format(t));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

thread_local! {
    static CLF: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    static HTTP_DATE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Appends nginx's $time_local for `t` (see `format_clf`).
pub fn push_clf(out: &mut Vec<u8>, t: i64) {
    push_cached(&CLF, out, t, format_clf);
}

/// Appends the HTTP date (IMF-fixdate) of `t`, e.g. "Tue, 14 Nov 2023 22:13:20 GMT".
pub fn push_http_date(out: &mut Vec<u8>, t: i64) {
    push_cached(&HTTP_DATE, out, t, format_http_date);
}

pub fn format_http_date(t: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_clf(1_700_000_000), "14/Nov/2023:22:13:20 +0000");
        let mut out = b"x ".to_vec();
        push_http_date(&mut out, 1_700_000_000);
        push_http_date(&mut out, 1_700_000_001);
        assert_eq!(out, b"x Tue, 14 Nov 2023 22:13:20 GMTTue, 14 Nov 2023 22:13:21 GMT");
    }
}
