//! Reading TOML into typed structs while collecting every unknown key (not just the first), so
//! the profile and catalog loaders can report all problems of a file at once.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::diagnostics::{Problem, Reporter, Severity};

pub fn read_file(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path).map_err(|e| Problem {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
        fix: "check the path and the file's permissions".into(),
    })
}

/// Deserializes `text`; unknown keys and type errors become problems in `reporter`.
/// Returns `None` when the text could not be turned into a `T` at all.
pub fn parse_collecting_unknown<T: DeserializeOwned>(text: &str, reporter: &mut Reporter) -> Option<T> {
    let de = match text.parse::<toml_edit::de::Deserializer>() {
        Ok(de) => de,
        Err(e) => {
            reporter.error_at(e.span(), "", format!("not valid TOML: {}", e.message()), "fix the syntax at this line");
            return None;
        }
    };
    let mut unknown: Vec<String> = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()));
    for key in unknown {
        let key = key.replace(".?", "");
        reporter.error(
            &key,
            format!("unknown key `{key}`"),
            "remove it or check its spelling against the README's profile reference",
        );
    }
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            let key = e.message().split('`').nth(1).unwrap_or("").to_string();
            reporter.error_at(
                e.span(),
                &key,
                e.message().trim().to_string(),
                "give the key the type the README's profile reference shows",
            );
            None
        }
    }
}
