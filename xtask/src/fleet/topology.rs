//! `cargo xtask fleet topology`: which box feeds which, per project, as the profiles make it
//! (`schema::topology`), with the fleet's fan-out from `profiles/fleet.toml` (`[sync]`;
//! defaults without the file).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use schema::profile::LoadedProfile;
use schema::topology::{self, Carrier, Fanout};

/// The fan-out the fleet file sets, or the defaults.
pub fn fanout(profiles: &Path) -> Result<Fanout> {
    topology::fanout_in(profiles).map_err(|e| anyhow::anyhow!(e))
}

/// Every project's topology, one block each (a project of several upstreams: one block each).
pub fn render(sites: &[LoadedProfile], fanout: Fanout, only: Option<&str>) -> Result<String> {
    // As each box's build groups them (`build::load::sync_peers`): by upstream, test sites apart.
    let mut carriers: BTreeMap<(String, String, bool), Vec<Carrier>> = BTreeMap::new();
    for s in sites {
        for p in &s.projects {
            carriers
                .entry((p.name.clone(), s.profile.mirror.upstream.clone(), s.profile.site.test))
                .or_default()
                .push(Carrier::of(&s.profile.site));
        }
    }
    if let Some(p) = only {
        if !carriers.keys().any(|(name, _, _)| name == p) {
            bail!("no box carries `{p}`");
        }
    }
    let mut out = format!(
        "fan-out: {} boxes fetch each change from the upstream (the fastest links first), each holder \
         feeds {} per Gbit/s of its link (up to five), all at once\n",
        fanout.upstream_fetchers, fanout.feeds
    );
    for ((project, upstream, test), boxes) in carriers.iter().filter(|((p, _, _), _)| only.is_none_or(|o| o == p)) {
        out.push_str(&format!("\n(upstream {upstream}{}) ", if *test { ", test sites" } else { "" }));
        out.push_str(&topology::render(project, &topology::plan(project, boxes, fanout)));
    }
    Ok(out)
}
