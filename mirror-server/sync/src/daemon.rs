//! `mirror-sync daemon`: the triggers. A schedule per project (`schedule`: an interval after a
//! success, a growing backoff after a failure, so a first sync that fails at first boot is
//! retried by itself), MQTT push from the upstream's broker, SIGUSR1 (every project now, as if
//! pushed: what an adopted box's commit sends once the tree is the sync's), and one dispatcher
//! that owns which project runs: each runs once at a time, a push that arrives while its
//! project runs causes exactly one more run after it, and a project waiting for a run slot says
//! "queued".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use schema::catalog::Project;
use schema::status::{self, Outcome, Status};
use tokio::sync::{mpsc, Semaphore};

use crate::runner::{self, LockMode, RunResult, SyncEnv};
use crate::schedule::{self, Policy};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub env: SyncEnv,
    pub projects: Vec<Project>,
    pub policy: Policy,
    /// Runs in flight at once across projects.
    pub parallel: usize,
    /// (host, port, topic prefix) of the upstream's broker.
    pub push: Option<(String, u16, String)>,
}

#[derive(Debug)]
enum Msg {
    /// Time to look at the schedule.
    Tick,
    Push {
        project: String,
        reason: &'static str,
    },
    /// A run ended; `ran` is false when it could not even start (no status was written).
    Finished {
        project: String,
        ran: bool,
    },
}

/// Which projects a push topic names: `<prefix>/<topic>` where `<topic>` is one of the
/// project's catalog topics (its module by default).
pub fn projects_for_topic<'a>(projects: &'a [Project], prefix: &str, topic: &str) -> Vec<&'a Project> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Vec::new();
    };
    let rest = rest.trim_end_matches('/');
    projects.iter().filter(|p| p.topics().iter().any(|t| t == rest)).collect()
}

pub async fn run(config: DaemonConfig) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    for p in &config.projects {
        let (_, aside) = status::load(&config.env.state_dir, &p.name);
        if let Some(a) = aside {
            tracing::warn!(project = %p.name, file = %a.file.display(), reason = %a.reason, moved_to = %a.moved_to.display(), "unreadable status file set aside; the project syncs as if new");
        }
    }
    if let Some((host, port, prefix)) = config.push.clone() {
        tokio::spawn(listen_push(host, port, prefix, config.projects.clone(), tx.clone()));
    }
    tokio::spawn(ticker(tick_for(&config.policy), tx.clone()));
    tokio::spawn(on_sigusr1(config.projects.iter().map(|p| p.name.clone()).collect(), tx.clone()));
    let mut dispatcher = Dispatcher::new(config, tx);
    while let Some(msg) = rx.recv().await {
        dispatcher.handle(msg);
    }
    Ok(())
}

/// How often the schedule is looked at: every 20 s, more often when retries come sooner.
fn tick_for(policy: &Policy) -> Duration {
    (policy.retry_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(20))
}

/// SIGUSR1: every project now, whatever its schedule or backoff says.
async fn on_sigusr1(projects: Vec<String>, tx: mpsc::UnboundedSender<Msg>) {
    let Ok(mut signals) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
        tracing::warn!("SIGUSR1 cannot be caught: only the schedule and pushes start syncs");
        return;
    };
    while signals.recv().await.is_some() {
        tracing::info!("SIGUSR1: every project now");
        for project in &projects {
            if tx.send(Msg::Push { project: project.clone(), reason: "SIGUSR1" }).is_err() {
                return;
            }
        }
    }
}

async fn ticker(every: Duration, tx: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if tx.send(Msg::Tick).is_err() {
            return;
        }
    }
}

