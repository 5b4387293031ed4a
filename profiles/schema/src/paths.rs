//! Where the appliance keeps things: its configuration (/etc/micromirror), the mirror tree
//! (/srv/mirror), state kept across restarts and updates (/var/lib/micromirror) and logs
//! (/var/log/micromirror). One type, so a path is named in one place; tests and development
//! runs put everything under one folder with `Paths::under`.

use std::path::{Path, PathBuf};

/// Beside the site profile: the boxes of the fleet mirror-sync fetches each project from before
/// the upstream (JSON: project → host names in order), written at build time from `topology`.
pub const SYNC_PEERS_FILE: &str = "sync-peers.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The rendered site profile, its catalog entries, site assets and CA files.
    pub config: PathBuf,
    /// The mirror tree: one folder per project; only mirror-sync writes here.
    pub mirror_root: PathBuf,
    /// State kept across restarts and updates.
    pub state: PathBuf,
    pub logs: PathBuf,
}

impl Paths {
    /// The box's layout.
    pub fn appliance() -> Paths {
        Paths {
            config: "/etc/micromirror".into(),
            mirror_root: "/srv/mirror".into(),
            state: "/var/lib/micromirror".into(),
            logs: "/var/log/micromirror".into(),
        }
    }

    /// Everything under `dir` (config/, mirror/, state/, log/), for tests.
    pub fn under(dir: &Path) -> Paths {
        Paths {
            config: dir.join("config"),
            mirror_root: dir.join("mirror"),
            state: dir.join("state"),
            logs: dir.join("log"),
        }
    }

    /// The installed site profile.
    pub fn site_profile(&self) -> PathBuf {
        self.config.join("site.toml")
    }

    /// The site's own listing assets, which override mirror-server's built-in ones.
    pub fn site_assets(&self) -> PathBuf {
        self.config.join("assets")
    }

    /// mirror-sync's status files (one per project), locks and in-progress markers.
    pub fn sync_status(&self) -> PathBuf {
        self.state.join("sync")
    }

    /// One log file per sync run, kept two days.
    pub fn sync_logs(&self) -> PathBuf {
        self.logs.join("sync")
    }

    pub fn access_log(&self) -> PathBuf {
        self.logs.join("access.log")
    }

    /// The ACME account key and certificate.
    pub fn acme(&self) -> PathBuf {
        self.state.join("acme")
    }

    /// Today's per-project totals, saved every minute and at exit for `mirror-server report`.
    pub fn counters_file(&self) -> PathBuf {
        self.state.join("server/counters.json")
    }

    /// The per-minute traffic history behind the capacity metrics (a week and a day).
    pub fn capacity_file(&self) -> PathBuf {
        self.state.join("server/capacity.json")
    }

    /// The updater's status, its record of failed versions and its downloads.
    pub fn update_dir(&self) -> PathBuf {
        self.state.join("update")
    }

    /// The public keyring update signatures are checked against (gpgv's format).
    pub fn update_keyring(&self) -> PathBuf {
        self.config.join("update-keyring.gpg")
    }

    /// The record of this box's adoption (`adoption::Adoption`), on an adopted box only.
    pub fn adoption_file(&self) -> PathBuf {
        self.state.join("adoption.json")
    }

    /// Telemetry records kept while the watchtower is away.
    pub fn spill_file(&self) -> PathBuf {
        self.state.join("telemetry/spill")
    }
}

/// The catalog that goes with a profile: `projects/` next to it (the appliance's layout and the
/// repository's alike).
pub fn catalog_dir_for(profile: &Path) -> PathBuf {
    profile.parent().unwrap_or(Path::new(".")).join("projects")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appliance_layout_is_what_the_units_and_overlay_name() {
        let p = Paths::appliance();
        assert_eq!(p.site_profile(), Path::new("/etc/micromirror/site.toml"));
        assert_eq!(p.sync_status(), Path::new("/var/lib/micromirror/sync"));
        assert_eq!(p.counters_file(), Path::new("/var/lib/micromirror/server/counters.json"));
        assert_eq!(p.spill_file(), Path::new("/var/lib/micromirror/telemetry/spill"));
        assert_eq!(catalog_dir_for(&p.site_profile()), Path::new("/etc/micromirror/projects"));
    }
}
