//! mirror-sync, the sync service that replaces the fleet's rsync script, cron line and MQTT
//! subscriber. `plan` decides the rsync invocations (pure), `rsync_output` reads what rsync
//! says, `runner` executes one project's run, `schedule` says when each runs next, `daemon` owns
//! the triggers, `status_table` shows the status files to people. The status files it
//! writes are `schema::status`, read by mirror-server and humans. It is the only program that
//! writes (and, through rsync, deletes) under the mirror root.

pub mod check;
pub mod daemon;
pub mod plan;
pub mod rsync_output;
pub mod runner;
pub mod schedule;
pub mod status_table;

use std::time::Duration;

use schema::paths::Paths;
use schema::profile::LoadedProfile;

/// The run environment from the site profile, with the appliance's folders in `paths`.
pub fn env_from_profile(site: &LoadedProfile, paths: &Paths) -> runner::SyncEnv {
    let m = &site.profile.mirror;
    runner::SyncEnv {
        ends: plan::Endpoints {
            upstream: m.upstream.clone(),
            mirror_root: paths.mirror_root.clone(),
            hostname: site.profile.site.hostname.clone(),
        },
        state_dir: paths.sync_status(),
        log_dir: paths.sync_logs(),
        bwlimit_mbit: m.bwlimit_mbit,
        max_delete_percent: m.max_delete_percent,
        min_free_mb: m.min_free_mb,
        retries: 3,
        retry_base: Duration::from_secs(30),
        log_retention: Duration::from_secs(2 * 86_400),
        echo: false,
        peers: Default::default(),
        // Longer than a feeding box's typical run of a change, far shorter than a sync interval.
        peer_wait: Duration::from_secs(30 * 60),
    }
}

/// The broker (host, port, topic prefix) from the profile's `mirror.push`.
pub fn push_from_profile(site: &LoadedProfile) -> Option<(String, u16, String)> {
    let push = site.profile.mirror.push.as_ref()?;
    let (host, port) = push.broker_host_port()?;
    Some((host, port, push.topic_prefix.trim_end_matches('/').to_string()))
}
