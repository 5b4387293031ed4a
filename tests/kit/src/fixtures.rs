//! What tests serve and sync: deterministic bytes, a Debian-style repository that publishes
//! new versions, a mirror-sync status file in the real format, and lab site profiles (a valid
//! minimal profile with the catalog entries it names beside it, as on the appliance).

use std::path::{Path, PathBuf};
use std::time::Duration;

use schema::status::{self, Outcome, Status};

use crate::workspace;

/// Deterministic pseudo-random bytes: the same `seed` gives the same content.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut v);
    v
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// Every regular file under `dir` with the sha256 of its bytes, by relative path, sorted
/// (rsync's `.~tmp~` folders left out): two trees are the same when their snapshots are.
pub fn snapshot(dir: &Path) -> Vec<(String, String)> {
    use sha2::Digest;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == ".~tmp~" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p) {
                let digest: String = sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
                let rel = p.strip_prefix(dir).expect("a path under the snapshot's folder");
                out.push((rel.display().to_string(), digest));
            }
        }
    }
    out.sort();
    out
}

/// Publishes version `version` of a Debian-style repository in `up`: one package of `size`
/// bytes in the pool and the index naming it; the previous version's package is removed.
/// Each publication is stamped ten minutes after the last, as a real archive's would be
/// (rsync's quick check compares size and mtime).
pub fn publish_debian(up: &Path, version: u32, size: usize) {
    let name = format!("pool/main/h/hello/hello_{version}_all.deb");
    write_file(&up.join(&name), &bytes(size, u64::from(version)));
    let packages = format!("Package: hello\nVersion: {version}\nFilename: {name}\nSize: {size}\n\n");
    write_file(&up.join("dists/stable/main/binary-amd64/Packages"), packages.as_bytes());
    write_file(&up.join("dists/stable/Release"), format!("Suite: stable\nVersion: {version}\n").as_bytes());
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(version) * 600);
    for f in ["dists/stable/Release", "dists/stable/main/binary-amd64/Packages"] {
        std::fs::File::options().write(true).open(up.join(f)).and_then(|f| f.set_modified(when)).expect("set mtime");
    }
    if version > 1 {
        let _ = std::fs::remove_file(up.join(format!("pool/main/h/hello/hello_{}_all.deb", version - 1)));
    }
}

/// A mirror-sync status file saying `project` (kept in the folder of the same name) synced just
/// now and takes `size_bytes` on disk, written with the real type so tests follow the format.
pub fn write_status(dir: &Path, project: &str, size_bytes: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let st = Status {
        state: Outcome::Success,
        size_bytes,
        ended: Some(now),
        last_success: Some(now),
        ..Status::running(project, project, now)
    };
    status::write(dir, &st).expect("status file written");
}

/// The host name of every lab profile (trace files and telemetry records carry it).
pub const LAB_HOSTNAME: &str = "lab.mm.example.net";

/// A valid minimal site profile for tests, written as `DIR/site.toml` with the catalog entries
/// of its projects in `DIR/projects/` (the appliance's layout). Sections and keys the test
/// needs are appended as TOML text.
pub struct LabProfile {
    pub sponsor: String,
    pub upstream: String,
    /// (name, catalog entry): an entry of `None` is copied from the repository's catalog.
    pub projects: Vec<(String, Option<String>)>,
    /// Appended to `[mirror]` (e.g. "min_free_mb = 0\n").
    pub mirror_extra: String,
    /// Appended after the last section (e.g. "[server]\nscavenger = false\n").
    pub extra: String,
}

impl LabProfile {
    /// A lab site hosting the named projects of the repository's catalog.
    pub fn with_catalog_projects(projects: &[&str]) -> LabProfile {
        LabProfile {
            sponsor: "S".into(),
            upstream: "127.0.0.1".into(),
            projects: projects.iter().map(|p| (p.to_string(), None)).collect(),
            mirror_extra: String::new(),
            extra: String::new(),
        }
    }

    /// A lab site hosting one project whose catalog entry is `entry`.
    pub fn with_project(name: &str, entry: &str) -> LabProfile {
        LabProfile { projects: vec![(name.into(), Some(entry.into()))], ..LabProfile::with_catalog_projects(&[]) }
    }

    pub fn sponsor(mut self, name: &str) -> LabProfile {
        self.sponsor = name.into();
        self
    }

    pub fn upstream(mut self, host_port: &str) -> LabProfile {
        self.upstream = host_port.into();
        self
    }

    pub fn mirror_extra(mut self, toml: &str) -> LabProfile {
        self.mirror_extra.push_str(toml);
        self
    }

    pub fn extra(mut self, toml: &str) -> LabProfile {
        self.extra.push_str(toml);
        self
    }

    pub fn text(&self) -> String {
        let names: Vec<String> = self.projects.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        format!(
            "[site]\nname = \"lab\"\nhostname = \"{LAB_HOSTNAME}\"\nsponsor_name = \"{sponsor}\"\n\
             sponsor_url = \"https://example.net/\"\nlocation = {{ city = \"L\", country = \"ZZ\" }}\ntest = true\n\n\
             [network]\nipv4 = \"192.0.2.10/24\"\nipv4_gateway = \"192.0.2.1\"\ndns = [\"192.0.2.53\"]\n\n\
             [access]\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt t\"]\n\n\
             [mirror]\nupstream = \"{upstream}\"\nprojects = [{projects}]\n{mirror_extra}\n{extra}",
            sponsor = self.sponsor,
            upstream = self.upstream,
            projects = names.join(", "),
            mirror_extra = self.mirror_extra,
            extra = self.extra,
        )
    }

    /// Writes `dir/site.toml` and `dir/projects/*.toml`; returns the profile's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let catalog = workspace().join("profiles/projects");
        for (name, entry) in &self.projects {
            let dest = dir.join("projects").join(format!("{name}.toml"));
            let text = match entry {
                Some(t) => t.clone(),
                None => std::fs::read_to_string(catalog.join(format!("{name}.toml")))
                    .unwrap_or_else(|e| panic!("no catalog entry {name}: {e}")),
            };
            write_file(&dest, text.as_bytes());
        }
        let path = dir.join("site.toml");
        write_file(&path, self.text().as_bytes());
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_profile_passes_the_real_validation() {
        let dir = std::env::temp_dir().join(format!("testkit-lab-{}", std::process::id()));
        let path =
            LabProfile::with_catalog_projects(&["fixture-rpm"]).extra("[server]\nscavenger = false\n").write(&dir);
        let loaded = schema::site_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.projects[0].name, "fixture-rpm");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
