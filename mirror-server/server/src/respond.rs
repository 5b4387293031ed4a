//! From a parsed request to a reply: method check, path resolution under the root, redirects,
//! site assets, listings, conditionals and ranges. Touches the filesystem only to open and stat;
//! a folder listing is only described here (`Body::Listing`) and rendered off the worker
//! threads by `finish`; sending bytes is the connection's job.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;

use super::cond::{self, Conditions, Decision, FileMeta};
use super::files::{self, Opened};
use super::http::{Method, Request};
use super::urlpath::{self, Refused, Target};
use super::{acme, listing, mime};
use crate::shared::Shared;

pub enum Body {
    Empty,
    /// Shared, so cached listings and assets are not copied per request.
    Bytes(Arc<[u8]>),
    /// A folder listing still to render (see `finish`).
    Listing(ListingJob),
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// multipart/byteranges: (part header, offset, len) for each range, then the closing line.
    Multipart {
        file: Arc<File>,
        parts: Vec<(Vec<u8>, u64, u64)>,
        trailer: Vec<u8>,
    },
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
    /// Content-Length: the body's size (sent for HEAD too, though the body is not).
    pub length: u64,
    /// Close the connection after this reply.
    pub close: bool,
    /// First path segment, for per-project accounting.
    pub project: Option<String>,
    /// The project's release this path belongs to (catalog rule), for accounting and telemetry.
    pub release: Option<String>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Body::Empty, length: 0, close: false, project: None, release: None }
    }

    fn bytes(status: u16, content_type: &'static str, data: impl Into<Arc<[u8]>>) -> Reply {
        let data = data.into();
        let mut r = Reply::new(status);
        r.headers.push(("Content-Type", content_type.into()));
        r.length = data.len() as u64;
        r.body = Body::Bytes(data);
        r
    }
}

/// A folder to list: what `finish` needs to render it on the blocking pool.
pub struct ListingJob {
    /// Under the root, no leading slash.
    path: String,
    /// As shown in the listing, with the trailing slash.
    url_path: String,
    json: bool,
    /// The folder's mtime: the cached render of this version is reused.
    stamp: i128,
    /// The front page rather than a listing of the root.
    front: bool,
}

/// The reply for an error status, with the site's 404 page where there is one.
pub fn error(shared: &Shared, status: u16) -> Reply {
    if status == 404 {
        if let Some(page) = shared.assets.get("404.html") {
            return Reply::bytes(404, "text/html; charset=utf-8", page.clone());
        }
    }
    let text = format!("{status} {}\n", super::http::reason(status));
    Reply::bytes(status, "text/plain; charset=utf-8", text.into_bytes())
}

pub fn handle(shared: &Shared, req: &Request) -> Reply {
    if let Method::Other(_) = req.method {
        let mut r = error(shared, 405);
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    if let Some(answer) = req.target.strip_prefix(acme::CHALLENGE_PREFIX).and_then(|t| shared.challenges.answer(t)) {
        return Reply::bytes(200, "application/octet-stream", answer.into_bytes());
    }
    let target = match urlpath::parse_target(&req.target) {
        Ok(t) => t,
        Err(Refused::BadRequest) => return error(shared, 400),
        Err(Refused::NotFound) => return error(shared, 404),
    };
    if let Some(asset) = site_asset(shared, &target) {
        return asset;
    }
    let mut reply = match shared.files.open(&target.relative_path()) {
        Ok(Opened::File { file, len, mtime }) => {
            if target.trailing_slash {
                error(shared, 404)
            } else {
                file_reply(req, &target, file, FileMeta { len, mtime })
            }
        }
        Ok(Opened::Dir { stamp, .. }) => dir_reply(shared, req, &target, stamp),
        Err(_) => error(shared, 404),
    };
    reply.project = target.segments.first().cloned();
    if let Some(project) = &reply.project {
        reply.release = shared.releases.release_of(project, &target.relative_path());
    }
    reply
}

/// /favicon.ico, /robots.txt and the listing stylesheet come from the site's assets, never
/// from the mirror tree.
fn site_asset(shared: &Shared, target: &Target) -> Option<Reply> {
    let name = match target.segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["favicon.ico"] => "favicon.ico",
        ["robots.txt"] => "robots.txt",
        [".micromirror", "listing.css"] => "listing.css",
        _ => return None,
    };
    let data = shared.assets.get(name)?;
    let mut r = Reply::bytes(200, mime::content_type(name), data.clone());
    r.headers.push(("Cache-Control", "max-age=3600".into()));
    Some(r)
}

