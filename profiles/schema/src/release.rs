//! Which "release" a request belongs to, by the project's rule in the catalog
//! (`release_pattern`: a regex over the path inside the mirror whose first group is the release,
//! e.g. `^fedora/linux/(?:releases|updates)/([0-9]+)/`). Data, not code, per project.

use std::collections::HashMap;

use regex::Regex;

use crate::catalog::Project;

#[derive(Debug, Clone, Default)]
pub struct ReleaseRules {
    /// Project folder (first path segment) → its rule.
    by_folder: HashMap<String, Regex>,
}

#[derive(Debug, thiserror::Error)]
#[error("project {project}: release_pattern `{pattern}`: {reason}")]
pub struct RuleError {
    pub project: String,
    pub pattern: String,
    pub reason: String,
}

impl ReleaseRules {
    pub fn from_projects<'a>(projects: impl IntoIterator<Item = &'a Project>) -> Result<ReleaseRules, RuleError> {
        let mut by_folder = HashMap::new();
        for p in projects {
            let Some(pattern) = &p.release_pattern else { continue };
            by_folder.insert(p.path.clone(), compile(&p.name, pattern)?);
        }
        Ok(ReleaseRules { by_folder })
    }

    /// The release of `path` (relative to the mirror root, without a leading slash).
    pub fn release_of(&self, project: &str, path: &str) -> Option<String> {
        let rule = self.by_folder.get(project)?;
        rule.captures(path)?.get(1).map(|m| m.as_str().to_string())
    }
}

/// Compiles a rule, refusing one without a capture group (it could never name a release).
pub fn compile(project: &str, pattern: &str) -> Result<Regex, RuleError> {
    let err = |reason: String| RuleError { project: project.into(), pattern: pattern.into(), reason };
    let re = Regex::new(pattern).map_err(|e| err(e.to_string()))?;
    if re.captures_len() < 2 {
        return Err(err(
            "no capture group: put the release in parentheses, e.g. ^fedora/linux/releases/([0-9]+)/".into()
        ));
    }
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(name: &str, path: &str, pattern: &str) -> Project {
        let text = format!(
            "title = \"t\"\nmodule = \"{path}\"\npath = \"{path}\"\nsize_gb = 1\nrelease_pattern = '{pattern}'\n"
        );
        let mut p: Project = toml_edit::de::from_str(&text).unwrap();
        p.name = name.into();
        p
    }

    #[test]
    fn derives_releases_from_catalog_rules() {
        let rules = ReleaseRules::from_projects(&[
            project("fedora", "fedora", "^fedora/linux/(?:releases|updates)/([0-9]+)/"),
            project("ubuntu", "ubuntu", "^ubuntu/dists/([a-z]+)"),
        ])
        .unwrap();
        assert_eq!(
            rules.release_of("fedora", "fedora/linux/releases/41/Everything/x86_64/os/a.rpm").as_deref(),
            Some("41")
        );
        assert_eq!(rules.release_of("fedora", "fedora/linux/updates/40/x.rpm").as_deref(), Some("40"));
        assert_eq!(rules.release_of("fedora", "fedora/linux/development/rawhide/x"), None);
        assert_eq!(rules.release_of("ubuntu", "ubuntu/dists/noble-updates/InRelease").as_deref(), Some("noble"));
        assert_eq!(rules.release_of("archlinux", "archlinux/core/os/x86_64/core.db"), None);
    }

    #[test]
    fn a_rule_without_a_group_or_with_bad_syntax_is_refused_naming_the_project() {
        let e = compile("epel", "^epel/[0-9]+/").unwrap_err();
        assert!(e.to_string().contains("epel") && e.to_string().contains("capture group"), "{e}");
        assert!(compile("x", "^x/(").is_err());
    }
}
