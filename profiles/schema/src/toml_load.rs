//! Reading TOML into typed structs while collecting every problem of a file at once: every
//! unknown key (not just the first), and every type error with its key path and what the key
//! takes. serde stops at the first type error, so after one the offending key is taken out of a
//! working copy of the document and the file is read again (at most `MAX_TYPE_ERRORS` times):
//! the later keys, the unknown ones and, when only optional keys were wrong, the loaders' own
//! checks still run and report beside it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml_edit::{DocumentMut, Item};

use crate::diagnostics::{parse_key_path, Problem, Reporter, Seg, Severity};

/// More type errors than this in one file are most likely a file of another kind.
const MAX_TYPE_ERRORS: usize = 32;

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
/// Returns `None` when the text could not be turned into a `T` at all (a syntax error, a
/// missing key, or a wrong one that is required); with type errors only in optional keys it
/// returns the `T` read without them, so the caller's checks can report beside them.
pub fn parse_collecting_unknown<T: DeserializeOwned>(text: &str, reporter: &mut Reporter) -> Option<T> {
    let mut working = match text.parse::<DocumentMut>() {
        Ok(doc) => doc,
        Err(e) => {
            reporter.error_at(e.span(), "", format!("not valid TOML: {}", e.message()), "fix the syntax at this line");
            return None;
        }
    };
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    let mut taken_out: Vec<String> = Vec::new();
    let mut parsed = None;
    for _ in 0..MAX_TYPE_ERRORS {
        let de = toml_edit::de::Deserializer::from(working.clone());
        let mut note_unknown = |path: serde_ignored::Path| {
            unknown.insert(path.to_string().replace(".?", ""));
        };
        let ignored = serde_ignored::Deserializer::new(de, &mut note_unknown);
        match serde_path_to_error::deserialize::<_, T>(ignored) {
            Ok(v) => {
                parsed = Some(v);
                break;
            }
            Err(e) => {
                let key = clean_path(&e.path().to_string());
                let message = e.into_inner().message().trim().to_string();
                if let Some(field) = missing_field(&message) {
                    let full = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
                    if !taken_out.contains(&full) {
                        let table = if key.is_empty() { "the top level".to_string() } else { format!("[{key}]") };
                        reporter.error(
                            &full,
                            "missing: the key is required",
                            format!("add `{field} = …` to {table}; the README's profile reference says what it takes"),
                        );
                    }
                    break;
                }
                reporter.error(&key, message.clone(), fix_for(&key, &message));
                if !take_out(&mut working, &key) {
                    break;
                }
                taken_out.push(key);
            }
        }
    }
    for key in unknown {
        reporter.error(
            &key,
            format!("unknown key `{key}`"),
            "remove it or check its spelling against the README's profile reference",
        );
    }
    parsed
}

/// serde_path_to_error's path without the `?` of unnamed steps (options, flattened parts).
fn clean_path(path: &str) -> String {
    path.split('.').filter(|s| *s != "?").collect::<Vec<_>>().join(".")
}

/// `missing field `upstream`` → `upstream`.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// What to write instead, from serde's "expected …" (its words for our types).
fn fix_for(key: &str, message: &str) -> String {
    let name = key.rsplit('.').next().unwrap_or(key);
    if message.starts_with("unknown variant") {
        if let Some((_, variants)) = message.split_once("expected ") {
            let variants = variants.trim_start_matches("one of ");
            return format!("write one of {variants} (in double quotes)");
        }
    }
    let expected = message.rsplit_once("expected ").map_or("", |(_, e)| e.trim());
    match expected {
        "u8" | "u16" | "u32" | "u64" | "i32" | "i64" | "usize" => {
            format!("write a whole number without quotes, e.g. `{name} = 64`")
        }
        "f32" | "f64" => format!("write a number without quotes, e.g. `{name} = 37.5`"),
        "a boolean" => format!("write `{name} = true` or `{name} = false` (no quotes)"),
        "a string" => format!("put the value in double quotes, e.g. `{name} = \"…\"`"),
        "a sequence" => format!("write a list, e.g. `{name} = [\"…\", \"…\"]`"),
        e if e.starts_with("struct") || e.starts_with("a map") => {
            format!("write a table: `[{key}]` with its keys, or `{name} = {{ key = value, … }}`")
        }
        _ => "give the key the type the README's profile reference shows".into(),
    }
}

