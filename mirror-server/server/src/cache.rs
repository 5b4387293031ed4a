//! Rendered listings, reused while their folder is unchanged (same mtime to the nanosecond), so
//! a folder of tens of thousands of entries is read and rendered once per change, not per hit.
//! The render runs on the blocking pool (reading a big folder can take a second when its inodes
//! are not cached), and only once however many clients ask for the new version at the same time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

const MAX_ENTRIES: usize = 512;

/// A render's outcome: the body, or None when the folder could not be read.
type Rendered = Option<Arc<[u8]>>;

/// (folder path, JSON?) → (folder stamp, the render of that version, done or under way).
type Entries = HashMap<(String, bool), (i128, Arc<OnceCell<Rendered>>)>;

#[derive(Default)]
pub struct ListingCache {
    map: Mutex<Entries>,
}

impl ListingCache {
    /// The listing of `path` at `stamp`, rendered by `render` on the blocking pool unless it is
    /// cached or already being rendered.
    pub async fn get_or_render(
        &self,
        path: &str,
        stamp: i128,
        json: bool,
        render: impl FnOnce() -> Option<Vec<u8>> + Send + 'static,
    ) -> Rendered {
        let key = (path.to_string(), json);
        let cell = {
            let Ok(mut map) = self.map.lock() else { return None };
            match map.get(&key) {
                Some((s, cell)) if *s == stamp => cell.clone(),
                _ => {
                    if map.len() >= MAX_ENTRIES {
                        map.clear();
                    }
                    let cell = Arc::new(OnceCell::new());
                    map.insert(key.clone(), (stamp, cell.clone()));
                    cell
                }
            }
        };
        let rendered = cell
            .get_or_init(|| async move { tokio::task::spawn_blocking(render).await.ok().flatten().map(Arc::from) })
            .await
            .clone();
        if rendered.is_none() {
            // Not kept: the next request tries again.
            if let Ok(mut map) = self.map.lock() {
                if map.get(&key).is_some_and(|(_, c)| Arc::ptr_eq(c, &cell)) {
                    map.remove(&key);
                }
            }
        }
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renders_once_per_stamp_however_many_ask_at_once() {
        let cache = Arc::new(ListingCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let ask = |stamp: i128, text: &'static str| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_render("a", stamp, false, move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Some(text.as_bytes().to_vec())
                    })
                    .await
            })
        };
        let asks: Vec<_> = (0..8).map(|_| ask(1, "x")).collect();
        for a in asks {
            assert_eq!(a.await.unwrap().as_deref(), Some(&b"x"[..]));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "eight clients, one render");
        assert_eq!(ask(2, "y").await.unwrap().as_deref(), Some(&b"y"[..]), "a new stamp renders anew");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_render_is_tried_again() {
        let cache = ListingCache::default();
        assert_eq!(cache.get_or_render("a", 1, false, || None).await, None);
        let again = cache.get_or_render("a", 1, false, || Some(b"ok".to_vec())).await;
        assert_eq!(again.as_deref(), Some(&b"ok"[..]));
    }
}
