//! `mirror-sync check`: what the sync would do, so an operator can compare it with today's
//! playbook before shipping: each hosted project's rsync command lines (every pass, in order)
//! and the push topics that trigger it, in full as the broker sends them. Plans only; runs
//! nothing.

use schema::catalog::Project;
use schema::status;
use serde::Serialize;

use crate::plan;
use crate::runner::SyncEnv;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectPlan {
    pub project: String,
    pub passes: Vec<PassPlan>,
    /// Full topics (`prefix/suffix`); empty without push.
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassPlan {
    pub label: String,
    /// The whole command line, `rsync` first.
    pub command: Vec<String>,
}

/// The plan of every project; `topic_prefix` is the site's push prefix, if it has push.
pub fn plans(projects: &[Project], env: &SyncEnv, topic_prefix: Option<&str>) -> Vec<ProjectPlan> {
    projects
        .iter()
        .map(|p| {
            let files = status::read(&env.state_dir, &p.name).map(|s| s.stats.files_total).filter(|n| *n > 0);
            let max_delete = plan::max_delete(files, f64::from(env.max_delete_percent) / 100.0);
            let passes = plan::plan(p, &env.ends, env.bwlimit_mbit, max_delete)
                .into_iter()
                .map(|inv| PassPlan {
                    label: inv.label.clone(),
                    command: std::iter::once("rsync".to_string()).chain(inv.command_line()).collect(),
                })
                .collect();
            let topics = match topic_prefix {
                Some(prefix) => p.topics().iter().map(|t| format!("{prefix}/{t}")).collect(),
                None => Vec::new(),
            };
            ProjectPlan { project: p.name.clone(), passes, topics }
        })
        .collect()
}

/// For people: one block per project, each command line shell-quoted so it can be pasted.
pub fn render(plans: &[ProjectPlan]) -> String {
    let mut out = String::new();
    for p in plans {
        out.push_str(&format!("{}\n", p.project));
        for (i, pass) in p.passes.iter().enumerate() {
            let line: Vec<String> = pass.command.iter().map(|a| shell_quote(a)).collect();
            out.push_str(&format!("  pass {} ({}): {}\n", i + 1, pass.label, line.join(" ")));
        }
        if p.topics.is_empty() {
            out.push_str("  push: none (schedule only)\n");
        } else {
            out.push_str(&format!("  push: {}\n", p.topics.join(", ")));
        }
    }
    out
}

/// Single-quotes an argument when the shell would otherwise split or expand it.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_the_shell_would_touch() {
        assert_eq!(shell_quote("--bwlimit=25600"), "--bwlimit=25600");
        assert_eq!(shell_quote("--exclude=*/debug/"), "'--exclude=*/debug/'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
