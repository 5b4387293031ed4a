//! The repository's catalog against today's fleet playbook (PhirePhly/micromirrors,
//! templates/update-mirror.sh and rsyncd.conf), transcribed here by hand as a second, independent
//! statement of its facts: for every project the playbook knows, the same upstream module and
//! local folder, public rsync module, excludes, passes, bandwidth limit, timeout, extra flags
//! and push topic. The plan is made by the real planner from the real catalog files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mirror_sync::plan::{plan, Endpoints};
use schema::catalog::Catalog;

/// One project as the playbook syncs it.
struct Recipe {
    /// The playbook's name (`hostedprojects` entry).
    name: &'static str,
    /// (source below rsync://mirror.fcix.net/, destination below /data/mirror/) per pass.
    passes: Vec<(String, String)>,
    /// rsync --bwlimit in KiB/s; `None` for no limit.
    bwlimit_kib: Option<u64>,
    /// rsync --timeout; `None` where the playbook has none.
    timeout: Option<u32>,
    excludes: &'static [&'static str],
    delete_excluded: bool,
    flags: &'static [&'static str],
    /// The box's own rsyncd module.
    rsync_module: &'static str,
    /// What follows `rsync/mirror.fcix.net/` in the push that triggers it.
    topic: &'static str,
}

const M25: Option<u64> = Some(25 * 1024);
const M10: Option<u64> = Some(10 * 1024);
const T600: Option<u32> = Some(600);
const EPEL_AMD64: &[&str] = &[
    "**/source/**",
    "**/armhfp/**",
    "**/aarch64/**",
    "**/ppc64/**",
    "**/ppc64le/**",
    "**/s390x/**",
    "**/testing/**",
    "**/playground/**",
    "**/next/**",
    "**/debug/**",
];
const FEDORA_AMD64: &[&str] = &[
    "**/source/**",
    "**/armhfp/**",
    "**/aarch64/**",
    "**/debug/**",
    "**/test/**",
    "**/testing/**",
    "**/Spins/**",
    "**/Kinoite/**",
    "**/Sericea/**",
    "**/Silverblue/**",
];
const INDICES: &[&str] = &["Packages*", "Sources*", "Release*", "InRelease"];

fn passes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(s, d)| (s.to_string(), d.to_string())).collect()
}

/// A project synced whole, from the module of its own name into the folder of its own name.
fn simple(name: &'static str, bwlimit_kib: Option<u64>) -> Recipe {
    Recipe {
        name,
        passes: passes(&[(&format!("{name}/"), &format!("{name}/"))]),
        bwlimit_kib,
        timeout: T600,
        excludes: &[],
        delete_excluded: false,
        flags: &[],
        rsync_module: name,
        topic: name,
    }
}

fn playbook() -> Vec<Recipe> {
    let full = |name, list: &[(&str, &str)], rsync_module, topic| Recipe {
        name,
        passes: passes(list),
        bwlimit_kib: M25,
        timeout: T600,
        excludes: &[],
        delete_excluded: false,
        flags: &[],
        rsync_module,
        topic,
    };
    vec![
        simple("almalinux", M25),
        simple("archlinux", M10),
        simple("manjaro", M10),
        simple("centos", M25),
        simple("centos-altarch", M25),
        simple("centos-stream", M25),
        simple("cvebin", M25),
        simple("gimp", M25),
        simple("kali-images", M25),
        simple("linuxmint-images", M25),
        simple("ubuntu-releases", M25),
        full("videolan", &[("videolan-ftp/", "videolan-ftp/")], "videolan-ftp", "videolan"),
        full("tdf", &[("tdf-pub/", "tdf/")], "tdf-pub", "tdf"),
        full("fdroid-repo", &[("fdroid/repo/", "fdroid/repo/")], "fdroid", "fdroid"),
        full("rpmfusion-nonfree", &[("rpmfusion/nonfree/", "rpmfusion/nonfree/")], "rpmfusion", "rpmfusion"),
        full(
            "kdeftp-stable",
            &[("kdeftp/last-updated", "kdeftp/"), ("kdeftp/stable/", "kdeftp/stable/")],
            "kdeftp",
            "kde",
        ),
        full(
            "opensuse",
            &[("opensuse/tumbleweed/", "opensuse/tumbleweed/"), ("opensuse/tumbleweed/", "opensuse/tumbleweed/")],
            "opensuse",
            "opensuse",
        ),
        Recipe {
            excludes: &["**/source/**", "**/s390x/**", "**/playground/**", "**/debug/**"],
            delete_excluded: true,
            ..full("epel", &[("fedora-epel/", "epel/")], "fedora-epel", "fedora")
        },
        Recipe {
            excludes: EPEL_AMD64,
            delete_excluded: true,
            ..full("epel-amd64", &[("fedora-epel/", "epel/")], "fedora-epel", "fedora")
        },
        Recipe {
            excludes: &["**/source/**", "**/debug/**"],
            delete_excluded: true,
            ..full("fedora", &[("fedora-enchilada0/", "fedora/")], "fedora-enchilada", "fedora")
        },
        Recipe {
            excludes: FEDORA_AMD64,
            delete_excluded: true,
            ..full("fedora-amd64", &[("fedora-enchilada0/", "fedora/")], "fedora-enchilada", "fedora")
        },
        Recipe {
            timeout: None,
            flags: &["--safe-links"],
            ..full("ubuntu", &[("ubuntu/", "ubuntu/"), ("ubuntu/", "ubuntu/")], "ubuntu", "ubuntu")
        },
        Recipe {
            bwlimit_kib: None,
            flags: &["--safe-links"],
            ..full("raspbian", &[("raspbian/", "raspbian/"), ("raspbian/", "raspbian/")], "raspbian", "raspbian")
        },
    ]
}

