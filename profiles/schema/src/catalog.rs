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
    /// Other names that resolve to this entry (the playbook's, e.g. `epel-amd64`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Size on disk in GB (10^9 bytes), for the check that a site's projects fit its disk.
    pub size_gb: u64,
    /// When `size_gb` was measured (`YYYY-MM` or `YYYY-MM-DD`): sizes grow, so a reader knows
    /// how old the figure is.
    #[serde(default)]
    pub size_measured: Option<String>,
    /// Per-project rsync bandwidth limit in rsync's own notation (`"25M"` is 25 MiB/s) or
    /// `"none"`; the site's `mirror.bwlimit_mbit` applies when absent.
    #[serde(default)]
    pub bwlimit: Option<Bandwidth>,
    /// rsync --timeout in seconds, or `"none"` for no I/O timeout.
    #[serde(default)]
    pub timeout_s: Timeout,
    /// Extra rsync options of every pass (e.g. `--safe-links`), as the upstream recipe has them.
    #[serde(default)]
    pub flags: Vec<String>,
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
    /// A small file of the module the upstream rewrites whenever its tree changes (Arch's
    /// `lastupdate`, AlmaLinux's `TIME`, Fedora's `fullfiletimelist-*`, a Debian-style archive's
    /// `project/trace/{upstream}`, `{upstream}` being the upstream's host name): a run first fetches it
    /// alone and skips the full walk when it is the file the last full run brought (a full run
    /// still happens once a day, to catch drift).
    #[serde(default)]
    pub marker: Option<String>,
    /// What the distribution's own checker reads and when it drops the mirror, so each box
    /// says how fresh it looks to it (`mirror-sync status`, metrics, the fleet's alerts).
    #[serde(default)]
    pub freshness: Option<crate::freshness::Freshness>,
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

/// An rsync bandwidth limit: KiB/s (rsync's unit) or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    KibPerSecond(u64),
    Unlimited,
}

impl Bandwidth {
    /// Parses rsync's notation: a number of KiB/s with an optional binary suffix (`K`, `M`,
    /// `G`, as rsync reads `--bwlimit=25M`), or `none`.
    pub fn parse(text: &str) -> Option<Bandwidth> {
        if text == "none" {
            return Some(Bandwidth::Unlimited);
        }
        let (digits, scale) = match text.as_bytes().last()? {
            b'K' | b'k' => (&text[..text.len() - 1], 1),
            b'M' | b'm' => (&text[..text.len() - 1], 1024),
            b'G' | b'g' => (&text[..text.len() - 1], 1024 * 1024),
            _ => (text, 1),
        };
        let n: u64 = digits.parse().ok().filter(|n| *n > 0)?;
        Some(Bandwidth::KibPerSecond(n.checked_mul(scale)?))
    }

    /// The value of `--bwlimit=`, or `None` for no option at all.
    pub fn rsync_kib(self) -> Option<u64> {
        match self {
            Bandwidth::KibPerSecond(k) => Some(k),
            Bandwidth::Unlimited => None,
        }
    }

    /// A site limit given in Mbit/s, as rsync's KiB/s.
    pub fn from_mbit(mbit: u32) -> Bandwidth {
        Bandwidth::KibPerSecond(u64::from(mbit) * 1_000_000 / 8 / 1024)
    }
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Bandwidth::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`bwlimit` {text:?} is not an rsync rate: write e.g. \"25M\" (25 MiB/s), \"800K\" or \"none\""
            ))
        })
    }
}

impl Serialize for Bandwidth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bandwidth::Unlimited => s.serialize_str("none"),
            Bandwidth::KibPerSecond(k) if k % (1024 * 1024) == 0 => s.serialize_str(&format!("{}G", k / 1024 / 1024)),
            Bandwidth::KibPerSecond(k) if k % 1024 == 0 => s.serialize_str(&format!("{}M", k / 1024)),
            Bandwidth::KibPerSecond(k) => s.serialize_str(&format!("{k}K")),
        }
    }
}

/// rsync's I/O timeout: seconds, or none (the upstream recipe of some projects has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Seconds(u32),
    Never,
}

impl Default for Timeout {
    fn default() -> Self {
        Timeout::Seconds(600)
    }
}

impl Timeout {
    pub fn seconds(self) -> Option<u32> {
        match self {
            Timeout::Seconds(s) => Some(s),
            Timeout::Never => None,
        }
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Timeout::Seconds(s)),
            Raw::Word(w) if w == "none" => Ok(Timeout::Never),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "`timeout_s` {w:?} is neither seconds nor \"none\": write e.g. 600"
            ))),
        }
    }
}