struct Dispatcher {
    config: DaemonConfig,
    by_name: BTreeMap<String, Project>,
    /// Each project's own place in the interval, so a fleet spreads out.
    jitter: BTreeMap<String, f64>,
    slots: Arc<Semaphore>,
    running: BTreeSet<String>,
    /// Pushed while running: one more run after the current one.
    pending: BTreeSet<String>,
    /// Runs that could not start at all, and the earliest time to try again.
    held_off: BTreeMap<String, (u32, i64)>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Dispatcher {
    fn new(config: DaemonConfig, tx: mpsc::UnboundedSender<Msg>) -> Dispatcher {
        let by_name = config.projects.iter().map(|p| (p.name.clone(), p.clone())).collect();
        let jitter = config.projects.iter().map(|p| (p.name.clone(), runner::jitter_fraction())).collect();
        let slots = Arc::new(Semaphore::new(config.parallel.max(1)));
        Dispatcher {
            config,
            by_name,
            jitter,
            slots,
            running: BTreeSet::new(),
            pending: BTreeSet::new(),
            held_off: BTreeMap::new(),
            tx,
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Tick => {
                let now = runner::now();
                let idle: Vec<String> = self.by_name.keys().filter(|p| !self.running.contains(*p)).cloned().collect();
                for project in idle {
                    let st = status::read(&self.config.env.state_dir, &project);
                    let due = self.planned(&project, st.as_ref(), now);
                    if due <= now {
                        self.start(&project, reason(st.as_ref()));
                    } else if let Some(st) = st.filter(|s| stale_plan(s, due)) {
                        // A restart, or a clock that stepped: the status shows the plan as it is now.
                        self.record_next_attempt(st, due);
                    }
                }
            }
            Msg::Push { project, reason } => {
                if self.running.contains(&project) {
                    tracing::info!(%project, reason, "already running: one more run queued after it");
                    self.pending.insert(project);
                } else {
                    self.start(&project, reason);
                }
            }
            Msg::Finished { project, ran } => {
                self.running.remove(&project);
                let now = runner::now();
                if ran {
                    self.held_off.remove(&project);
                } else {
                    let failures = self.held_off.get(&project).map_or(0, |h| h.0) + 1;
                    let wait = self.config.policy.backoff(failures, runner::jitter_fraction());
                    self.held_off.insert(project.clone(), (failures, now + wait.as_secs() as i64));
                }
                if self.pending.remove(&project) {
                    tracing::info!(%project, "running the sync queued during the last one");
                    self.start(&project, "push during the last run");
                } else if let Some(st) = status::read(&self.config.env.state_dir, &project) {
                    let due = self.planned(&project, Some(&st), now);
                    self.record_next_attempt(st, due);
                }
            }
        }
    }

    /// When the schedule runs `project` next (a run that could not start waits its hold-off).
    fn planned(&self, project: &str, st: Option<&Status>, now: i64) -> i64 {
        let jitter = self.jitter.get(project).copied().unwrap_or(0.5);
        let due = schedule::next_due(st, &self.config.policy, now, jitter);
        match self.held_off.get(project) {
            Some((_, until)) => due.max(*until),
            None => due,
        }
    }

    /// When the schedule will next run the project, kept in its status file for `status`.
    fn record_next_attempt(&self, mut st: Status, due: i64) {
        st.next_attempt = Some(due);
        if let Err(e) = status::write(&self.config.env.state_dir, &st) {
            tracing::warn!(project = %st.project, error = %e, "cannot record the next attempt in the status file");
        }
    }

    fn start(&mut self, name: &str, reason: &'static str) {
        let Some(project) = self.by_name.get(name).cloned() else { return };
        tracing::info!(project = %name, reason, "sync triggered");
        self.running.insert(name.to_string());
        mark_queued(&self.config.env, &project);
        let (env, tx, slots, name) = (self.config.env.clone(), self.tx.clone(), self.slots.clone(), name.to_string());
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = tokio::task::spawn_blocking(move || runner::run_project(&env, &project, LockMode::Wait)).await;
            let ran = match result {
                Ok(Ok(RunResult::Done(st))) => {
                    tracing::info!(project = %name, state = ?st.state, error = st.error.as_deref().unwrap_or(""), files = st.stats.files_transferred, bytes = st.stats.bytes_received, "sync finished");
                    true
                }
                Ok(Ok(RunResult::SkippedLocked)) => {
                    tracing::info!(project = %name, "locked by another run; skipped");
                    true
                }
                Ok(Err(e)) => {
                    tracing::error!(project = %name, error = %format!("{e:#}"), "sync could not run");
                    false
                }
                Err(e) => {
                    tracing::error!(project = %name, error = %e, "sync task failed");
                    false
                }
            };
            let _ = tx.send(Msg::Finished { project: name, ran });
        });
    }
}

