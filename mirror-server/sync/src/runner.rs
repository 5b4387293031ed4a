//! Running one project's sync: lock, clean up after an interrupted run, check free space, wait
//! for a Debian-style upstream to finish its own update, run the planned rsync passes (retrying
//! network errors with backoff), then write the trace file and the status. The served tree is
//! consistent at every step: rsync's --delay-updates puts files in place at the end of a pass.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::plan::{self, Endpoints};
use super::rsync_output::{self, ExitMeaning};
use schema::catalog::Project;
use schema::status::{self, Outcome, Stats, Status};

/// Everything a run needs besides the project.
#[derive(Debug, Clone)]
pub struct SyncEnv {
    pub ends: Endpoints,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub bwlimit_mbit: u32,
    pub max_delete_percent: u32,
    pub min_free_mb: u64,
    pub retries: u32,
    pub retry_base: Duration,
    pub log_retention: Duration,
    /// Echo rsync's output to stderr (`mirror-sync run` by hand).
    pub echo: bool,
    /// Per project: boxes of the fleet (host[:port] of their rsync daemons) tried before the
    /// upstream, in order, when they hold the upstream's current state.
    pub peers: std::collections::BTreeMap<String, Vec<String>>,
    /// How long a run waits for a peer to hold the upstream's state before it takes the upstream.
    pub peer_wait: Duration,
}

pub enum LockMode {
    /// Wait for a running sync of the same project to finish (by hand).
    Wait,
    /// Give up when the project is locked (schedule and push).
    Skip,
}

