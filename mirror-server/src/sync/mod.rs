//! The sync service that replaces the fleet's rsync script, cron line and MQTT subscriber.
//! `plan` decides the rsync invocations (pure), `runner` executes one project's run, `daemon`
//! owns the triggers, `status` is the file API read by mirror-server and humans.

pub mod daemon;
pub mod plan;
pub mod rsync_output;
pub mod runner;
pub mod status;

use std::path::PathBuf;
use std::time::Duration;

use crate::profile::LoadedProfile;

pub const STATE_DIR: &str = "/var/lib/micromirror/sync";
pub const LOG_DIR: &str = "/var/log/micromirror/sync";
pub const MIRROR_ROOT: &str = "/srv/mirror";

/// The run environment the appliance uses, from the site profile.
pub fn env_from_profile(site: &LoadedProfile) -> runner::SyncEnv {
    let m = &site.profile.mirror;
    runner::SyncEnv {
        ends: plan::Endpoints {
            upstream: m.upstream.clone(),
            mirror_root: PathBuf::from(MIRROR_ROOT),
            hostname: site.profile.site.hostname.clone(),
        },
        state_dir: PathBuf::from(STATE_DIR),
        log_dir: PathBuf::from(LOG_DIR),
        bwlimit_mbit: m.bwlimit_mbit,
        max_delete_percent: m.max_delete_percent,
        min_free_mb: m.min_free_mb,
        retries: 3,
        retry_base: Duration::from_secs(30),
        log_retention: Duration::from_secs(2 * 86_400),
        echo: false,
    }
}

/// The broker (host, port, topic prefix) from the profile's `mirror.push`.
pub fn push_from_profile(site: &LoadedProfile) -> Option<(String, u16, String)> {
    let push = site.profile.mirror.push.as_ref()?;
    let (host, port) = push.broker.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
        push.topic_prefix.trim_end_matches('/').to_string(),
    ))
}
