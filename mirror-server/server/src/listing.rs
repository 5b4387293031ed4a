//! Directory listings as HTML (for people and openSUSE's checker, which parses the links and
//! their text: the text is always the full file name) and as JSON. Pure rendering.

use std::fmt::Write;

use super::files::Entry;
use super::timefmt::{format_time, format_time_iso};
use super::urlpath::percent_encode_segment;

pub struct Site<'a> {
    pub hostname: &'a str,
    pub sponsor_name: &'a str,
    pub sponsor_url: &'a str,
}

pub fn html(site: &Site, url_path: &str, entries: &[Entry]) -> String {
    let title = format!("Index of {}", escape(url_path));
    let mut s = String::with_capacity(512 + entries.len() * 160);
    page_head(&mut s, site, &title);
    s.push_str(
        "<table>\n<thead><tr><th>Name</th><th>Last modified</th><th class=\"size\">Size</th></tr></thead>\n<tbody>\n",
    );
    if url_path != "/" {
        s.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td class=\"size\">-</td></tr>\n");
    }
    for e in entries {
        let slash = if e.is_dir { "/" } else { "" };
        let href = format!("{}{slash}", percent_encode_segment(&e.name));
        let size = if e.is_dir { "-".to_string() } else { schema::human::human_bytes(e.len) };
        let _ = writeln!(
            s,
            "<tr><td><a href=\"{href}\">{text}{slash}</a></td><td>{time}</td><td class=\"size\" title=\"{bytes}\">{size}</td></tr>",
            href = escape(&href),
            text = escape(&e.name),
            time = format_time(e.mtime),
            bytes = e.len,
        );
    }
    s.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    s
}

/// The start of every page we render (listings, the front page): doctype, viewport, the
/// stylesheet, the header with host and sponsor, and the `h1` (`title` already escaped).
pub fn page_head(s: &mut String, site: &Site, title: &str) {
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<link rel=\"stylesheet\" href=\"/.micromirror/listing.css\">\n</head>\n<body>\n<header><p class=\"host\">{host}</p><p class=\"sponsor\">Hosted by <a href=\"{url}\">{sponsor}</a></p></header>\n<h1>{title}</h1>\n",
        host = escape(site.hostname),
        url = escape(site.sponsor_url),
        sponsor = escape(site.sponsor_name),
    );
}

pub fn json(url_path: &str, entries: &[Entry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "type": if e.is_dir { "directory" } else { "file" }, "size": e.len, "mtime": format_time_iso(e.mtime)}))
        .collect();
    serde_json::json!({"path": url_path, "entries": items}).to_string()
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry { name: "a <b>.rpm".into(), is_dir: false, len: 2048, mtime: 1_700_000_000 },
            Entry { name: "repodata".into(), is_dir: true, len: 0, mtime: 0 },
        ]
    }

    #[test]
    fn html_links_carry_full_names_escaped() {
        let site = Site { hostname: "m.example.net", sponsor_name: "Ex & Co", sponsor_url: "https://example.net/" };
        let page = html(&site, "/fedora/", &entries());
        assert!(page.contains("<a href=\"a%20%3Cb%3E.rpm\">a &lt;b&gt;.rpm</a>"), "{page}");
        assert!(page.contains("<a href=\"repodata/\">repodata/</a>"));
        assert!(page.contains("Ex &amp; Co"));
        assert!(page.contains("2023-11-14 22:13"));
        assert!(page.contains("<a href=\"../\">"));
    }

    #[test]
    fn json_lists_types_and_sizes() {
        let v: serde_json::Value = serde_json::from_str(&json("/x/", &entries())).unwrap();
        assert_eq!(v["entries"][0]["size"], 2048);
        assert_eq!(v["entries"][1]["type"], "directory");
        assert_eq!(v["entries"][0]["mtime"], "2023-11-14T22:13:20Z");
    }
}
