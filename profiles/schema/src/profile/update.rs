//! `[update]`: signed image updates the box pulls by itself, installs into its free root slot,
//! and boots into inside the site's maintenance window, with automatic rollback.

use serde::{Deserialize, Serialize};

use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Update {
    /// Where this site's published updates live: the folder `cargo xtask publish` fills (its
    /// SHA256SUMS, SHA256SUMS.gpg and images), e.g. "https://mirror.example.net/micromirror/fmt2/".
    pub url: String,
    /// The OpenPGP public key (a file under profiles/) whose private half signs the updates.
    pub signing_key: String,
    /// Minutes between checks (jittered); a push on `push_topic` checks at once.
    #[serde(default = "default_check_minutes")]
    pub check_interval_minutes: u32,
    /// When the box may reboot into an installed update, in the site's time zone: "HH:MM-HH:MM"
    /// (may wrap past midnight; "00:00-24:00" is any time).
    #[serde(default = "default_window")]
    pub maintenance_window: String,
    /// A topic on the site's MQTT broker (`mirror.push.broker`) that announces new updates.
    #[serde(default)]
    pub push_topic: Option<String>,
    /// Boots a new version gets to prove itself healthy before the previous one comes back.
    #[serde(default = "default_tries")]
    pub boot_tries: u32,
    /// Download limit for update images, Mbit/s.
    #[serde(default = "default_bwlimit")]
    pub bwlimit_mbit: u32,
    /// Test sites only: this image's mirror-server refuses to start, so its health check fails
    /// (the update tests prove a failed version rolls back by itself).
    #[serde(default)]
    pub test_break_server: bool,
    /// Which wave of `cargo xtask release` this site is in: "canary" sites get a new version
    /// first, and the rest ("main", the default) only once every canary runs it blessed.
    #[serde(default)]
    pub ring: Ring,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Ring {
    Canary,
    #[default]
    Main,
}

impl Ring {
    pub fn as_str(self) -> &'static str {
        match self {
            Ring::Canary => "canary",
            Ring::Main => "main",
        }
    }
}

fn default_check_minutes() -> u32 {
    360
}
fn default_window() -> String {
    "02:00-05:00".into()
}
fn default_tries() -> u32 {
    3
}
fn default_bwlimit() -> u32 {
    100
}

/// A daily window of local time, [start, end) in minutes after midnight; `end` may be less
/// than `start` (the window wraps past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        let minutes = |hm: &str| -> Option<u32> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-')?;
        let (start, end) = (minutes(a)?, minutes(b)?);
        (start != end && start < 24 * 60).then_some(Window { start, end })
    }

    /// Whether `minute` (after local midnight) is inside the window.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window opens (0 inside it).
    pub fn wait_from(&self, minute: u32) -> u32 {
        if self.contains(minute) {
            0
        } else {
            (self.start + 24 * 60 - minute) % (24 * 60)
        }
    }
}

pub(super) fn validate(u: &Update, test_site: bool, has_push: bool, r: &mut Reporter) {
    let http = u.url.starts_with("https://") || u.url.starts_with("http://");
    if !http || !u.url.ends_with('/') || u.url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        r.error(
            "update.url",
            format!("`{}` is not the URL of a folder", u.url),
            "write the published site folder with a trailing slash, e.g. \"https://mirror.example.net/micromirror/fmt2/\"",
        );
    }
    if Window::parse(&u.maintenance_window).is_none() {
        r.error(
            "update.maintenance_window",
            format!("`{}` is not a window of the day", u.maintenance_window),
            "write local times as \"HH:MM-HH:MM\", e.g. \"02:00-05:00\" (\"00:00-24:00\" for any time)",
        );
    }
    if u.check_interval_minutes == 0 {
        r.error("update.check_interval_minutes", "zero would check without pause", "use e.g. 360 (every six hours)");
    }
    if !(1..=9).contains(&u.boot_tries) {
        r.error(
            "update.boot_tries",
            "must be between 1 and 9",
            "use 3: a new version gets three boots to prove itself",
        );
    }
    if u.bwlimit_mbit == 0 {
        r.error("update.bwlimit_mbit", "a zero limit would never download an update", "use e.g. 100");
    }
    if let Some(topic) = &u.push_topic {
        if topic.is_empty() || topic.contains(['#', '+']) || topic.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            r.error(
                "update.push_topic",
                format!("`{topic}` is not a plain topic"),
                "write e.g. \"micromirror/updates/fmt2\"",
            );
        }
        if !has_push {
            r.error(
                "update.push_topic",
                "a push topic needs the site's MQTT broker",
                "set mirror.push (broker and topic_prefix), or remove push_topic and rely on the timer",
            );
        }
    }
    if u.test_break_server && !test_site {
        r.error(
            "update.test_break_server",
            "only test sites may ship an image that breaks its server",
            "remove it (it exists to prove rollbacks in tests)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_wrap_and_say_how_long_to_wait() {
        let night = Window::parse("02:00-05:00").unwrap();
        assert!(night.contains(120) && night.contains(299) && !night.contains(300) && !night.contains(60));
        assert_eq!(night.wait_from(60), 60);
        assert_eq!(night.wait_from(300), 21 * 60);
        let wrap = Window::parse("23:30-01:00").unwrap();
        assert!(wrap.contains(23 * 60 + 45) && wrap.contains(30) && !wrap.contains(90));
        let always = Window::parse("00:00-24:00").unwrap();
        assert!((0..1440).all(|m| always.contains(m)));
        for bad in ["2-5", "02:00", "25:00-26:00", "03:00-03:00", "02:60-03:00"] {
            assert_eq!(Window::parse(bad), None, "{bad}");
        }
    }
}