/// Removes `key` (a path such as `site.disk_gb` or `mirror.projects[2]`) from the document;
/// false when it is not there (nothing more can be learnt by reading again).
fn take_out(doc: &mut DocumentMut, key: &str) -> bool {
    let segs = parse_key_path(key);
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut item: &mut Item = doc.as_item_mut();
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => item.get_mut(k.as_str()),
            Seg::Index(i) => item.get_mut(*i),
        };
        match next {
            Some(n) => item = n,
            None => return false,
        }
    }
    match last {
        Seg::Key(k) => item.as_table_like_mut().and_then(|t| t.remove(k)).is_some(),
        Seg::Index(i) => match item {
            Item::Value(toml_edit::Value::Array(a)) if *i < a.len() => {
                a.remove(*i);
                true
            }
            Item::ArrayOfTables(ts) if *i < ts.len() => {
                ts.remove(*i);
                true
            }
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        site: Site,
        mirror: Mirror,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Site {
        name: String,
        disk_gb: Option<u64>,
        #[serde(default)]
        test: bool,
    }
    #[derive(Debug, serde::Deserialize)]
    enum Distro {
        #[serde(rename = "debian-12")]
        Debian12,
        #[serde(rename = "almalinux-9")]
        Almalinux9,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Mirror {
        upstream: String,
        distro: Option<Distro>,
    }

    fn problems(text: &str) -> (bool, Vec<Problem>) {
        let mut r = Reporter::new(Path::new("x.toml"), text);
        let parsed = parse_collecting_unknown::<Doc>(text, &mut r).is_some();
        (parsed, r.problems)
    }

    #[test]
    fn every_type_error_is_named_by_its_key_with_what_it_takes_beside_the_unknown_keys() {
        let text = "[site]\nname = \"a\"\ndisk_gb = \"64\"\ntest = \"yes\"\nbogus = 1\n\n[mirror]\nupstream = \"m\"\ndistro = \"debian-13\"\n";
        let (parsed, p) = problems(text);
        assert!(parsed, "only optional keys were wrong: the rest is read for the other checks");
        let lines: Vec<String> =
            p.iter().map(|p| format!("{:?} {} {} | {}", p.line, p.key, p.message, p.fix)).collect();
        assert_eq!(p.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("Some(3) site.disk_gb invalid type: string \"64\", expected u64"), "{lines:#?}");
        assert!(lines[0].contains("`disk_gb = 64`"), "{lines:#?}");
        assert!(lines[1].starts_with("Some(4) site.test invalid") && lines[1].contains("true"), "{lines:#?}");
        assert!(lines[2].starts_with("Some(9) mirror.distro unknown variant `debian-13`"), "{lines:#?}");
        assert!(lines[2].contains("write one of `debian-12` or `almalinux-9`"), "{lines:#?}");
        assert!(lines[3].starts_with("Some(5) site.bogus unknown key `site.bogus`"), "{lines:#?}");
    }

    #[test]
    fn a_missing_key_says_to_add_it_where_and_a_wrong_required_key_is_not_also_missing() {
        let (parsed, p) = problems("[site]\nname = \"a\"\n\n[mirror]\n");
        assert!(!parsed);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(
            (p[0].line, p[0].key.as_str(), p[0].message.as_str()),
            (Some(4), "mirror.upstream", "missing: the key is required")
        );
        assert!(p[0].fix.starts_with("add `upstream = …` to [mirror]"), "{}", p[0].fix);
        let (parsed, p) = problems("[site]\nname = 5\n\n[mirror]\nupstream = \"m\"\n");
        assert!(!parsed);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].key, "site.name");
        assert!(p[0].message.starts_with("invalid type: integer `5`, expected a string"), "{p:#?}");
    }
}
