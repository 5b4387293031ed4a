//! `cargo xtask release` on the host, as an operator's daily job runs it: two test sites made
//! from the demo's profile, canary-lab (`update.ring = "canary"`) and rest-lab, whose builds go
//! to a folder of the test's own and whose updates are published into another. canary-lab's
//! metrics come from a canned canary (mirror-server's exporter over an update status file the
//! test writes); the QEMU update test has the demo box itself as a canary.
//! 1. The first release builds both, publishes to canary-lab only, waits while the canary has
//!    not taken the version, and publishes to rest-lab once it runs it blessed;
//! 2. a second release with nothing changed builds nothing and publishes nothing;
//! 3. a change to rest-lab's profile rebuilds rest-lab alone, and publishes it once the canary
//!    is seen running its own (unchanged) latest build blessed.

use std::path::Path;
use std::time::Duration;

use e2e::release::{built, offered, CannedCanary, ReleaseRun};
use e2e::scratch_profiles;

/// The demo's profile as site `name`, in the canary ring or not ([update] is its last section).
fn lab(name: &str, canary: bool, sponsor: &str) -> String {
    let text = testkit::images::demo_profile()
        .replace("name = \"demo\"", &format!("name = \"{name}\""))
        .replace("Example Networks", sponsor);
    if canary {
        format!("{text}ring = \"canary\"\n")
    } else {
        text
    }
}

fn args(work: &Path, canary: &CannedCanary) -> Vec<String> {
    let p = |s: &str| work.join(s).display().to_string();
    [
        "--to",
        &p("served"),
        "--dir",
        &p("profiles"),
        "--include-test",
        "--images",
        &p("images"),
        "--keep-bases",
        "--address",
        &format!("canary-lab={}", canary.metrics),
        "--poll-seconds",
        "1",
        "--canary-wait-minutes",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_release_builds_what_changed_and_publishes_to_the_rest_only_once_the_canary_runs_it_blessed() {
    let work = tempfile::Builder::new().prefix("release-").tempdir_in(e2e::target()).unwrap();
    let w = work.path();
    let write_profiles = |rest_sponsor: &str| {
        scratch_profiles(
            &w.join("profiles"),
            &[
                ("canary-lab", lab("canary-lab", true, "Canary Networks")),
                ("rest-lab", lab("rest-lab", false, rest_sponsor)),
            ],
        )
    };
    write_profiles("Rest Networks");
    let (served, images) = (w.join("served"), w.join("images"));
    let canary = CannedCanary::start(w, "20200101.000000");

    // 1. Both built; the canary first; the rest once the canary runs its version blessed.
    let mut first = ReleaseRun::start(&args(w, &canary), &w.join("release-1.log"));
    first.wait_until(Duration::from_secs(1200), "the publication to canary-lab", |_| {
        offered(&served, "canary-lab").is_some()
    });
    assert_eq!(offered(&served, "canary-lab"), Some(built(&images, "canary-lab")));
    first.wait_until(Duration::from_secs(60), "a look at the canary", |out| out.contains("canary canary-lab: waiting"));
    assert_eq!(offered(&served, "rest-lab"), None, "the rest waits while the canary has not taken the version");
    canary.report(&built(&images, "canary-lab"), false, None);
    first.wait_until(Duration::from_secs(60), "the canary seen on trial", |out| out.contains("on trial"));
    assert_eq!(offered(&served, "rest-lab"), None, "a version on trial is not blessed yet");
    canary.report(&built(&images, "canary-lab"), true, None);
    let (ok, out) = first.finish(Duration::from_secs(120));
    assert!(ok, "{out}");
    for said in [
        "canary-lab: building, changed: no earlier build",
        "rest-lab: building, changed: no earlier build",
        "every canary runs its latest build, blessed: publishing to the rest",
    ] {
        assert!(out.contains(said), "`{said}` missing from:\n{out}");
    }
    let rest_v1 = built(&images, "rest-lab");
    assert_eq!(offered(&served, "rest-lab"), Some(rest_v1.clone()));

    // 2. Nothing changed: nothing built, nothing published.
    let manifests = ["canary-lab", "rest-lab"].map(|s| modified(&images.join(s).join("manifest.json")));
    let (ok, out) = ReleaseRun::start(&args(w, &canary), &w.join("release-2.log")).finish(Duration::from_secs(300));
    assert!(ok, "{out}");
    for site in ["canary-lab", "rest-lab"] {
        assert!(out.contains(&format!("{site}: inputs unchanged since its last build: nothing built")), "{out}");
        assert!(out.contains(&format!("{site}: nothing newer to publish")), "{out}");
    }
    assert_eq!(["canary-lab", "rest-lab"].map(|s| modified(&images.join(s).join("manifest.json"))), manifests);

    // 3. rest-lab's profile changes: rest-lab alone is rebuilt and published.
    write_profiles("Rest Networks, renamed");
    let (ok, out) = ReleaseRun::start(&args(w, &canary), &w.join("release-3.log")).finish(Duration::from_secs(900));
    assert!(ok, "{out}");
    assert!(out.contains("rest-lab: building, changed: the profile\n"), "{out}");
    assert!(out.contains("canary-lab: inputs unchanged since its last build: nothing built"), "{out}");
    assert!(out.contains("canary-lab: nothing newer to publish"), "{out}");
    assert!(out.contains("every canary runs its latest build, blessed: publishing to the rest"), "{out}");
    let rest_v2 = built(&images, "rest-lab");
    assert!(rest_v2 > rest_v1, "{rest_v2} after {rest_v1}");
    assert_eq!(offered(&served, "rest-lab"), Some(rest_v2));
    assert_eq!(modified(&images.join("canary-lab/manifest.json")), manifests[0], "canary-lab was not rebuilt");
}
