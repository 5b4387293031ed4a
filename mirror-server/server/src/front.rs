//! The box's front page (`/` when the mirror root has no index.html): who hosts the mirror, each
//! hosted project with a link, its size and when it last synced, and how to reach it by rsync —
//! what a person visiting a mirror expects. Pure: it renders what it is given; the caller reads
//! the status files on the blocking pool and caches the page for a minute.

use std::fmt::Write;

use schema::status::{Outcome, Status};

use crate::listing::{escape, Site};

/// One hosted project as the front page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    /// The catalog name (its status file).
    pub name: String,
    pub title: String,
    /// The folder, first segment of its URLs.
    pub path: String,
    /// The box's public rsync module.
    pub rsync_module: String,
}

/// The page, `now` in Unix seconds (for "synced 3h 12m ago").
pub fn html(site: &Site, projects: &[(Hosted, Option<Status>)], now: i64) -> String {
    let mut s = String::with_capacity(1024 + projects.len() * 300);
    crate::listing::page_head(&mut s, site, &escape(site.hostname));
    let _ = write!(
        s,
        "<p>A mirror of free software, provided by <a href=\"{url}\">{sponsor}</a>. Files are served over HTTP, HTTPS and rsync.</p>\n<table>\n<thead><tr><th>Project</th><th>Last synced</th><th class=\"size\">Size</th></tr></thead>\n<tbody>\n",
        url = escape(site.sponsor_url),
        sponsor = escape(site.sponsor_name),
    );
    for (p, status) in projects {
        let (synced, size) = describe(status.as_ref(), now);
        let _ = writeln!(
            s,
            "<tr><td><a href=\"/{path}/\">{title}</a><br><small>rsync://{host}/{module}/</small></td><td>{synced}</td><td class=\"size\">{size}</td></tr>",
            path = escape(&p.path),
            title = escape(&p.title),
            host = escape(site.hostname),
            module = escape(&p.rsync_module),
        );
    }
    s.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    s
}

/// "3h 12m ago" (or why not) and the size on disk, from a project's status file.
fn describe(status: Option<&Status>, now: i64) -> (String, String) {
    let Some(st) = status else { return ("not yet".into(), "-".into()) };
    let synced = match (st.last_success, st.state) {
        (Some(t), Outcome::Running) => format!("{} ago (syncing now)", schema::human::age(now - t)),
        (Some(t), _) => format!("{} ago", schema::human::age(now - t)),
        (None, Outcome::Running) => "first sync running".into(),
        (None, _) => "not yet".into(),
    };
    let size = if st.size_bytes > 0 { schema::human::human_bytes(st.size_bytes) } else { "-".into() };
    (synced, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(name: &str) -> Hosted {
        Hosted { name: name.into(), title: format!("<{name}>"), path: name.into(), rsync_module: name.into() }
    }

    #[test]
    fn lists_each_project_with_its_sync_age_size_and_links_all_escaped() {
        let site = Site { hostname: "mm.example.net", sponsor_name: "Ex & Co", sponsor_url: "https://ex.net/" };
        let synced = Status {
            state: Outcome::Success,
            last_success: Some(1000),
            size_bytes: 3 << 30,
            ..Status::running("arch", "arch", 900)
        };
        let page = html(&site, &[(hosted("arch"), Some(synced)), (hosted("new"), None)], 1000 + 3 * 3600);
        assert!(page.contains("Hosted by <a href=\"https://ex.net/\">Ex &amp; Co</a>"), "{page}");
        assert!(page.contains("<a href=\"/arch/\">&lt;arch&gt;</a>"), "{page}");
        assert!(page.contains("rsync://mm.example.net/arch/"), "{page}");
        assert!(page.contains("3h 0m ago") && page.contains("3.0 GiB"), "{page}");
        assert!(page.contains("<a href=\"/new/\">") && page.contains("not yet"), "{page}");
        assert!(page.contains("name=\"viewport\""), "readable on a phone");
    }
}