/// Whether a finished run's status shows a next attempt other than `due` (a run under way, by
/// hand or ours, owns its status file and is left alone).
fn stale_plan(st: &Status, due: i64) -> bool {
    !matches!(st.state, Outcome::Running | Outcome::Queued) && st.next_attempt.is_none_or(|n| (n - due).abs() > 60)
}

/// Why the schedule runs a project that is due.
fn reason(st: Option<&Status>) -> &'static str {
    match st {
        Some(s) if s.failures > 0 => "retry after a failed run",
        Some(s) if s.last_success.is_some() => "schedule",
        _ => "first sync",
    }
}

/// The status says "queued" from the trigger until the run takes its slot and lock (a run by
/// hand that holds the lock keeps its own "running").
fn mark_queued(env: &SyncEnv, project: &Project) {
    let previous = status::read(&env.state_dir, &project.name);
    if previous.as_ref().is_some_and(|p| p.state == Outcome::Running) {
        return;
    }
    let now = runner::now();
    let queued = match previous {
        Some(p) => Status { state: Outcome::Queued, started: now, activity: None, next_attempt: None, ..p },
        None => Status { state: Outcome::Queued, ..Status::running(&project.name, &project.path, now) },
    };
    let _ = status::write(&env.state_dir, &queued);
}

/// Forwards each push naming hosted projects to the dispatcher.
async fn listen_push(host: String, port: u16, prefix: String, projects: Vec<Project>, tx: mpsc::UnboundedSender<Msg>) {
    let sub = mirror_push::Subscription { host, port, filter: format!("{prefix}/#"), client: "mirror-sync".into() };
    mirror_push::listen(sub, |topic| {
        let hits = projects_for_topic(&projects, &prefix, topic);
        if hits.is_empty() {
            tracing::debug!(%topic, "push for a project we do not host");
        }
        for project in hits {
            let _ = tx.send(Msg::Push { project: project.name.clone(), reason: "push" });
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(name: &str, module: &str, topics: &[&str]) -> Project {
        let text = format!(
            "title = \"x\"\nmodule = \"{module}\"\npath = \"{name}\"\nsize_gb = 1\ntopics = [{}]\n",
            topics.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(",")
        );
        let mut p: Project = toml_edit::de::from_str(&text).unwrap();
        p.name = name.into();
        p
    }

    #[test]
    fn topics_map_to_projects_by_catalog() {
        let ps = vec![
            project("epel", "fedora-epel", &[]),
            project("fedora", "fedora-enchilada", &["fedora-enchilada", "fedora-secondary"]),
        ];
        let names = |t: &str| {
            projects_for_topic(&ps, "rsync/mirror.fcix.net", t).iter().map(|p| p.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names("rsync/mirror.fcix.net/fedora-epel"), vec!["epel"]);
        assert_eq!(names("rsync/mirror.fcix.net/fedora-secondary"), vec!["fedora"]);
        assert!(names("rsync/other/fedora-epel").is_empty());
        assert!(names("rsync/mirror.fcix.net/archlinux").is_empty());
    }

    #[test]
    fn the_schedule_is_looked_at_often_enough_for_its_retries() {
        let box_policy = Policy::for_interval(Duration::from_secs(86_400));
        assert_eq!(tick_for(&box_policy), Duration::from_secs(20));
        let test_policy = Policy { retry_after: Duration::from_secs(2), ..box_policy };
        assert_eq!(tick_for(&test_policy), Duration::from_secs(1));
    }
}