fn catalog() -> Catalog {
    Catalog::load(&testkit::workspace().join("profiles/projects")).unwrap_or_else(|e| panic!("{e}"))
}

fn ends() -> Endpoints {
    Endpoints { upstream: "mirror.fcix.net".into(), mirror_root: "/data/mirror".into(), hostname: "h".into() }
}

/// The value of every `--name=` option in `args`.
fn values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.iter().filter_map(|a| a.strip_prefix(name)?.strip_prefix('=')).collect()
}

#[test]
fn every_playbook_project_syncs_as_the_playbook_does() {
    let catalog = catalog();
    let mut wrong = Vec::new();
    for r in playbook() {
        let Some(p) = catalog.get(r.name) else {
            wrong.push(format!("{}: not in the catalog (neither name nor alias)", r.name));
            continue;
        };
        let invocations = plan(p, &ends(), 200, None);
        let got: Vec<(String, PathBuf)> = invocations.iter().map(|i| (i.source.clone(), i.dest.clone())).collect();
        let want: Vec<(String, PathBuf)> = r
            .passes
            .iter()
            .map(|(s, d)| {
                (format!("rsync://mirror.fcix.net/{s}"), PathBuf::from("/data/mirror").join(d.trim_end_matches('/')))
            })
            .collect();
        if got != want {
            wrong.push(format!("{}: passes {got:?}, the playbook {want:?}", r.name));
        }
        for inv in &invocations {
            let args = &inv.args;
            let bw: Vec<u64> = values(args, "--bwlimit").iter().filter_map(|v| v.parse().ok()).collect();
            if bw != r.bwlimit_kib.into_iter().collect::<Vec<_>>() {
                wrong.push(format!(
                    "{} ({}): --bwlimit {bw:?} KiB/s, the playbook {:?}",
                    r.name, inv.label, r.bwlimit_kib
                ));
            }
            let timeout: Vec<u32> = values(args, "--timeout").iter().filter_map(|v| v.parse().ok()).collect();
            if timeout != r.timeout.into_iter().collect::<Vec<_>>() {
                wrong.push(format!("{} ({}): --timeout {timeout:?}, the playbook {:?}", r.name, inv.label, r.timeout));
            }
            // Our own protections (.~tmp~, index passes, the marker that comes last) come on top
            // of the playbook's excludes.
            let marker = mirror_sync::plan::marker_path(p, &ends()).map(|m| format!("/{m}"));
            let excludes: BTreeSet<&str> =
                values(args, "--exclude").into_iter().filter(|e| Some(*e) != marker.as_deref()).collect();
            let missing: Vec<&&str> = r.excludes.iter().filter(|e| !excludes.contains(**e)).collect();
            let extra: Vec<&&str> = excludes
                .iter()
                .filter(|e| !r.excludes.contains(e) && **e != ".~tmp~/" && !INDICES.contains(e))
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                wrong.push(format!("{} ({}): excludes missing {missing:?}, extra {extra:?}", r.name, inv.label));
            }
            if args.contains(&"--delete-excluded".to_string()) != r.delete_excluded {
                wrong.push(format!("{} ({}): --delete-excluded differs", r.name, inv.label));
            }
            for flag in r.flags {
                if !args.iter().any(|a| a == flag) {
                    wrong.push(format!("{} ({}): lacks {flag}", r.name, inv.label));
                }
            }
        }
        if p.rsync_module() != r.rsync_module {
            wrong.push(format!("{}: rsyncd module {}, the playbook {}", r.name, p.rsync_module(), r.rsync_module));
        }
        if !p.topics().iter().any(|t| t == r.topic) {
            wrong.push(format!("{}: topics {:?} lack the playbook's {}", r.name, p.topics(), r.topic));
        }
    }
    assert!(wrong.is_empty(), "{} difference(s) from the playbook:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn one_upstream_topic_triggers_every_project_it_names() {
    let catalog = catalog();
    let hosted: Vec<_> = ["epel-amd64", "fedora-amd64", "archlinux"]
        .iter()
        .map(|n| catalog.get(n).cloned().unwrap_or_else(|| panic!("{n}")))
        .collect();
    let hit = mirror_sync::daemon::projects_for_topic(&hosted, "rsync/mirror.fcix.net", "rsync/mirror.fcix.net/fedora");
    let names: Vec<&str> = hit.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["epel-x86_64", "fedora-x86_64"], "the upstream's `fedora` push syncs both");
}

#[test]
fn the_ubuntu_indices_come_last_with_delete_after() {
    let catalog = catalog();
    for name in ["ubuntu", "raspbian"] {
        let p = plan(catalog.get(name).unwrap(), &ends(), 200, None);
        assert_eq!(p.len(), 2, "{name}");
        for e in INDICES {
            assert!(values(&p[0].args, "--exclude").contains(e), "{name} pass 1 keeps {e} back");
        }
        assert!(!p[0].args.iter().any(|a| a.starts_with("--delete")), "{name} pass 1 deletes nothing");
        assert!(p[1].args.contains(&"--delete-after".to_string()), "{name}");
    }
}
