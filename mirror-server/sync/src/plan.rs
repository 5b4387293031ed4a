//! Planning a run: which rsync invocations a project gets, from its catalog entry and the site.
//! Pure — the runner executes what this returns, and tests read it without running anything.

use std::path::{Path, PathBuf};

use schema::catalog::{Bandwidth, Pass, Project};
use schema::status::{Outcome, Status};

/// Where a run reads from and writes to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// host or host:port of the upstream rsync daemon.
    pub upstream: String,
    /// The local mirror root (/srv/mirror on the appliance).
    pub mirror_root: PathBuf,
    /// Our host name: names our Debian-style trace file, which upstream does not have.
    pub hostname: String,
}

/// One rsync invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub label: String,
    pub args: Vec<String>,
    pub source: String,
    pub dest: PathBuf,
}

impl Invocation {
    pub fn command_line(&self) -> Vec<String> {
        let mut v = self.args.clone();
        v.push(self.source.clone());
        v.push(self.dest.display().to_string());
        v
    }
}

/// The longest wait for the upstream's rsync daemon to accept a connection, in seconds.
pub const CONNECT_TIMEOUT_S: u32 = 30;

/// Seconds to wait for the upstream's daemon to accept: the I/O timeout, at most half a minute.
pub fn connect_timeout(project: &Project) -> u32 {
    project.timeout_s.seconds().unwrap_or(CONNECT_TIMEOUT_S).min(CONNECT_TIMEOUT_S)
}

/// Options every pass gets: the fleet's base set, minus owner/group (we are not root).
fn base_args(project: &Project, ends: &Endpoints, bwlimit_mbit: u32, max_delete: Option<u64>) -> Vec<String> {
    let mut v: Vec<String> = [
        "--recursive",
        "--links",
        "--perms",
        "--times",
        "--hard-links",
        "--sparse",
        "--fuzzy",
        "--delay-updates",
        "--stats",
        "--itemize-changes",
        // Never copy or serve the upstream's own in-progress files, never delete ours mid-run.
        "--exclude=.~tmp~/",
        "--filter=protect .~tmp~/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = project.timeout_s.seconds() {
        v.push(format!("--timeout={t}"));
    }
    // A daemon that cannot be reached fails the attempt in half a minute, not after the kernel's
    // two-minute SYN retries, even where the recipe has no I/O timeout.
    v.push(format!("--contimeout={}", connect_timeout(project)));
    if let Some(kib) = project.bwlimit.unwrap_or(Bandwidth::from_mbit(bwlimit_mbit)).rsync_kib() {
        v.push(format!("--bwlimit={kib}"));
    }
    v.extend(project.flags.iter().cloned());
    if let Some(m) = marker_path(project, ends) {
        // The marker comes last, put in place by the runner once every pass is done: a box whose
        // marker matches the upstream's holds that state completely (and peers rely on it).
        v.push(format!("--filter=protect /{m}"));
        v.push(format!("--exclude=/{m}"));
    }
    if let Some(n) = max_delete {
        v.push(format!("--max-delete={n}"));
    }
    for e in &project.exclude {
        v.push(format!("--exclude={e}"));
    }
    if project.delete_excluded {
        v.push("--delete-excluded".into());
    }
    if project.trace {
        // Our own trace file is not upstream; the deleting pass must leave it alone.
        v.push(format!("--filter=protect /trace/{}", ends.hostname));
    }
    v
}

fn pass_args(pass: &Pass) -> Vec<String> {
    let mut v = Vec::new();
    if pass.delete {
        v.push(if pass.delete_after { "--delete-after" } else { "--delete-delay" }.to_string());
    }
    if pass.no_links {
        v.push("--no-links".into());
    }
    for e in &pass.exclude {
        v.push(format!("--exclude={e}"));
    }
    v
}

/// Where a run fetches from: the upstream (its module), or a box of the fleet that holds the
/// same state (its public module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub module: String,
    pub peer: bool,
}

impl Origin {
    pub fn upstream(project: &Project, ends: &Endpoints) -> Origin {
        Origin { host: ends.upstream.clone(), module: project.module.clone(), peer: false }
    }

    /// "upstream" or "peer HOST", for the status.
    pub fn describe(&self) -> String {
        if self.peer {
            format!("peer {}", self.host)
        } else {
            "upstream".into()
        }
    }
}