impl Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Timeout::Seconds(n) => s.serialize_u32(*n),
            Timeout::Never => s.serialize_str("none"),
        }
    }
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
        problems.extend(alias_clashes(dir, &projects));
        if problems.iter().any(|p| p.severity == crate::diagnostics::Severity::Error) {
            return Err(CatalogError::Invalid(Problems(problems)));
        }
        Ok(Catalog { dir: dir.to_path_buf(), projects })
    }

    /// The entry called `name`, or the one that lists `name` among its aliases.
    pub fn get(&self, name: &str) -> Option<&Project> {
        self.projects.get(name).or_else(|| self.projects.values().find(|p| p.aliases.iter().any(|a| a == name)))
    }

    /// Every name a profile may use: entry names and aliases.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .projects
            .values()
            .flat_map(|p| std::iter::once(p.name.as_str()).chain(p.aliases.iter().map(String::as_str)))
            .collect();
        v.sort_unstable();
        v
    }
}

/// An alias must name one entry only: neither another entry's name nor another's alias.
fn alias_clashes(dir: &Path, projects: &BTreeMap<String, Project>) -> Vec<Problem> {
    let mut owner: BTreeMap<&str, &str> = projects.keys().map(|n| (n.as_str(), n.as_str())).collect();
    let mut out = Vec::new();
    for p in projects.values() {
        for alias in &p.aliases {
            if let Some(other) = owner.insert(alias, &p.name) {
                out.push(Problem {
                    severity: crate::diagnostics::Severity::Error,
                    file: dir.join(format!("{}.toml", p.name)),
                    line: None,
                    key: "aliases".into(),
                    message: format!("`{alias}` already names the entry `{other}`"),
                    fix: "give each alias to one entry only".into(),
                });
            }
        }
    }
    out
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
    if let Some(m) = &p.marker {
        // `{upstream}` stands for the upstream's host name (Debian-style trace files).
        let m_expanded = m.replace("{upstream}", "upstream.example.net");
        if !safe(&m_expanded) || m.ends_with('/') {
            r.error(
                "marker",
                format!("`{m}` is not a file inside the module"),
                "name the upstream's marker file by its path in the module, e.g. \"lastupdate\"",
            );
        }
    }
    if let Some(f) = &p.freshness {
        if f.file.as_deref().is_some_and(|file| !safe(file) || file.ends_with('/')) {
            r.error(
                "freshness.file",
                format!("`{}` is not a file of the tree", f.file.as_deref().unwrap_or("")),
                "name the file the checker reads by its path in the tree, e.g. \"lastsync\"",
            );
        }
        if f.out_of_sync_hours == 0 {
            r.error("freshness.out_of_sync_hours", "must be at least 1", "write when the checker drops the mirror");
        }
    }
    validate_config_values(p, r);
    if p.size_gb == 0 {
        r.error("size_gb", "size must be at least 1 GB", "write the project's approximate size on disk in GB");
    }
    if p.timeout_s == Timeout::Seconds(0) {
        r.error(
            "timeout_s",
            "a zero timeout is ambiguous (rsync reads it as none)",
            "use e.g. 600, or \"none\" where the upstream recipe has no timeout",
        );
    }
    if let Some(date) = &p.size_measured {
        if jiff::civil::Date::strptime("%Y-%m-%d", date).is_err()
            && jiff::civil::Date::strptime("%Y-%m-%d", format!("{date}-01")).is_err()
        {
            r.error(
                "size_measured",
                format!("`{date}` is not a date"),
                "write when size_gb was measured, e.g. \"2026-06\"",
            );
        }
    }
    validate_flags(p, r);
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

/// Options the sync sets itself from other keys (or must never get): a flag may add behaviour,
/// not fight the plan.
const MANAGED_FLAGS: &[&str] = &[
    "--delete",
    "--bwlimit",
    "--timeout",
    "--contimeout",
    "--exclude",
    "--include",
    "--filter",
    "--max-delete",
    "--remove-source-files",
    "--rsh",
    "--rsync-path",
    "--daemon",
    "--config",
    "--files-from",
    "--password-file",
    "--temp-dir",
    "--partial-dir",
    "--compare-dest",
    "--copy-dest",
    "--link-dest",
    "--write-batch",
    "--only-write-batch",
    "--log-file",
];

fn validate_flags(p: &Project, r: &mut Reporter) {
    for (i, flag) in p.flags.iter().enumerate() {
        let name = flag.split('=').next().unwrap_or_default();
        let well_formed = name.len() > 2
            && name.starts_with("--")
            && name[2..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !flag.chars().any(|c| c.is_control() || c.is_whitespace());
        if !well_formed {
            r.error(
                &format!("flags[{i}]"),
                format!("{flag:?} is not one long rsync option"),
                "write one option per item in its long form, e.g. \"--safe-links\"",
            );
        } else if MANAGED_FLAGS.iter().any(|m| name.starts_with(m)) {
            r.error(
                &format!("flags[{i}]"),
                format!("`{name}` is set by the sync itself"),
                "use the entry's own key instead (exclude, pass.delete, bwlimit, timeout_s)",
            );
        }
    }
    for (i, alias) in p.aliases.iter().enumerate() {
        if alias.is_empty() || !alias.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            r.error(
                &format!("aliases[{i}]"),
                format!("`{alias}` is not a project name"),
                "use letters, digits, '.', '_' and '-'",
            );
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