pub enum RunResult {
    Done(Box<Status>),
    SkippedLocked,
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An exclusive lock on the project that the kernel releases if we crash (flock).
struct ProjectLock {
    _file: File,
}

fn lock(env: &SyncEnv, project: &str, mode: LockMode) -> Result<Option<ProjectLock>> {
    std::fs::create_dir_all(&env.state_dir).with_context(|| format!("creating {}", env.state_dir.display()))?;
    let path = env.state_dir.join(format!("{project}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let operation = match mode {
        LockMode::Wait => FlockOperation::LockExclusive,
        LockMode::Skip => FlockOperation::NonBlockingLockExclusive,
    };
    match rustix::fs::flock(&file, operation) {
        Ok(()) => Ok(Some(ProjectLock { _file: file })),
        Err(Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(std::io::Error::from(e)).context("locking the project"),
    }
}

pub fn run_project(env: &SyncEnv, project: &Project, mode: LockMode) -> Result<RunResult> {
    let Some(_lock) = lock(env, &project.name, mode)? else {
        return Ok(RunResult::SkippedLocked);
    };
    let (previous, aside) = status::load(&env.state_dir, &project.name);
    if let Some(a) = aside {
        tracing::warn!(project = %project.name, file = %a.file.display(), reason = %a.reason, moved_to = %a.moved_to.display(), "unreadable status file set aside; syncing as if new");
    }
    let started = now();
    // Nanoseconds: a push can start a second run within the same second.
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let log_path = env.log_dir.join(format!("{}-{stamp}.log", project.name));
    // Until this run ends, the file keeps what the last one learnt (its last success, size, file
    // count and failures): a run killed half-way leaves the schedule and max-delete guard intact.
    let running = Status {
        last_success: previous.as_ref().and_then(|p| p.last_success),
        size_bytes: previous.as_ref().map_or(0, |p| p.size_bytes),
        stats: previous.as_ref().map(|p| p.stats.clone()).unwrap_or_default(),
        failures: previous.as_ref().map_or(0, |p| p.failures),
        log_file: Some(log_path.clone()),
        activity: Some("starting".into()),
        ..Status::running(&project.name, &project.path, started)
    };
    let mut progress = Progress { dir: env.state_dir.clone(), status: running, stats: Stats::default() };
    status::write(&env.state_dir, &progress.status).context("writing the status file")?;
    prune_logs(&env.log_dir, &project.name, env.log_retention);
    let outcome = run_steps(env, project, previous.as_ref(), &log_path, &mut progress);
    let mut st = progress.status;
    st.stats = progress.stats;
    st.ended = Some(now());
    st.activity = None;
    st.full_run = previous.as_ref().and_then(|p| p.full_run);
    match outcome {
        Ok(Walk::Full) => {
            st.state = Outcome::Success;
            st.last_success = st.ended;
            st.size_bytes = st.stats.tree_bytes;
            st.full_run = st.ended;
        }
        Ok(Walk::Unchanged) => {
            // The tree is what the last full run left: its figures stand, nothing moved.
            st.state = Outcome::Success;
            st.last_success = st.ended;
            st.unchanged = true;
            let tree = previous.as_ref().map(|p| p.stats.clone()).unwrap_or_default();
            st.stats = Stats { files_total: tree.files_total, tree_bytes: tree.tree_bytes, ..Stats::default() };
            st.size_bytes = previous.as_ref().map_or(0, |p| p.size_bytes);
        }
        Err(RunError::Refused(msg)) => {
            st.state = Outcome::Refused;
            st.error = Some(msg);
        }
        Err(RunError::Failed(msg)) => {
            st.state = Outcome::Failed;
            st.error = Some(msg);
        }
    }
    st.failures = Status::failures_after(previous.as_ref(), st.state);
    status::write(&env.state_dir, &st).context("writing the status file")?;
    Ok(RunResult::Done(Box::new(st)))
}

/// The status file of a run under way, told what the run is doing at each step; and the
/// figures this run has gathered so far.
struct Progress {
    dir: PathBuf,
    status: Status,
    stats: Stats,
}

impl Progress {
    fn doing(&mut self, what: String) {
        self.status.activity = Some(what);
        // Not worth failing the run over: the last complete status stays on disk.
        let _ = status::write(&self.dir, &self.status);
    }
}

/// What a successful run did.
enum Walk {
    /// Every pass ran against the upstream.
    Full,
    /// The upstream's marker was the one the tree holds: no pass ran.
    Unchanged,
}

enum RunError {
    Failed(String),
    Refused(String),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError::Failed(format!("{e:#}"))
    }
}

fn run_steps(
    env: &SyncEnv,
    project: &Project,
    previous: Option<&Status>,
    log_path: &Path,
    progress: &mut Progress,
) -> Result<Walk, RunError> {
    let dest = env.ends.mirror_root.join(&project.path);
    std::fs::create_dir_all(&dest).map_err(|e| RunError::Failed(format!("cannot create {}: {e}", dest.display())))?;
    check_writable(&dest)?;
    std::fs::create_dir_all(&env.log_dir)
        .map_err(|e| RunError::Failed(format!("cannot create {}: {e}", env.log_dir.display())))?;
    let mut log = File::create(log_path)
        .map(std::io::BufWriter::new)
        .map_err(|e| RunError::Failed(format!("cannot create {}: {e}", log_path.display())))?;
    // The upstream's marker, read first when the catalog names one: the state this run brings.
    let upstream = plan::Origin::upstream(project, &env.ends);
    let wanted = env.state_dir.join(format!("{}.marker", project.name));
    let marker = project
        .marker
        .is_some()
        .then(|| {
            progress.doing("reading the upstream's marker file".into());
            fetch_marker(env, project, &upstream, &wanted, &mut log).got()
        })
        .flatten();
    if let (Some(theirs), Some(name)) = (&marker, plan::marker_path(project, &env.ends)) {
        let ours = std::fs::read(dest.join(name)).ok();
        if plan::marker_may_do(project, previous, now()) && ours.as_ref() == Some(theirs) {
            let _ = writeln!(log, "### the upstream's marker is unchanged: no walk");
            return Ok(Walk::Unchanged);
        }
    }
    let in_progress = env.state_dir.join(format!("{}.in-progress", project.name));
    if in_progress.exists() {
        // The last run was interrupted: its rsync temporaries are garbage now.
        remove_rsync_temporaries(&dest);
    }
    std::fs::write(&in_progress, b"")
        .map_err(|e| RunError::Failed(format!("cannot write {}: {e}", in_progress.display())))?;
    check_free_space(&env.ends.mirror_root, env.min_free_mb)?;
    if project.debian_style {
        progress.doing(format!("checking that rsync://{}/{}/ is not mid-update", env.ends.upstream, project.module));
        wait_for_upstream_update(env, project, &mut log, progress)?;
    }
    let max_delete = plan::max_delete(
        previous.map(|p| p.stats.files_total).filter(|n| *n > 0),
        f64::from(env.max_delete_percent) / 100.0,
    );
    let started = SystemTime::now();
    // Peers only for the state the upstream shows now, and only with a marker to tell it by.
    let peers = env.peers.get(&project.name).map_or(&[][..], Vec::as_slice);
    let fed_by = match &marker {
        Some(m) if !peers.is_empty() => from_peers(env, project, peers, m, max_delete, &mut log, progress),
        _ => None,
    };
    let origin = match fed_by {
        Some(peer) => peer,
        None => {
            run_passes(env, project, &upstream, max_delete, env.retries, &mut log, progress)?;
            upstream
        }
    };
    progress.status.source = Some(origin.describe());
    // Last, the marker this run fetched: the tree now holds that state completely.
    if let (Some(_), Some(name)) = (&marker, plan::marker_path(project, &env.ends)) {
        install_marker(&wanted, &dest.join(&name))
            .map_err(|e| RunError::Failed(format!("putting the marker {name} in place: {e:#}")))?;
    }
    if project.trace {
        write_trace(env, project, started).map_err(|e| RunError::Failed(format!("writing the trace file: {e:#}")))?;
    }
    let _ = std::fs::remove_file(&in_progress);
    Ok(Walk::Full)
}

/// What an origin answered when asked for its marker file.
enum MarkerReply {
    Got(Vec<u8>),
    /// Its daemon answered, but without the file (a box whose first sync is under way).
    Absent,
    /// No answer (down, refusing, timing out).
    Unreachable,
}

impl MarkerReply {
    fn got(self) -> Option<Vec<u8>> {
        match self {
            MarkerReply::Got(b) => Some(b),
            _ => None,
        }
    }
}

/// Fetches `origin`'s marker file alone into `into`.
fn fetch_marker(
    env: &SyncEnv,
    project: &Project,
    origin: &plan::Origin,
    into: &Path,
    log: &mut impl Write,
) -> MarkerReply {
    let _ = std::fs::remove_file(into);
    let Some(fetch) = plan::marker_fetch(project, &env.ends, origin, into) else {
        return MarkerReply::Absent;
    };
    let _ = writeln!(log, "### marker: {}", fetch.command_line().join(" "));
    match run_rsync(&fetch.command_line(), log, env.echo) {
        Ok((0, _)) => std::fs::read(into).map_or(MarkerReply::Absent, MarkerReply::Got),
        Ok((code, output)) => {
            let _ = writeln!(
                log,
                "### no marker from {}: rsync exit {code}: {}",
                origin.host,
                rsync_output::cause(&output)
            );
            // 23: a partial transfer, here the file missing on a daemon that answered.
            if code == 23 {
                MarkerReply::Absent
            } else {
                MarkerReply::Unreachable
            }
        }
        Err(_) => MarkerReply::Unreachable,
    }
}

/// Puts the fetched marker into the tree: a copy beside it, then a rename (the state folder may
/// be another file system).
fn install_marker(fetched: &Path, in_tree: &Path) -> Result<()> {
    let tmp = in_tree.with_file_name(format!(
        ".{}.mirror-sync",
        in_tree.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    if let Some(dir) = in_tree.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(fetched, &tmp).with_context(|| format!("copying {}", fetched.display()))?;
    if let Ok(modified) = std::fs::metadata(fetched).and_then(|m| m.modified()) {
        let _ = File::options().write(true).open(&tmp).and_then(|f| f.set_modified(modified));
    }
    std::fs::rename(&tmp, in_tree).with_context(|| format!("renaming into {}", in_tree.display()))?;
    Ok(())
}
/// Walks the first peer that holds the upstream's state (`marker`), waiting up to
/// `env.peer_wait` for one to get there (a push reaches every box at once: the peers are
/// still at work). A peer that cannot be reached or fails a walk is dropped; the run's own
/// guards apply to every walk. Returns the peer that fed the run, or None: the upstream's turn.
fn from_peers(
    env: &SyncEnv,
    project: &Project,
    peers: &[String],
    marker: &[u8],
    max_delete: Option<u64>,
    log: &mut impl Write,
    progress: &mut Progress,
) -> Option<plan::Origin> {
    let mut live: Vec<plan::Origin> = plan::origins(project, &env.ends, peers).into_iter().filter(|o| o.peer).collect();
    let probe = env.state_dir.join(format!("{}.peer-marker", project.name));
    let deadline = std::time::Instant::now() + env.peer_wait;
    for round in 0.. {
        let mut stale = Vec::new();
        for (i, origin) in std::mem::take(&mut live).into_iter().enumerate() {
            if !asked_this_round(i, round) {
                stale.push(origin);
                continue;
            }
            progress.doing(format!("asking {} for its state", origin.host));
            match fetch_marker(env, project, &origin, &probe, log) {
                MarkerReply::Unreachable => {
                    let _ = writeln!(log, "### {}: unreachable; passed over", origin.describe());
                }
                // Without the marker (its first sync under way) or another state: not yet.
                MarkerReply::Absent => stale.push(origin),
                MarkerReply::Got(theirs) if theirs != marker => stale.push(origin),
                MarkerReply::Got(_) => match run_passes(env, project, &origin, max_delete, 0, log, progress) {
                    Ok(()) => return Some(origin),
                    Err(RunError::Failed(why) | RunError::Refused(why)) => {
                        let _ = writeln!(log, "### {}: {why}; passed over", origin.describe());
                    }
                },
            }
        }
        live = stale;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if live.is_empty() || left.is_zero() {
            let _ = writeln!(log, "### no peer holds the upstream's state: the upstream");
            return None;
        }
        progress.doing(format!(
            "waiting for a peer to hold the upstream's state ({} left): {}",
            schema::human::age(left.as_secs() as i64),
            live.iter().map(|o| o.host.as_str()).collect::<Vec<_>>().join(", ")
        ));
        std::thread::sleep(peer_poll(env.peer_wait).min(left));
    }
    None
}

/// Whether a waiting box asks its `i`th live peer in this round of asking: the first (the box
/// that feeds it by the topology, which is the one to hold the state first) every round, the
/// others every fourth; a fleet's waiting boxes, many on one peer, ask a third as often.
fn asked_this_round(i: usize, round: u32) -> bool {
    i == 0 || round.is_multiple_of(4)
}

/// How often a waiting box asks its peers again: a fortieth of the wait, a quarter second to
/// ten seconds (a marker read costs a peer one short connection; a round of the fan-out waits
/// for it).
fn peer_poll(wait: Duration) -> Duration {
    (wait / 40).clamp(Duration::from_millis(250), Duration::from_secs(10))
}

/// The planned passes from `origin`, retrying network errors `retries` times.
fn run_passes(
    env: &SyncEnv,
    project: &Project,
    origin: &plan::Origin,
    max_delete: Option<u64>,
    retries: u32,
    log: &mut impl Write,
    progress: &mut Progress,
) -> Result<(), RunError> {
    let passes = plan::plan_from(project, origin, &env.ends, env.bwlimit_mbit, max_delete);
    let count = passes.len();
    for (n, inv) in passes.into_iter().enumerate() {
        let mut attempt = 0;
        loop {
            progress.doing(format!("pass {}/{count} ({}) from {}", n + 1, inv.label, inv.source));
            let _ = writeln!(log, "### pass: {} ({})", inv.label, inv.command_line().join(" "));
            let (code, output) = run_rsync(&inv.command_line(), log, env.echo)
                .map_err(|e| RunError::Failed(format!("cannot run rsync: {e}")))?;
            match rsync_output::exit_meaning(code) {
                ExitMeaning::Ok | ExitMeaning::OkVanished => {
                    rsync_output::add_stats(&output, &mut progress.stats);
                    break;
                }
                ExitMeaning::MaxDeleteHit => {
                    rsync_output::add_stats(&output, &mut progress.stats);
                    return Err(RunError::Refused(format!(
                        "upstream would delete more than {}% of the files (--max-delete={}); deletions were held back. If upstream really removed them, run `mirror-sync run {}` with a higher max_delete_percent",
                        env.max_delete_percent,
                        max_delete.unwrap_or(0),
                        project.name
                    )));
                }
                ExitMeaning::Transient if attempt < retries => {
                    attempt += 1;
                    let wait = backoff(env.retry_base, attempt);
                    let why = format!(
                        "rsync exit {code} ({}) {}",
                        rsync_output::describe_exit(code),
                        rsync_output::cause(&output)
                    );
                    let _ = writeln!(log, "### {why}; retry {attempt}/{retries} in {:.0?}", wait);
                    progress.doing(format!(
                        "pass {}/{count}: {}; retry {attempt}/{retries} in {:.0?}",
                        n + 1,
                        why.trim_end(),
                        wait
                    ));
                    std::thread::sleep(wait);
                }
                ExitMeaning::LocalIo => {
                    let free = free_mb(&env.ends.mirror_root).unwrap_or(0);
                    return Err(RunError::Failed(format!(
                        "rsync exit {code}: {} ({free} MiB free on {}); the served tree keeps its last complete state",
                        rsync_output::describe_exit(code),
                        env.ends.mirror_root.display()
                    )));
                }
                _ => {
                    let tries = if attempt > 0 { format!(" (after {} tries)", attempt + 1) } else { String::new() };
                    return Err(RunError::Failed(format!(
                        "pass `{}`: rsync exit {code}: {}{tries}: {}",
                        inv.label,
                        rsync_output::describe_exit(code),
                        rsync_output::cause(&output)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Exponential backoff with jitter: base·2^(attempt-1), ±25 %.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let jitter = (jitter_fraction() - 0.5) * 0.5;
    exp.mul_f64(1.0 + jitter)
}

/// A number in [0, 1) that differs between boxes and runs.
pub fn jitter_fraction() -> f64 {
    fastrand::f64()
}

/// Runs rsync, copying its output to the run's log (and the terminal when asked); returns the
/// exit code and the output (for --stats).
fn run_rsync(args: &[String], log: &mut impl Write, echo: bool) -> std::io::Result<(i32, String)> {
    let mut child =
        Command::new("rsync").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    });
    let mut output = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if echo {
                eprintln!("{line}");
            }
            // Keep the summary, not the per-file lines, in memory.
            if !line.starts_with(['>', '<', 'c', 'h', '.', '*']) || line.starts_with("*deleting") {
                output.push_str(&line);
                output.push('\n');
            }
        }
    }
    let errors = err_thread.join().unwrap_or_default();
    let _ = log.write_all(errors.as_bytes());
    if echo {
        eprint!("{errors}");
    }
    output.push_str(&errors);
    let status = child.wait()?;
    Ok((status.code().unwrap_or(20), output))
}

fn remove_rsync_temporaries(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if e.file_name() == ".~tmp~" {
                let _ = std::fs::remove_dir_all(e.path());
            } else {
                stack.push(e.path());
            }
        }
    }
}

pub fn free_mb(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail * s.f_frsize / (1 << 20))
}

/// A tree this user cannot write (an adopted box on trial, whose tree is still the old
/// system's; a hand-made chown) fails before the upstream is asked anything, not halfway
/// through rsync's transfer.
fn check_writable(dest: &Path) -> Result<(), RunError> {
    rustix::fs::access(dest, rustix::fs::Access::WRITE_OK).map_err(|e| {
        RunError::Failed(format!(
            "{} is not writable by this user (uid {}): {e}; not starting. The tree must belong to \
             the user the sync runs as (on a box: chown -R mirror-sync: {}); an adopted box hands \
             it over at its commit",
            dest.display(),
            rustix::process::getuid().as_raw(),
            dest.display()
        ))
    })
}

fn check_free_space(root: &Path, min_mb: u64) -> Result<(), RunError> {
    match free_mb(root) {
        Some(free) if free < min_mb => Err(RunError::Failed(format!(
            "only {free} MiB free on {} (need {min_mb} MiB); not starting",
            root.display()
        ))),
        _ => Ok(()),
    }
}

/// A Debian-style upstream mid-update shows `Archive-Update-in-Progress-<host>` at the top:
/// wait for it to finish rather than copy a half-updated archive.
fn wait_for_upstream_update(
    env: &SyncEnv,
    project: &Project,
    log: &mut impl Write,
    progress: &mut Progress,
) -> Result<(), RunError> {
    let url = format!("rsync://{}/{}/", env.ends.upstream, project.module);
    for attempt in 0..=env.retries {
        let out = Command::new("rsync")
            .args(["--list-only", "--no-motd", &format!("--contimeout={}", plan::connect_timeout(project))])
            .arg(&url)
            .output()
            .map_err(|e| RunError::Failed(format!("cannot run rsync: {e}")))?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let busy = listing
            .lines()
            .any(|l| l.split_whitespace().last().is_some_and(|n| n.starts_with("Archive-Update-in-Progress")));
        if !busy {
            return Ok(());
        }
        let wait = backoff(env.retry_base, attempt + 1);
        let what = format!("upstream {url} is updating itself (Archive-Update-in-Progress); waiting {wait:.0?}");
        let _ = writeln!(log, "### {what}");
        progress.doing(what);
        std::thread::sleep(wait);
    }
    Err(RunError::Failed(format!(
        "upstream {url} stayed mid-update (Archive-Update-in-Progress); will try again at the next trigger"
    )))
}

/// Debian's trace format, written atomically to `<project>/trace/<hostname>` after a complete run.
fn write_trace(env: &SyncEnv, project: &Project, started: SystemTime) -> Result<()> {
    let dir = env.ends.mirror_root.join(&project.path).join("trace");
    std::fs::create_dir_all(&dir)?;
    let date = |t: SystemTime| httpdate::fmt_http_date(t).replace("GMT", "+0000");
    let text = format!(
        "Date: {}\nDate-Started: {}\nArchive serial: {}\nCreator: mirror-sync {}\nRunning on host: {}\nUpstream-mirror: {}\n",
        date(SystemTime::now()),
        date(started),
        now(),
        env!("CARGO_PKG_VERSION"),
        env.ends.hostname,
        env.ends.upstream,
    );
    let tmp = dir.join(format!(".{}.tmp", env.ends.hostname));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(&env.ends.hostname)).map_err(|e| anyhow!("renaming the trace file: {e}"))?;
    Ok(())
}

fn prune_logs(dir: &Path, project: &str, keep: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let cutoff = SystemTime::now() - keep;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(project)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|r| r.ends_with(".log") && r[..r.len() - 4].chars().all(|c| c.is_ascii_digit()));
        if ours && e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < cutoff) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_jitters_within_a_quarter() {
        for attempt in 1..5 {
            let d = backoff(Duration::from_secs(10), attempt);
            let nominal = 10.0 * f64::from(1u32 << (attempt - 1));
            assert!(d.as_secs_f64() >= nominal * 0.75 && d.as_secs_f64() <= nominal * 1.25, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn leftover_temporaries_are_removed_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/.~tmp~")).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/.~tmp~/x")).unwrap();
        std::fs::write(dir.path().join("a/keep"), b"x").unwrap();
        remove_rsync_temporaries(dir.path());
        assert!(!dir.path().join("a/.~tmp~").exists());
        assert!(!dir.path().join("a/b/.~tmp~").exists());
        assert!(dir.path().join("a/keep").exists());
    }
}