/// The origins a run tries, in order: the peers (host[:port] of boxes that carry the project),
/// then the upstream.
pub fn origins(project: &Project, ends: &Endpoints, peers: &[String]) -> Vec<Origin> {
    let mut v: Vec<Origin> = peers
        .iter()
        .map(|h| Origin { host: h.clone(), module: project.rsync_module().to_string(), peer: true })
        .collect();
    v.push(Origin::upstream(project, ends));
    v
}

/// The invocations of one run of `project` from the upstream, in order.
pub fn plan(project: &Project, ends: &Endpoints, bwlimit_mbit: u32, max_delete: Option<u64>) -> Vec<Invocation> {
    plan_from(project, &Origin::upstream(project, ends), ends, bwlimit_mbit, max_delete)
}

/// The invocations of one run of `project` from `origin`, in order: the same passes and guards
/// whatever the origin.
pub fn plan_from(
    project: &Project,
    origin: &Origin,
    ends: &Endpoints,
    bwlimit_mbit: u32,
    max_delete: Option<u64>,
) -> Vec<Invocation> {
    let dest_root = ends.mirror_root.join(&project.path);
    project
        .passes()
        .iter()
        .map(|pass| {
            let mut args = base_args(project, ends, bwlimit_mbit, max_delete);
            args.extend(pass_args(pass));
            let (source, dest) = match &pass.only {
                // One file or folder of the module: keep its place in the tree.
                Some(only) => {
                    let trimmed = only.trim_end_matches('/');
                    let is_dir = only.ends_with('/');
                    let src = format!(
                        "rsync://{}/{}/{}{}",
                        origin.host,
                        origin.module,
                        trimmed,
                        if is_dir { "/" } else { "" }
                    );
                    let dest = if is_dir { dest_root.join(trimmed) } else { parent_of(&dest_root.join(trimmed)) };
                    (src, dest)
                }
                None => (format!("rsync://{}/{}/", origin.host, origin.module), dest_root.clone()),
            };
            Invocation { label: pass.label.clone(), args, source, dest }
        })
        .collect()
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_else(|| p.to_path_buf())
}

/// How long a tree may go without a full walk of the upstream, whatever its marker says: drift
/// (a file changed without the marker, a local mishap) is found within a day.
pub const FULL_WALK_EVERY_S: i64 = 86_400;

/// Whether a run may settle for the upstream's marker file: the project has one, the last run
/// succeeded (the daemon shows a triggered run as queued, its failures still 0) and the last
/// full walk is recent. (The marker itself is compared by the runner.)
pub fn marker_may_do(project: &Project, previous: Option<&Status>, now: i64) -> bool {
    project.marker.is_some()
        && previous.is_some_and(|p| {
            matches!(p.state, Outcome::Success | Outcome::Queued)
                && p.failures == 0
                && p.full_run.is_some_and(|t| now - t < FULL_WALK_EVERY_S && t <= now)
        })
}

/// The marker's path in the tree: the catalog's, `{upstream}` standing for the upstream's host
/// name (a Debian-style archive's own trace file, `project/trace/{upstream}`).
pub fn marker_path(project: &Project, ends: &Endpoints) -> Option<String> {
    let up = ends.upstream.as_str();
    // host, host:port, [v6]:port or a bare v6 address.
    let host = match up.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
        None if up.matches(':').count() == 1 => up.split_once(':').map_or(up, |(h, _)| h),
        None => up,
    };
    Some(project.marker.as_deref()?.replace("{upstream}", host).trim_start_matches('/').to_string())
}

/// The rsync invocation that fetches `origin`'s marker file alone into the file `into`: no file
/// list of the tree, one file's bytes.
pub fn marker_fetch(project: &Project, ends: &Endpoints, origin: &Origin, into: &Path) -> Option<Invocation> {
    let marker = marker_path(project, ends)?;
    let mut args = vec!["--times".to_string(), format!("--contimeout={}", connect_timeout(project))];
    if let Some(t) = project.timeout_s.seconds() {
        args.push(format!("--timeout={t}"));
    }
    Some(Invocation {
        label: "marker".into(),
        args,
        source: format!("rsync://{}/{}/{marker}", origin.host, origin.module),
        dest: into.to_path_buf(),
    })
}