fn file_reply(req: &Request, target: &Target, file: Arc<File>, meta: FileMeta) -> Reply {
    let name = target.segments.last().map(String::as_str).unwrap_or("");
    let content_type = mime::content_type(name);
    let conditions = Conditions {
        if_none_match: req.header("if-none-match"),
        if_modified_since: req.header("if-modified-since"),
        if_range: req.header("if-range"),
        range: req.header("range"),
    };
    let mut r = Reply::new(200);
    let etag = meta.etag();
    let decision = cond::decide(&conditions, &meta, &etag);
    r.headers.push(("Last-Modified", meta.last_modified().into()));
    r.headers.push(("ETag", etag.into()));
    r.headers.push(("Accept-Ranges", "bytes".into()));
    match decision {
        Decision::NotModified => r.status = 304,
        Decision::Full => {
            r.headers.push(("Content-Type", content_type.into()));
            r.length = meta.len;
            r.body = Body::File { file, offset: 0, len: meta.len };
        }
        Decision::Partial(ranges) if ranges.len() == 1 => {
            let (a, b) = ranges[0];
            r.status = 206;
            r.headers.push(("Content-Type", content_type.into()));
            r.headers.push(("Content-Range", format!("bytes {a}-{b}/{}", meta.len).into()));
            r.length = b - a + 1;
            r.body = Body::File { file, offset: a, len: b - a + 1 };
        }
        Decision::Partial(ranges) => {
            let boundary = format!("{:016x}", meta.mtime as u64 ^ meta.len.rotate_left(17));
            let parts: Vec<(Vec<u8>, u64, u64)> = ranges
                .iter()
                .map(|&(a, b)| {
                    let head = format!(
                        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                        meta.len
                    );
                    (head.into_bytes(), a, b - a + 1)
                })
                .collect();
            let trailer = format!("\r\n--{boundary}--\r\n").into_bytes();
            r.status = 206;
            r.headers.push(("Content-Type", format!("multipart/byteranges; boundary={boundary}").into()));
            r.length = parts.iter().map(|(h, _, l)| h.len() as u64 + l).sum::<u64>() + trailer.len() as u64;
            r.body = Body::Multipart { file, parts, trailer };
        }
        Decision::Unsatisfiable => {
            r.status = 416;
            r.headers.retain(|(n, _)| *n != "ETag" && *n != "Last-Modified");
            r.headers.push(("Content-Range", format!("bytes */{}", meta.len).into()));
            r.headers.push(("Content-Type", "text/plain; charset=utf-8".into()));
            let text: &[u8] = b"416 Range Not Satisfiable\n";
            r.length = text.len() as u64;
            r.body = Body::Bytes(text.into());
        }
    }
    r
}

fn dir_reply(shared: &Shared, req: &Request, target: &Target, stamp: i128) -> Reply {
    if !target.trailing_slash && !target.segments.is_empty() {
        let mut location = target.url_path(true);
        if let Some(q) = &target.query {
            location.push('?');
            location.push_str(q);
        }
        let mut r = Reply::bytes(
            301,
            "text/html; charset=utf-8",
            format!("<a href=\"{}\">moved here</a>\n", listing::escape(&location)).into_bytes(),
        );
        r.headers.push(("Location", location.into()));
        return r;
    }
    let index = if target.segments.is_empty() {
        "index.html".to_string()
    } else {
        format!("{}/index.html", target.relative_path())
    };
    if let Ok(Opened::File { file, len, mtime }) = shared.files.open(&index) {
        let mut t = target.clone();
        t.segments.push("index.html".into());
        return file_reply(req, &t, file, FileMeta { len, mtime });
    }
    let json = req.wants_json() || target.query_param("format") == Some("json");
    let mut r = Reply::new(200);
    r.headers.push(("Content-Type", if json { "application/json" } else { "text/html; charset=utf-8" }.into()));
    r.headers.push(("Vary", "Accept".into()));
    // The root without an index.html is the front page (status changes without the folder's
    // mtime moving, so a render is kept for a minute); `?format=json` still lists the folder.
    let front = target.segments.is_empty() && !json && !shared.front.is_empty();
    let stamp = if front { now_seconds() as i128 / 60 } else { stamp };
    r.body =
        Body::Listing(ListingJob { path: target.relative_path(), url_path: target.url_path(true), json, stamp, front });
    r
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Completes a reply that `handle` left unfinished: renders a folder listing (once per folder
/// version, on the blocking pool, however many clients ask) or answers 404 when the folder
/// cannot be read. Other replies pass unchanged.
pub async fn finish(shared: &Arc<Shared>, reply: Reply) -> Reply {
    let Body::Listing(job) = &reply.body else { return reply };
    let render = {
        let (shared, path, url_path, json) = (shared.clone(), job.path.clone(), job.url_path.clone(), job.json);
        let front = job.front;
        move || {
            if front {
                let hosted: Vec<_> = shared
                    .front
                    .iter()
                    .map(|p| (p.clone(), schema::status::read(&shared.status_dir, &p.name)))
                    .collect();
                return Some(crate::front::html(&shared.site_view(), &hosted, now_seconds()).into_bytes());
            }
            let entries = match files::read_entries(shared.files.root(), &path) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot list folder");
                    return None;
                }
            };
            let text = if json {
                listing::json(&url_path, &entries)
            } else {
                listing::html(&shared.site_view(), &url_path, &entries)
            };
            Some(text.into_bytes())
        }
    };
    // The front page has its own cache entry, beside the root's listing.
    let key = if job.front { "\0front".to_string() } else { job.path.clone() };
    match shared.listings.get_or_render(&key, job.stamp, job.json, render).await {
        Some(text) => Reply { length: text.len() as u64, body: Body::Bytes(text), ..reply },
        None => Reply { project: reply.project, release: reply.release, ..error(shared, 404) },
    }
}
