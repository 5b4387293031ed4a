//! `cargo xtask release`'s decisions, apart from its effects: what changed in a site's inputs
//! since its last build, which sites get their new version in which wave, and what a canary's
//! metrics say about the version it was given. Pure: no files, no network, no clock.

use std::collections::BTreeMap;
use std::fmt;

use image::version::Version;
use schema::profile::Ring;

use crate::fleet::exposition::Sample;

/// What a site's image is made of, as far as a release can tell without building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub profile_sha256: String,
    /// The workspace's fingerprint (`build::source`); `None` outside git.
    pub source: Option<String>,
    pub catalog: String,
    /// The site's sync peers' fingerprint (`build::source::peers`); `None` in a manifest from
    /// before the fleet's fan-out, which counts as changed (that image has no peers).
    pub peers: Option<String>,
    /// name → version of every package of the base.
    pub packages: BTreeMap<String, String>,
}

impl Inputs {
    /// The inputs a build recorded in its manifest.json; `None` for a manifest without them
    /// (made before releases existed), which counts as changed.
    pub fn from_manifest(m: &serde_json::Value) -> Option<Inputs> {
        let packages = m["packages"]
            .as_object()?
            .iter()
            .map(|(name, v)| Some((name.clone(), v.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Inputs {
            profile_sha256: m["profile_sha256"].as_str()?.to_string(),
            source: m["inputs"]["source"].as_str().map(String::from),
            catalog: m["inputs"]["catalog"].as_str()?.to_string(),
            peers: m["inputs"]["peers"].as_str().map(String::from),
            packages,
        })
    }
}

/// One reason a site is built again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No earlier build to compare with (or one that recorded no inputs).
    NoEarlierBuild,
    Profile,
    /// Our programs, overlay or build code; `None` on either side: outside git, unknown.
    Source,
    Catalog,
    /// Boxes joined or left the fleet: this box's peers changed.
    Peers,
    Package {
        name: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NoEarlierBuild => f.write_str("no earlier build"),
            Change::Profile => f.write_str("the profile"),
            Change::Source => f.write_str("the source (programs, overlay, build)"),
            Change::Catalog => f.write_str("the catalog or hardware classes"),
            Change::Peers => f.write_str("its sync peers (boxes joined or left the fleet)"),
            Change::Package { name, from: Some(a), to: Some(b) } => write!(f, "{name} {a} → {b}"),
            Change::Package { name, from: None, to: Some(b) } => write!(f, "{name} {b} (new)"),
            Change::Package { name, from: Some(a), to: None } => write!(f, "{name} {a} (removed)"),
            Change::Package { name, .. } => f.write_str(name),
        }
    }
}

/// Why a site whose last build had `last` must be built again with `now`; empty: it need not.
/// A source fingerprint that is unknown on either side counts as changed.
pub fn changes(last: Option<&Inputs>, now: &Inputs) -> Vec<Change> {
    let Some(last) = last else { return vec![Change::NoEarlierBuild] };
    let mut out = Vec::new();
    if last.profile_sha256 != now.profile_sha256 {
        out.push(Change::Profile);
    }
    if last.source.is_none() || last.source != now.source {
        out.push(Change::Source);
    }
    if last.catalog != now.catalog {
        out.push(Change::Catalog);
    }
    if last.peers.is_none() || last.peers != now.peers {
        out.push(Change::Peers);
    }
    out.extend(package_changes(&last.packages, &now.packages));
    out
}

/// Packages added, removed or at another version, by name.
pub fn package_changes(last: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Change> {
    let names: std::collections::BTreeSet<&String> = last.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|n| last.get(*n) != now.get(*n))
        .map(|n| Change::Package { name: n.clone(), from: last.get(n).cloned(), to: now.get(n).cloned() })
        .collect()
}

/// A site as the release finds it: its ring, the version its last build holds, the newest
/// version its published tree offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteState {
    pub name: String,
    pub ring: Ring,
    pub built: Option<Version>,
    pub offered: Option<Version>,
}