/// The max-delete guard: at most `share` of the files the tree held after the last run may go
/// in one run (never less than a floor, so small trees can still change).
pub fn max_delete(last_file_count: Option<u64>, share: f64) -> Option<u64> {
    let files = last_file_count?;
    Some(((files as f64 * share) as u64).max(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::catalog::{Project, Timeout};

    fn project(passes: Vec<Pass>) -> Project {
        Project {
            name: "ubuntu".into(),
            title: "Ubuntu".into(),
            module: "ubuntu".into(),
            path: "ubuntu".into(),
            rsync_module: None,
            aliases: vec![],
            size_gb: 1,
            size_measured: None,
            bwlimit: None,
            timeout_s: Timeout::default(),
            flags: vec![],
            exclude: vec!["*/source/".into()],
            delete_excluded: true,
            topics: vec![],
            trace: true,
            debian_style: true,
            passes,
            release_pattern: None,
            marker: None,
            freshness: None,
        }
    }

    fn ends() -> Endpoints {
        Endpoints {
            upstream: "mirror.example.net".into(),
            mirror_root: "/srv/mirror".into(),
            hostname: "mm.example.net".into(),
        }
    }

    #[test]
    fn two_stage_debian_plan_keeps_indices_for_last() {
        let passes = vec![
            Pass {
                label: "packages".into(),
                exclude: vec!["Packages*".into(), "InRelease".into()],
                delete: false,
                ..Default::default()
            },
            Pass { label: "indices".into(), delete: true, delete_after: true, ..Default::default() },
        ];
        let p = plan(&project(passes), &ends(), 200, Some(500));
        assert_eq!(p.len(), 2);
        assert!(p[0].args.contains(&"--exclude=Packages*".to_string()));
        assert!(!p[0].args.iter().any(|a| a.starts_with("--delete-after") || a == "--delete-delay"));
        assert!(p[1].args.contains(&"--delete-after".to_string()));
        assert!(!p[1].args.contains(&"--exclude=Packages*".to_string()));
        for inv in &p {
            assert!(inv.args.contains(&"--delay-updates".to_string()));
            assert!(inv.args.contains(&"--bwlimit=24414".to_string()));
            assert!(inv.args.contains(&"--max-delete=500".to_string()));
            assert!(inv.args.contains(&"--exclude=*/source/".to_string()));
            assert!(inv.args.contains(&"--delete-excluded".to_string()));
            assert!(inv.args.contains(&"--filter=protect /trace/mm.example.net".to_string()));
            assert_eq!(inv.source, "rsync://mirror.example.net/ubuntu/");
            assert_eq!(inv.dest, PathBuf::from("/srv/mirror/ubuntu"));
        }
    }

    #[test]
    fn default_is_one_full_pass_with_delete_delay() {
        let p = plan(&project(vec![]), &ends(), 80, None);
        assert_eq!(p.len(), 1);
        assert!(p[0].args.contains(&"--delete-delay".to_string()));
        assert!(p[0].args.contains(&"--bwlimit=9765".to_string()));
    }

    #[test]
    fn only_passes_sync_one_part_in_place() {
        let passes = vec![
            Pass { label: "marker".into(), only: Some("last-updated".into()), delete: false, ..Default::default() },
            Pass { label: "stable".into(), only: Some("stable/".into()), delete: true, ..Default::default() },
        ];
        let p = plan(&project(passes), &ends(), 200, None);
        assert_eq!(p[0].source, "rsync://mirror.example.net/ubuntu/last-updated");
        assert_eq!(p[0].dest, PathBuf::from("/srv/mirror/ubuntu"));
        assert_eq!(p[1].source, "rsync://mirror.example.net/ubuntu/stable/");
        assert_eq!(p[1].dest, PathBuf::from("/srv/mirror/ubuntu/stable"));
    }

    #[test]
    fn the_entry_s_own_rate_timeout_and_flags_win_and_none_means_no_option() {
        let mut p = project(vec![]);
        p.bwlimit = Some(Bandwidth::parse("25M").unwrap());
        p.flags = vec!["--safe-links".into()];
        let args = &plan(&p, &ends(), 80, None)[0].args;
        assert!(args.contains(&"--bwlimit=25600".to_string()), "25M is 25 MiB/s: {args:?}");
        assert!(args.contains(&"--safe-links".to_string()));
        assert!(args.contains(&"--timeout=600".to_string()));
        p.bwlimit = Some(Bandwidth::Unlimited);
        p.timeout_s = Timeout::Never;
        let args = &plan(&p, &ends(), 80, None)[0].args;
        assert!(!args.iter().any(|a| a.starts_with("--bwlimit") || a.starts_with("--timeout")), "{args:?}");
        assert!(args.contains(&"--contimeout=30".to_string()), "connecting stays bounded: {args:?}");
    }

    #[test]
    fn the_marker_stands_for_a_walk_only_after_a_recent_full_success() {
        let mut p = project(vec![]);
        let now = 1_800_000_000;
        let done = |state, full_run| Status { state, full_run, ..Status::running("ubuntu", "ubuntu", now - 600) };
        let ok = done(Outcome::Success, Some(now - 3_600));
        assert!(!marker_may_do(&p, Some(&ok), now), "no marker in the catalog: always a walk");
        p.marker = Some("project/trace/master".into());
        assert!(marker_may_do(&p, Some(&ok), now));
        assert!(!marker_may_do(&p, None, now), "a first run walks");
        assert!(!marker_may_do(&p, Some(&done(Outcome::Failed, Some(now - 3_600))), now), "after a failure");
        assert!(marker_may_do(&p, Some(&done(Outcome::Queued, Some(now - 3_600))), now), "queued after a success");
        let queued_after_failure = Status { failures: 1, ..done(Outcome::Queued, Some(now - 3_600)) };
        assert!(!marker_may_do(&p, Some(&queued_after_failure), now), "queued after a failure");
        assert!(!marker_may_do(&p, Some(&done(Outcome::Running, Some(now - 3_600))), now), "an interrupted run");
        assert!(!marker_may_do(&p, Some(&done(Outcome::Success, None)), now), "no full walk on record");
        assert!(!marker_may_do(&p, Some(&done(Outcome::Success, Some(now - 86_400))), now), "a day without a walk");
        assert!(!marker_may_do(&p, Some(&done(Outcome::Success, Some(now + 60))), now), "a walk in the future");
        let up = Origin::upstream(&p, &ends());
        let fetch = marker_fetch(&p, &ends(), &up, Path::new("/var/lib/mirror-sync/ubuntu.marker")).unwrap();
        assert_eq!(fetch.source, "rsync://mirror.example.net/ubuntu/project/trace/master");
        assert!(!fetch.args.iter().any(|a| a.starts_with("--recursive") || a.starts_with("--delete")), "{fetch:?}");
    }

    #[test]
    fn a_peer_is_asked_first_through_its_public_module_with_the_same_guards_and_the_marker_comes_last() {
        let mut p = project(vec![]);
        p.rsync_module = Some("ubuntu-public".into());
        p.marker = Some("project/trace/master".into());
        let all = origins(&p, &ends(), &["peer1.example.net:873".into(), "peer2.example.net".into()]);
        assert_eq!(
            all.iter().map(Origin::describe).collect::<Vec<_>>(),
            ["peer peer1.example.net:873", "peer peer2.example.net", "upstream"]
        );
        let from_peer = plan_from(&p, &all[0], &ends(), 200, Some(500));
        let from_up = plan_from(&p, &all[2], &ends(), 200, Some(500));
        assert_eq!(from_peer[0].source, "rsync://peer1.example.net:873/ubuntu-public/");
        assert_eq!(from_up[0].source, "rsync://mirror.example.net/ubuntu/");
        assert_eq!(from_peer[0].args, from_up[0].args, "the same guards whatever the origin");
        let args = &from_up[0].args;
        let protect = args.iter().position(|a| a == "--filter=protect /project/trace/master").unwrap();
        let exclude = args.iter().position(|a| a == "--exclude=/project/trace/master").unwrap();
        assert!(protect < exclude, "protected before excluded (delete_excluded must not remove it): {args:?}");
    }

    #[test]
    fn a_debian_style_marker_names_the_upstreams_own_trace_file() {
        let mut p = project(vec![]);
        p.marker = Some("project/trace/{upstream}".into());
        let mut e = ends();
        assert_eq!(marker_path(&p, &e).as_deref(), Some("project/trace/mirror.example.net"));
        e.upstream = "mirror.example.net:8873".into();
        assert_eq!(marker_path(&p, &e).as_deref(), Some("project/trace/mirror.example.net"), "no port");
        e.upstream = "[2001:db8::1]:873".into();
        assert_eq!(marker_path(&p, &e).as_deref(), Some("project/trace/2001:db8::1"));
        let up = Origin::upstream(&p, &e);
        let fetch = marker_fetch(&p, &e, &up, Path::new("/tmp/m")).unwrap();
        assert_eq!(fetch.source, "rsync://[2001:db8::1]:873/ubuntu/project/trace/2001:db8::1");
        assert!(plan(&p, &e, 200, None)[0].args.contains(&"--exclude=/project/trace/2001:db8::1".to_string()));
    }

    #[test]
    fn max_delete_is_a_share_with_a_floor() {
        assert_eq!(max_delete(None, 0.1), None);
        assert_eq!(max_delete(Some(50), 0.1), Some(100));
        assert_eq!(max_delete(Some(100_000), 0.1), Some(10_000));
    }
}
