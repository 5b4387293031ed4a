//! `mirror-sync daemon`: the triggers. A jittered schedule per project, MQTT push from the
//! upstream's broker, and a dispatcher that runs each project once at a time: a push that
//! arrives while its project runs causes exactly one more run after it, never a lost update.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, Semaphore};

use super::runner::{self, LockMode, RunResult, SyncEnv};
use schema::catalog::Project;
use schema::status;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub env: SyncEnv,
    pub projects: Vec<Project>,
    pub interval: Duration,
    /// Runs in flight at once across projects.
    pub parallel: usize,
    /// (host, port, topic prefix) of the upstream's broker.
    pub push: Option<(String, u16, String)>,
}

#[derive(Debug)]
enum Msg {
    Trigger { project: String, reason: &'static str },
    Finished { project: String },
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

/// When a project is next due: its last success plus the interval, less up to a tenth of the
/// interval of jitter (so a fleet does not hammer the upstream at the same second). Never-synced
/// projects are due now.
pub fn next_due(last_success: Option<i64>, interval: Duration, jitter: f64) -> i64 {
    match last_success {
        None => 0,
        Some(t) => t + interval.as_secs() as i64 - (interval.as_secs_f64() * 0.1 * jitter) as i64,
    }
}

pub async fn run(config: DaemonConfig) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    tokio::spawn(schedule(config.clone(), tx.clone()));
    if let Some((host, port, prefix)) = config.push.clone() {
        tokio::spawn(listen_push(host, port, prefix, config.projects.clone(), tx.clone()));
    }
    let slots = Arc::new(Semaphore::new(config.parallel.max(1)));
    let by_name: BTreeMap<String, Project> = config.projects.iter().map(|p| (p.name.clone(), p.clone())).collect();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut pending: BTreeSet<String> = BTreeSet::new();
    while let Some(msg) = rx.recv().await {
        let start = match msg {
            Msg::Trigger { project, reason } => {
                if running.contains(&project) {
                    tracing::info!(%project, reason, "already running: one more run queued after it");
                    pending.insert(project);
                    None
                } else {
                    tracing::info!(%project, reason, "sync triggered");
                    Some(project)
                }
            }
            Msg::Finished { project } => {
                running.remove(&project);
                pending.remove(&project).then(|| {
                    tracing::info!(%project, "running the sync queued during the last one");
                    project
                })
            }
        };
        let Some(name) = start else { continue };
        let Some(project) = by_name.get(&name).cloned() else {
            continue;
        };
        running.insert(name.clone());
        let env = config.env.clone();
        let tx = tx.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = tokio::task::spawn_blocking(move || runner::run_project(&env, &project, LockMode::Wait)).await;
            match result {
                Ok(Ok(RunResult::Done(st))) => {
                    tracing::info!(project = %name, state = ?st.state, error = st.error.as_deref().unwrap_or(""), files = st.stats.files_transferred, bytes = st.stats.bytes_received, "sync finished")
                }
                Ok(Ok(RunResult::SkippedLocked)) => {
                    tracing::info!(project = %name, "locked by another run; skipped")
                }
                Ok(Err(e)) => {
                    tracing::error!(project = %name, error = %format!("{e:#}"), "sync could not run")
                }
                Err(e) => tracing::error!(project = %name, error = %e, "sync task failed"),
            }
            let _ = tx.send(Msg::Finished { project: name });
        });
    }
    Ok(())
}

async fn schedule(config: DaemonConfig, tx: mpsc::UnboundedSender<Msg>) {
    let jitter: BTreeMap<String, f64> =
        config.projects.iter().map(|p| (p.name.clone(), runner::jitter_fraction())).collect();
    // Due times are remembered per project so one due moment triggers once.
    let mut triggered_for: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let now = runner::now();
        for p in &config.projects {
            let last = status::read(&config.env.state_dir, &p.name).and_then(|s| s.last_success);
            let due = next_due(last, config.interval, jitter.get(&p.name).copied().unwrap_or(0.5));
            if due <= now && triggered_for.get(&p.name) != Some(&due) {
                triggered_for.insert(p.name.clone(), due);
                let _ = tx.send(Msg::Trigger {
                    project: p.name.clone(),
                    reason: if last.is_none() { "first sync" } else { "schedule" },
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
}

async fn listen_push(host: String, port: u16, prefix: String, projects: Vec<Project>, tx: mpsc::UnboundedSender<Msg>) {
    let id = format!("mirror-sync-{}", std::process::id());
    let mut options = MqttOptions::new(id, host.clone(), port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 16);
    let filter = format!("{prefix}/#");
    let mut failures: u32 = 0;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(broker = %format!("{host}:{port}"), topic = %filter, "push: connected");
                if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(error = %e, "push: subscribe failed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let hits = projects_for_topic(&projects, &prefix, &p.topic);
                if hits.is_empty() {
                    tracing::debug!(topic = %p.topic, "push for a project we do not host");
                }
                for project in hits {
                    let _ = tx.send(Msg::Trigger { project: project.name.clone(), reason: "push" });
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                let wait = runner::backoff(Duration::from_secs(1), failures.min(6));
                tracing::warn!(error = %e, retry_in = ?wait, "push: broker connection lost; the schedule covers what is missed");
                tokio::time::sleep(wait).await;
            }
        }
    }
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
    fn schedule_is_interval_minus_jitter_and_first_sync_is_now() {
        let day = Duration::from_secs(86_400);
        assert_eq!(next_due(None, day, 0.5), 0);
        assert_eq!(next_due(Some(1000), day, 0.0), 1000 + 86_400);
        assert_eq!(next_due(Some(1000), day, 1.0), 1000 + 86_400 - 8640);
    }
}
