//! Rendered listings, reused while their folder is unchanged (same mtime to the nanosecond), so
//! a folder of tens of thousands of entries is read and rendered once per change, not per hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const MAX_ENTRIES: usize = 512;

/// (folder path, JSON?) → (folder stamp, rendered text).
type Entries = HashMap<(String, bool), (i128, Arc<String>)>;

#[derive(Default)]
pub struct ListingCache {
    map: Mutex<Entries>,
}

impl ListingCache {
    pub fn get_or_render(
        &self,
        path: &str,
        stamp: i128,
        json: bool,
        render: impl FnOnce() -> Option<String>,
    ) -> Option<Arc<String>> {
        let key = (path.to_string(), json);
        if let Ok(map) = self.map.lock() {
            if let Some((s, text)) = map.get(&key) {
                if *s == stamp {
                    return Some(text.clone());
                }
            }
        }
        // Rendering may take milliseconds; do it without holding the lock.
        let text = Arc::new(render()?);
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, (stamp, text.clone()));
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_per_stamp() {
        let cache = ListingCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            cache.get_or_render("a", 1, false, || {
                calls += 1;
                Some("x".into())
            });
        }
        assert_eq!(calls, 1);
        let again = cache.get_or_render("a", 2, false, || Some("y".into())).unwrap();
        assert_eq!(again.as_str(), "y");
    }
}
