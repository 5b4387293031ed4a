//! Problems found in a TOML file (a site profile or a catalog entry), each pointing at a file,
//! a line and a key, with the fix. Loaders collect every problem before reporting, so an operator
//! fixes a profile in one pass instead of one error per build.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, TableLike};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `network.ipv4_gateway` or `mirror.projects[2]`.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// A list of problems that together make a file unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.0.iter().filter(|p| p.severity == Severity::Error).count();
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        write!(f, "{errors} error(s)")
    }
}

impl std::error::Error for Problems {}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn key_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parses a dotted path such as `mirror.projects[2]` back into segments.
pub fn parse_key_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segs.push(Seg::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

/// Collects problems for one source file, resolving key paths to line numbers.
pub struct Reporter<'a> {
    file: PathBuf,
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
    pub problems: Vec<Problem>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &Path, text: &'a str) -> Self {
        Reporter { file: file.to_path_buf(), text, doc: ImDocument::parse(text).ok(), problems: Vec::new() }
    }

    pub fn error(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Error, key, message.into(), fix.into());
    }

    pub fn warn(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Warning, key, message.into(), fix.into());
    }

    /// Records a problem at a byte span (from a parser error) rather than a key.
    pub fn error_at(&mut self, span: Option<Range<usize>>, key: &str, message: String, fix: &str) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.problems.push(Problem {
            severity: Severity::Error,
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message,
            fix: fix.to_string(),
        });
    }

    fn push(&mut self, severity: Severity, key: &str, message: String, fix: String) {
        let line = self.line_of_key(key);
        self.problems.push(Problem { severity, file: self.file.clone(), line, key: key.to_string(), message, fix });
    }

    /// Line of the deepest part of `key` present in the file (the table when the key is absent).
    pub fn line_of_key(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let span = deepest_span(doc.as_table(), &parse_key_path(key), None);
        span.map(|s| line_of(self.text, s.start))
    }

    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

fn deepest_span(table: &dyn TableLike, segs: &[Seg], best: Option<Range<usize>>) -> Option<Range<usize>> {
    let Some((Seg::Key(first), rest)) = segs.split_first() else {
        return best;
    };
    let Some((k, item)) = table.get_key_value(first) else {
        return best;
    };
    let best = k.span().or(best);
    match rest.split_first() {
        None => best,
        Some((Seg::Index(i), after)) => {
            if let Some(array) = item.as_array() {
                array.get(*i).and_then(|v| v.span()).or(best)
            } else if let Some(t) = item.as_array_of_tables().and_then(|ts| ts.get(*i)) {
                deepest_span(t, after, t.span().or(best))
            } else {
                best
            }
        }
        Some(_) => match item.as_table_like() {
            Some(t) => deepest_span(t, rest, best),
            None => best,
        },
    }
}

pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_round_trip() {
        let segs = parse_key_path("mirror.projects[2]");
        assert_eq!(segs, vec![Seg::Key("mirror".into()), Seg::Key("projects".into()), Seg::Index(2)]);
        assert_eq!(key_path(&segs), "mirror.projects[2]");
    }

    #[test]
    fn lines_resolve_for_keys_and_array_items() {
        let text = "[site]\nname = \"x\"\n\n[mirror]\nprojects = [\n  \"a\",\n  \"b\",\n]\n";
        let r = Reporter::new(Path::new("x.toml"), text);
        assert_eq!(r.line_of_key("site.name"), Some(2));
        assert_eq!(r.line_of_key("mirror.projects[1]"), Some(7));
        // An absent key points at the nearest present parent.
        assert_eq!(r.line_of_key("site.hostname"), Some(1));
        let text = "[[passes]]\nexclude = []\n\n[[passes]]\ndelete = 3\n";
        let r = Reporter::new(Path::new("x.toml"), text);
        assert_eq!(r.line_of_key("passes[1].delete"), Some(5));
    }
}
