//! The updater's settings, taken from the installed site profile's `[update]` section (and the
//! site's time zone and MQTT broker), validated there by the schema crate.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use schema::profile::Window;

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub check_every: Duration,
    pub window: Window,
    pub timezone: String,
    pub push: Option<mirror_push::Subscription>,
    pub boot_tries: u32,
    pub bwlimit_mbit: u32,
}

/// `None` when the site has no `[update]` section: updates are off.
pub fn load(site_config: &Path) -> Result<Option<Settings>> {
    let site = schema::site_config::load(site_config).with_context(|| format!("loading {}", site_config.display()))?;
    let p = site.profile;
    let Some(u) = p.update else { return Ok(None) };
    let window = Window::parse(&u.maintenance_window).with_context(|| {
        format!("update.maintenance_window `{}` in {}", u.maintenance_window, site_config.display())
    })?;
    let push = match (&u.push_topic, &p.mirror.push) {
        (Some(topic), Some(push)) => push.broker_host_port().map(|(host, port)| mirror_push::Subscription {
            host,
            port,
            filter: topic.clone(),
            client: "mirror-update".into(),
        }),
        _ => None,
    };
    Ok(Some(Settings {
        url: u.url,
        check_every: Duration::from_secs(u64::from(u.check_interval_minutes) * 60),
        window,
        timezone: p.site.timezone,
        push,
        boot_tries: u.boot_tries,
        bwlimit_mbit: u.bwlimit_mbit,
    }))
}
