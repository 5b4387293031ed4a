//! What an update server offers: its SHA256SUMS (already signature-checked by the caller) read
//! into versions, each with its root image and UKI and their hashes. Pure parsing; a version
//! missing one of its two artifacts is not offered, and lines that are not ours are ignored (a
//! site folder may hold other files).

use std::collections::BTreeMap;

use image::version::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub sha256: String,
}

/// One version on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: Version,
    pub root: Artifact,
    pub uki: Artifact,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("SHA256SUMS line {line}: `{text}` is not \"HASH  NAME\" with a 64-digit SHA-256")]
    Malformed { line: usize, text: String },
    #[error("SHA256SUMS lists {name} twice with different hashes")]
    Conflict { name: String },
}

/// Every complete version in `sums`, oldest first.
pub fn parse(sums: &str) -> Result<Vec<Offer>, FeedError> {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for (i, line) in sums.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let malformed = || FeedError::Malformed { line: i + 1, text: line.chars().take(120).collect() };
        let (hash, name) = line.split_once(' ').ok_or_else(malformed)?;
        // sha256sum writes "HASH  NAME" (text) or "HASH *NAME" (binary).
        let name = name.trim_start_matches(' ').trim_start_matches('*');
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() || name.contains('/') {
            return Err(malformed());
        }
        let hash = hash.to_ascii_lowercase();
        if let Some(old) = by_name.insert(name.to_string(), hash.clone()) {
            if old != hash {
                return Err(FeedError::Conflict { name: name.to_string() });
            }
        }
    }
    let mut versions: BTreeMap<Version, (Option<Artifact>, Option<Artifact>)> = BTreeMap::new();
    for (name, sha256) in by_name {
        let Some(version) = Version::of_artifact(&name) else { continue };
        let slot = versions.entry(version.clone()).or_default();
        let artifact = Some(Artifact { name: name.clone(), sha256 });
        if name == version.root_artifact() {
            slot.0 = artifact;
        } else {
            slot.1 = artifact;
        }
    }
    Ok(versions
        .into_iter()
        .filter_map(|(version, pair)| match pair {
            (Some(root), Some(uki)) => Some(Offer { version, root, uki }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn complete_versions_are_offered_oldest_first() {
        let sums = format!(
            "{}  micromirror_20261202.000000.root.zst\n{} *micromirror_20261202.000000.efi\n\
             {}  micromirror_20261201.000000.efi\n{}  micromirror_20261201.000000.root.zst\n\
             {}  micromirror_20261203.000000.efi\n{}  README.txt\n",
            h('a'),
            h('b'),
            h('c'),
            h('d'),
            h('e'),
            h('f')
        );
        let offers = parse(&sums).unwrap();
        let versions: Vec<&str> = offers.iter().map(|o| o.version.as_str()).collect();
        assert_eq!(versions, ["20261201.000000", "20261202.000000"], "20261203 lacks its root image");
        assert_eq!(offers[1].root.sha256, h('a'));
        assert_eq!(offers[1].uki.name, "micromirror_20261202.000000.efi");
    }

    #[test]
    fn malformed_and_conflicting_lines_are_refused_with_their_line() {
        let err = parse("nothex  micromirror_20261201.000000.efi\n").unwrap_err();
        assert!(matches!(err, FeedError::Malformed { line: 1, .. }), "{err}");
        let twice = format!("{}  a.efi\n{}  a.efi\n", h('a'), h('b'));
        assert_eq!(parse(&twice).unwrap_err(), FeedError::Conflict { name: "a.efi".into() });
        let path = format!("{}  ../etc/passwd\n", h('a'));
        assert!(parse(&path).is_err());
    }
}
