//! Fuzzes the request path's pure parsers with arbitrary bytes: the HTTP head parser, the
//! target-to-path resolver and the Range parser. They must never panic, never claim more bytes
//! than they were given, and never yield a path segment that could leave the mirror root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirror_server::{cond, http, urlpath};

fuzz_target!(|data: &[u8]| {
    if let http::Parsed::Complete(req, used) = http::parse(data) {
        assert!(used <= data.len());
        let _ = req.keep_alive();
        if let Ok(target) = urlpath::parse_target(&req.target) {
            for seg in &target.segments {
                assert!(seg != ".." && seg != "." && !seg.contains('/') && !seg.contains('\\') && !seg.contains('\0'));
                assert!(seg != urlpath::RSYNC_TMP);
            }
            let _ = target.url_path(true);
        }
        if let Some(range) = req.header("range") {
            for len in [0u64, 1, 1000, u64::MAX] {
                if let Some(ranges) = cond::parse_ranges(range, len) {
                    for (a, b) in ranges {
                        assert!(a <= b && b < len);
                    }
                }
            }
        }
    }
});