impl SiteState {
    /// A build newer than what the site's boxes are offered.
    pub fn due(&self) -> bool {
        match (&self.built, &self.offered) {
            (Some(b), Some(o)) => b > o,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Who gets a new version when: the canaries first; the rest once every canary runs its
/// latest build blessed, whether this release published it or an earlier one did (a release
/// stopped or cut short, then run again, never lets the rest through unwatched); the others
/// have nothing new.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Waves {
    /// Canaries with a build newer than what they are offered: published first.
    pub canaries: Vec<String>,
    /// Every canary with a build, and that build's version: what the rest waits for.
    pub watched: Vec<(String, Version)>,
    pub rest: Vec<String>,
    pub nothing_new: Vec<String>,
}

impl Waves {
    /// Nothing to publish and nothing to watch for.
    pub fn is_idle(&self) -> bool {
        self.canaries.is_empty() && self.rest.is_empty()
    }
}

/// The waves of the sites `chosen` among the fleet's `sites`; every canary of the fleet is
/// watched, also when fewer sites were chosen (`--site`).
pub fn waves(sites: &[SiteState], chosen: impl Fn(&str) -> bool) -> Waves {
    let mut w = Waves::default();
    for s in sites {
        if let (Ring::Canary, Some(built)) = (s.ring, &s.built) {
            w.watched.push((s.name.clone(), built.clone()));
        }
        if !chosen(&s.name) {
            continue;
        }
        let list = match (s.due(), s.ring) {
            (false, _) => &mut w.nothing_new,
            (true, Ring::Canary) => &mut w.canaries,
            (true, Ring::Main) => &mut w.rest,
        };
        list.push(s.name.clone());
    }
    w
}

/// What a canary's metrics say about the version it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It runs that version (or a newer one), blessed by its health check.
    Blessed,
    /// It runs that version, not yet blessed.
    OnTrial,
    /// It booted that version, which failed its health check; the previous one runs again.
    RolledBack(String),
    /// Not there yet: what it runs and what it has seen.
    Waiting(String),
}

/// Reads `micromirror_update_info` and `micromirror_update_running_blessed` (what `fleet
/// status` reads) for `version`.
pub fn judge(version: &Version, samples: &[Sample]) -> Report {
    let Some(info) = samples.iter().find(|s| s.name == "micromirror_update_info") else {
        return Report::Waiting("no update status in its metrics yet".into());
    };
    let label = |k: &str| info.labels.get(k).map(String::as_str).unwrap_or("");
    let blessed = samples.iter().any(|s| s.name == "micromirror_update_running_blessed" && s.value == 1.0);
    let running = Version::parse(label("running"));
    if label("other") == version.as_str() && label("other_slot") == "failed" {
        return Report::RolledBack(format!(
            "{version} failed its health check there; it runs {} again",
            label("running")
        ));
    }
    match running {
        Some(r) if r == *version && blessed => Report::Blessed,
        Some(r) if r == *version => Report::OnTrial,
        Some(r) if r > *version && blessed => Report::Blessed,
        _ => {
            let newest = match label("newest") {
                "" => "none".to_string(),
                n => n.to_string(),
            };
            let other = match label("other") {
                "" => String::new(),
                o => format!(", other slot {}:{o}", label("other_slot")),
            };
            Report::Waiting(format!("runs {}, newest seen {newest}{other}", label("running")))
        }
    }
}

/// What the release does after one look at every canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every canary runs the new version blessed: publish to the rest.
    Go,
    Wait,
    /// Publish nothing more, for this reason.
    Stop(String),
}

