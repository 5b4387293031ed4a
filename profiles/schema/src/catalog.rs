//! The catalog of mirrorable projects: one TOML file per project under `profiles/projects/`,
//! saying where it comes from upstream, where it lives under /srv/mirror and how it is synced.
//! A project's behaviour is data here; no code branches on a project's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostics::{Problem, Problems, Reporter};
use crate::toml_load::{parse_collecting_unknown, read_file};

/// One mirrorable project, e.g. `profiles/projects/archlinux.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Project {
    /// Taken from the file name; not written in the file.
    #[serde(skip_deserializing, default)]
    pub name: String,
    /// What humans call it ("Arch Linux").
    pub title: String,
    /// The rsync module on the upstream mirror (may contain a sub-path: `fedora/epel`).
    pub module: String,
    /// Folder under /srv/mirror and first path segment of its URLs; also the public rsync module.
    pub path: String,
    /// Name of the public read-only rsync module on our box; `path` when absent.
    #[serde(default)]
    pub rsync_module: Option<String>,
    /// Rough size on disk, for the check that a site's projects fit its disk.
    pub size_gb: u64,
    /// Per-project bandwidth limit; the site's limit applies when absent.
    #[serde(default)]
    pub bwlimit_mbit: Option<u32>,
    /// rsync --timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    /// Excluded from every pass; with `delete_excluded` they are removed locally as well.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub delete_excluded: bool,
    /// Topic suffixes under the site's push prefix that trigger a sync; default: the module.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Write a Debian-style trace file (`path/project/trace/<hostname>`) after a complete run.
    #[serde(default)]
    pub trace: bool,
    /// Debian-style archive: wait while upstream shows `Archive-Update-in-Progress-*`.
    #[serde(default)]
    pub debian_style: bool,
    /// The passes of one run, in order; a single full pass when empty.
    #[serde(default, rename = "pass")]
    pub passes: Vec<Pass>,
    /// Rule that derives the "release" of a request path, for telemetry.
    #[serde(default)]
    pub release_pattern: Option<String>,
}

/// One rsync invocation within a run.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Pass {
    /// What this pass is for, shown in logs ("packages before indices").
    #[serde(default)]
    pub label: String,
    /// Extra excludes for this pass only (e.g. the indices in a first stage).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Sync only this sub-path of the module (e.g. KDE's `last-updated`, then `stable/`).
    #[serde(default)]
    pub only: Option<String>,
    /// Delete files gone upstream during this pass.
    #[serde(default = "yes")]
    pub delete: bool,
    /// Use --delete-after rather than --delete-delay.
    #[serde(default)]
    pub delete_after: bool,
    /// Skip symlinks in this pass (openSUSE's first pass).
    #[serde(default)]
    pub no_links: bool,
}

fn default_timeout() -> u32 {
    600
}

fn yes() -> bool {
    true
}

impl Project {
    pub fn topics(&self) -> Vec<String> {
        if self.topics.is_empty() {
            vec![self.module.clone()]
        } else {
            self.topics.clone()
        }
    }

    pub fn rsync_module(&self) -> &str {
        self.rsync_module.as_deref().unwrap_or(&self.path)
    }