/// One look: (canary, its report or why it did not answer). A rollback stops at once; past
/// the deadline, every canary not blessed is named with what it last said.
pub fn verdict(looks: &[(String, Result<Report, String>)], past_deadline: bool) -> Verdict {
    let rolled_back: Vec<String> = looks
        .iter()
        .filter_map(|(site, r)| match r {
            Ok(Report::RolledBack(why)) => Some(format!("canary {site} rolled back: {why}")),
            _ => None,
        })
        .collect();
    if !rolled_back.is_empty() {
        return Verdict::Stop(rolled_back.join("; "));
    }
    if looks.iter().all(|(_, r)| r == &Ok(Report::Blessed)) {
        return Verdict::Go;
    }
    if !past_deadline {
        return Verdict::Wait;
    }
    let late: Vec<String> = looks
        .iter()
        .filter(|(_, r)| r != &Ok(Report::Blessed))
        .map(|(site, r)| {
            let last = match r {
                Ok(Report::OnTrial) => "on trial, not blessed yet".to_string(),
                Ok(Report::Waiting(what)) => what.clone(),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("did not answer: {e}"),
            };
            format!("canary {site} did not report the new version running and blessed in time ({last})")
        })
        .collect();
    Verdict::Stop(late.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::exposition::parse;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn inputs(profile: &str, packages: &[(&str, &str)]) -> Inputs {
        Inputs {
            profile_sha256: profile.into(),
            source: Some("src1".into()),
            catalog: "cat1".into(),
            peers: Some("peers1".into()),
            packages: packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn unchanged_inputs_need_no_build_and_each_change_is_named() {
        let last = inputs("p1", &[("openssl", "3.0.15-1"), ("rsync", "3.2.7-1"), ("old", "1")]);
        assert_eq!(changes(Some(&last), &last), vec![]);
        assert_eq!(changes(None, &last), vec![Change::NoEarlierBuild]);
        let mut now = inputs("p2", &[("openssl", "3.0.17-1"), ("rsync", "3.2.7-1"), ("htop", "3.2.2-2")]);
        now.catalog = "cat2".into();
        now.peers = Some("peers2".into());
        let shown: Vec<String> = changes(Some(&last), &now).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "the profile",
                "the catalog or hardware classes",
                "its sync peers (boxes joined or left the fleet)",
                "htop 3.2.2-2 (new)",
                "old 1 (removed)",
                "openssl 3.0.15-1 → 3.0.17-1"
            ]
        );
        let mut outside_git = last.clone();
        outside_git.source = None;
        assert_eq!(changes(Some(&outside_git), &outside_git), vec![Change::Source], "unknown is changed");
    }

    #[test]
    fn a_manifest_s_inputs_are_read_and_an_old_manifest_has_none() {
        let m = serde_json::json!({
            "profile_sha256": "abc",
            "inputs": {"source": "s", "catalog": "c"},
            "packages": {"rsync": "3.2.7-1"}
        });
        let i = Inputs::from_manifest(&m).unwrap();
        assert_eq!((i.profile_sha256.as_str(), i.source.as_deref(), i.catalog.as_str()), ("abc", Some("s"), "c"));
        assert_eq!(i.packages["rsync"], "3.2.7-1");
        assert_eq!(Inputs::from_manifest(&serde_json::json!({"profile_sha256": "abc", "packages": {}})), None);
    }

    #[test]
    fn canaries_go_first_the_rest_after_every_canary_and_sites_with_nothing_newer_not_at_all() {
        let site = |name: &str, ring, built: Option<&str>, offered: Option<&str>| SiteState {
            name: name.into(),
            ring,
            built: built.map(v),
            offered: offered.map(v),
        };
        let fleet = [
            site("c1", Ring::Canary, Some("20261206.110000"), Some("20261201.000000")),
            site("c2", Ring::Canary, Some("20261201.000000"), Some("20261201.000000")),
            site("m1", Ring::Main, Some("20261206.110000"), None),
            site("m2", Ring::Main, None, None),
            site("m3", Ring::Main, Some("20261130.000000"), Some("20261201.000000")),
        ];
        let w = waves(&fleet, |_| true);
        assert_eq!(w.canaries, ["c1"]);
        assert_eq!(w.rest, ["m1"]);
        assert_eq!(w.nothing_new, ["c2", "m2", "m3"]);
        // c2 was published before (a release cut short, run again): the rest still waits for it.
        assert_eq!(w.watched, [("c1".to_string(), v("20261206.110000")), ("c2".to_string(), v("20261201.000000"))]);
        assert!(!w.is_idle());
        let idle = waves(&[site("c2", Ring::Canary, Some("20261201.000000"), Some("20261201.000000"))], |_| true);
        assert!(idle.is_idle() && idle.watched.len() == 1);
        // `--site m1`: only m1 is published, after both canaries.
        let one = waves(&fleet, |name| name == "m1");
        assert_eq!((one.canaries.len(), one.rest.as_slice(), one.watched.len()), (0, &["m1".to_string()][..], 2));
    }

    fn metrics(running: &str, other: &str, slot: &str, blessed: u8) -> Vec<Sample> {
        parse(&format!(
            "micromirror_update_info{{running=\"{running}\",other=\"{other}\",other_slot=\"{slot}\",newest=\"20261206.110000\"}} 1\n\
             micromirror_update_running_blessed {blessed}\n"
        ))
    }

    #[test]
    fn a_canary_s_metrics_say_blessed_on_trial_rolled_back_or_not_yet() {
        let new = v("20261206.110000");
        assert_eq!(judge(&new, &metrics("20261206.110000", "20261201.000000", "previous", 1)), Report::Blessed);
        assert_eq!(judge(&new, &metrics("20261206.110000", "20261201.000000", "previous", 0)), Report::OnTrial);
        assert_eq!(judge(&new, &metrics("20261207.000000", "", "empty", 1)), Report::Blessed, "already past it");
        let back = judge(&new, &metrics("20261201.000000", "20261206.110000", "failed", 1));
        assert!(matches!(&back, Report::RolledBack(why) if why.contains("runs 20261201.000000 again")), "{back:?}");
        let pending = judge(&new, &metrics("20261201.000000", "20261206.110000", "pending", 1));
        assert_eq!(
            pending,
            Report::Waiting(
                "runs 20261201.000000, newest seen 20261206.110000, other slot pending:20261206.110000".into()
            )
        );
        assert!(matches!(judge(&new, &[]), Report::Waiting(_)));
    }

    #[test]
    fn a_rollback_stops_at_once_and_the_deadline_names_every_late_canary() {
        let look = |site: &str, r: Result<Report, String>| (site.to_string(), r);
        let blessed = look("c1", Ok(Report::Blessed));
        assert_eq!(verdict(&[blessed.clone(), look("c2", Ok(Report::Blessed))], false), Verdict::Go);
        let waiting = look("c2", Ok(Report::Waiting("runs X".into())));
        assert_eq!(verdict(&[blessed.clone(), waiting.clone()], false), Verdict::Wait);
        let down = look("c3", Err("connection refused".into()));
        assert_eq!(verdict(&[blessed.clone(), down.clone()], false), Verdict::Wait, "a box may be rebooting");
        let Verdict::Stop(why) = verdict(&[blessed.clone(), waiting, down], true) else { panic!("past the deadline") };
        assert!(why.contains("canary c2 did not report") && why.contains("(runs X)"), "{why}");
        assert!(why.contains("canary c3") && why.contains("did not answer: connection refused"), "{why}");
        assert!(!why.contains("c1"), "{why}");
        let back = look("c2", Ok(Report::RolledBack("V failed".into())));
        assert_eq!(verdict(&[blessed, back], false), Verdict::Stop("canary c2 rolled back: V failed".into()));
    }
}