    pub fn passes(&self) -> Vec<Pass> {
        if self.passes.is_empty() {
            vec![Pass { label: "full".into(), delete: true, ..Pass::default() }]
        } else {
            self.passes.clone()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    pub projects: BTreeMap<String, Project>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the catalog folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(Problems),
}

impl Catalog {
    /// Loads every `*.toml` in `dir`, reporting the problems of all files at once.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Io { path: dir.into(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        let mut projects = BTreeMap::new();
        let mut problems: Vec<Problem> = Vec::new();
        for file in files {
            let text = match read_file(&file) {
                Ok(t) => t,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            let mut reporter = Reporter::new(&file, &text);
            if let Some(mut project) = parse_collecting_unknown::<Project>(&text, &mut reporter) {
                project.name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                validate_project(&project, &mut reporter);
                projects.insert(project.name.clone(), project);
            }
            problems.extend(reporter.problems);
        }
        if problems.iter().any(|p| p.severity == crate::diagnostics::Severity::Error) {
            return Err(CatalogError::Invalid(Problems(problems)));
        }
        Ok(Catalog { dir: dir.to_path_buf(), projects })
    }

    pub fn get(&self, name: &str) -> Option<&Project> {
        self.projects.get(name)
    }
}

fn validate_project(p: &Project, r: &mut Reporter) {
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('/')
            && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if !safe(&p.module) {
        r.error(
            "module",
            format!("`{}` is not a usable rsync module path", p.module),
            "use the upstream module name, e.g. \"archlinux\" or \"fedora/epel\"",
        );
    }
    if !safe(&p.path) || p.path.contains('/') {
        r.error(
            "path",
            format!("`{}` is not a single folder name", p.path),
            "use one folder name such as \"archlinux\"; it becomes /srv/mirror/<path> and the URL prefix",
        );
    }
    validate_config_values(p, r);
    if p.size_gb == 0 {
        r.error("size_gb", "size must be at least 1 GB", "write the project's approximate size on disk in GB");
    }
    if p.timeout_s == 0 {
        r.error("timeout_s", "a zero timeout would let a hung rsync run forever", "use e.g. 600");
    }
    if let Some(pattern) = &p.release_pattern {
        if let Err(e) = crate::release::compile(&p.name, pattern) {
            r.error("release_pattern", e.reason, "write a regex over the path whose first group is the release");
        }
    }
    for (i, pass) in p.passes.iter().enumerate() {
        if pass.delete_after && !pass.delete {
            r.error(
                &format!("pass[{i}].delete_after"),
                "delete_after needs delete = true",
                "set delete = true or drop delete_after",
            );
        }
        if let Some(only) = &pass.only {
            if only.starts_with('/') || only.split('/').any(|c| c == "..") {
                r.error(
                    &format!("pass[{i}].only"),
                    format!("`{only}` must be a relative path inside the module"),
                    "write e.g. \"stable/\"",
                );
            }
        }
    }
}

/// Values that end up in configuration files and command lines on the box (rsyncd.conf's
/// `[module]` and `comment`, file names under the state folder, MQTT topics, rsync filters):
/// none may break the file it lands in or smuggle a line into it.
fn validate_config_values(p: &Project, r: &mut Reporter) {
    let name_like = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && s.len() <= 64
    };
    if !name_like(&p.name) {
        r.error(
            "",
            format!("`{}` is not a usable project name (the file name)", p.name),
            "name the file with letters, digits, '.', '_' and '-', e.g. profiles/projects/archlinux.toml",
        );
    }
    if let Some(m) = p.rsync_module.as_deref().filter(|m| !name_like(m)) {
        r.error(
            "rsync_module",
            format!("`{m}` cannot be an rsyncd module name"),
            "use letters, digits, '.', '_' and '-', e.g. \"fedora-epel\"",
        );
    }
    if p.title.is_empty() || p.title.len() > 100 || p.title.chars().any(char::is_control) {
        r.error("title", "the title must be one line of at most 100 characters", "write e.g. \"Arch Linux\"");
    }
    for (i, t) in p.topics.iter().enumerate() {
        let plain = !t.is_empty()
            && !t.starts_with('/')
            && !t.ends_with('/')
            && !t.contains(['#', '+'])
            && !t.chars().any(|c| c.is_control() || c.is_whitespace());
        if !plain {
            r.error(
                &format!("topics[{i}]"),
                format!("`{t}` is not a plain topic suffix"),
                "write the part after the site's topic prefix, e.g. \"fedora\"",
            );
        }
    }
    let patterns = p.exclude.iter().map(|e| ("exclude".to_string(), e)).chain(
        p.passes
            .iter()
            .enumerate()
            .flat_map(|(i, pass)| pass.exclude.iter().map(move |e| (format!("pass[{i}].exclude"), e))),
    );
    for (key, e) in patterns {
        if e.is_empty() || e.chars().any(char::is_control) {
            r.error(
                &key,
                format!("{e:?} is not a usable rsync pattern"),
                "write one pattern per item, e.g. \"*/debug/\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_entries_and_defaults_one_full_pass() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "arch.toml",
            "title = \"Arch\"\nmodule = \"archlinux\"\npath = \"archlinux\"\nsize_gb = 100\n",
        );
        let c = Catalog::load(dir.path()).unwrap();
        let p = c.get("arch").unwrap();
        assert_eq!(p.passes().len(), 1);
        assert!(p.passes()[0].delete);
        assert_eq!(p.topics(), vec!["archlinux".to_string()]);
    }

    #[test]
    fn values_that_reach_config_files_cannot_break_them() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "x.toml",
            "title = \"X\\n[evil]\"\nmodule = \"x\"\npath = \"x\"\nrsync_module = \"x]\\npath = /\"\nsize_gb = 1\n\
             topics = [\"a/#\"]\nexclude = [\"ok/\", \"bad\\npattern\"]\n",
        );
        let Err(CatalogError::Invalid(Problems(problems))) = Catalog::load(dir.path()) else {
            panic!("expected problems")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in ["title", "rsync_module", "topics[0]", "exclude"] {
            assert!(keys.contains(&key), "{key} not refused: {keys:?}");
        }
        let rsync = problems.iter().find(|p| p.key == "rsync_module").unwrap();
        assert!(rsync.file.ends_with("x.toml") && rsync.line == Some(4), "{rsync}");
    }

    #[test]
    fn reports_every_bad_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "title = \"A\"\nmodule = \"../x\"\npath = \"a\"\nsize_gb = 1\ncolour = 3\n");
        write(
            dir.path(),
            "b.toml",
            "title = \"B\"\nmodule = \"b\"\npath = \"b/c\"\nsize_gb = 0\nrelease_pattern = \"^b/[0-9]+\"\n",
        );
        let Err(CatalogError::Invalid(Problems(problems))) = Catalog::load(dir.path()) else {
            panic!("expected problems")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"colour"), "{keys:?}");
        assert!(keys.contains(&"module"), "{keys:?}");
        assert!(keys.contains(&"path"), "{keys:?}");
        assert!(keys.contains(&"size_gb"), "{keys:?}");
        assert!(keys.contains(&"release_pattern"), "a rule without a group is refused: {keys:?}");
        let colour = problems.iter().find(|p| p.key == "colour").unwrap();
        assert_eq!(colour.line, Some(5));
    }
}
