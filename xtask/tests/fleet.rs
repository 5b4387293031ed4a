//! The fleet on a real Prometheus: `cargo xtask fleet prometheus` writes the configuration for
//! two sites whose boxes are two mirror-server instances on loopback; Debian's Prometheus loads
//! it, scrapes both, and its HTTP API returns their series with the profiles' labels (site,
//! sponsor, hardware, projects). `cargo xtask fleet status` shows the live box and a dead one,
//! and the dead box costs its timeout, not the table. The commands run as an operator runs them:
//! the built xtask program, with MICROMIRROR_PROFILES naming a scratch profiles folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::server::MirrorServer;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch profiles folder holding two sites made from the demo (named and sponsored apart).
fn two_sites(dir: &Path) -> PathBuf {
    let demo = testkit::images::demo_profile();
    let sites: Vec<(&str, String)> = [("alpha", "Alpha Networks", "t620"), ("beta", "Beta IX", "r220")]
        .into_iter()
        .map(|(name, sponsor, hw)| {
            let text = demo
                .replace("name = \"demo\"", &format!("name = \"{name}\""))
                .replace("sponsor_name = \"Example Networks\"", &format!("sponsor_name = \"{sponsor}\""))
                .replace("disk_gb = 64", &format!("disk_gb = 64\nhardware = \"{hw}\""));
            (name, text)
        })
        .collect();
    testkit::images::scratch_profiles(&dir.join("profiles"), &sites)
}

/// `cargo xtask ARGS --dir PROFILES --include-test` as typed (the sites are copies of the demo,
/// a test site); whether it succeeded, and what it printed.
fn xtask(profiles: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--dir")
        .arg(profiles)
        .arg("--include-test")
        .stdin(Stdio::null())
        .output()
        .expect("xtask runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn box_on(dir: &Path, name: &str) -> (MirrorServer, u16) {
    let root = dir.join(name).join("root");
    std::fs::create_dir_all(root.join("fixture-rpm")).unwrap();
    std::fs::write(root.join("fixture-rpm/a.rpm"), vec![7u8; 4096]).unwrap();
    let status = dir.join(name).join("status");
    std::fs::create_dir_all(&status).unwrap();
    testkit::fixtures::write_status(&status, "fixture-rpm", 4096);
    let metrics = testkit::free_port();
    let s = MirrorServer::start(
        &root,
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
            "--status-dir",
            status.to_str().unwrap(),
            "--state-dir",
            dir.join(name).join("state").to_str().unwrap(),
        ],
    );
    testkit::wait_listening(metrics, "the metrics listener");
    (s, metrics)
}

fn query(port: u16, promql: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--get", &format!("http://127.0.0.1:{port}/api/v1/query")])
        .arg("--data-urlencode")
        .arg(format!("query={promql}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn prometheus_scrapes_two_boxes_with_the_profiles_labels_and_status_shows_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = two_sites(dir.path());
    let (alpha, alpha_metrics) = box_on(dir.path(), "alpha");
    let (_beta, beta_metrics) = box_on(dir.path(), "beta");
    for _ in 0..3 {
        let ok =
            Command::new("curl").args(["-sf", "-o", "/dev/null", &alpha.url("/fixture-rpm/a.rpm")]).status().unwrap();
        assert!(ok.success());
    }
    let out = dir.path().join("prom");
    let addr = |site: &str, port: u16| format!("--address={site}=127.0.0.1:{port}");
    let (ok, said) = xtask(
        &profiles,
        &[
            "fleet",
            "prometheus",
            "--out",
            out.to_str().unwrap(),
            &addr("alpha", alpha_metrics),
            &addr("beta", beta_metrics),
        ],
    );
    assert!(ok, "{said}");
    // Scrape every second so the test waits seconds, not minutes.
    let yml = std::fs::read_to_string(out.join("prometheus.yml")).unwrap().replace("60s", "1s").replace("10s", "1s");
    std::fs::write(out.join("prometheus.yml"), yml).unwrap();

    let prom_port = testkit::free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", out.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts"),
    );
    let series = testkit::wait_for(Duration::from_secs(60), "both boxes scraped with their labels", || {
        let v = query(prom_port, "up{job=\"micromirror\"} == 1");
        let r = v["data"]["result"].as_array()?.clone();
        (r.len() == 2).then_some(r)
    });
    let labels = |site: &str| series.iter().find(|s| s["metric"]["site"] == site).map(|s| s["metric"].clone()).unwrap();
    assert_eq!(labels("alpha")["sponsor"], "Alpha Networks");
    assert_eq!(labels("alpha")["hardware"], "t620");
    assert_eq!(labels("beta")["hardware"], "r220");
    assert_eq!(labels("beta")["projects"], ",fixture-debian,fixture-rpm,fixture-arch,");
    let sent = testkit::wait_for(Duration::from_secs(60), "alpha's bytes in Prometheus", || {
        let v = query(prom_port, "micromirror_http_sent_bytes_total{site=\"alpha\",project=\"fixture-rpm\"}");
        v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok().filter(|b| *b >= 3.0 * 4096.0)
    });
    assert!(sent >= 12_288.0, "{sent}");
    let verdict = query(prom_port, "micromirror_capacity_verdict{site=\"beta\"}");
    assert_eq!(verdict["data"]["result"][0]["metric"]["verdict"], "room", "{verdict}");

    // fleet status: alpha answers, beta's address is dead (nothing listens there).
    let dead = testkit::free_port();
    let started = Instant::now();
    let (ok, table) = xtask(
        &profiles,
        &["fleet", "status", "--timeout-ms", "1500", &addr("alpha", alpha_metrics), &addr("beta", dead)],
    );
    assert!(!ok, "a box that did not answer fails the status, for scripts and timers:\n{table}");
    assert!(table.contains("1 of 2 boxes did not answer"), "{table}");
    println!("{table}");
    let line = |site: &str| {
        table.lines().find(|l| l.starts_with(site)).unwrap_or_else(|| panic!("no {site}:\n{table}")).to_string()
    };
    assert!(line("alpha").contains(" yes ") && line("alpha").contains("fixture-rpm"), "{table}");
    let alpha_line = line("alpha");
    let today: Vec<&str> = alpha_line.split_whitespace().skip(2).take(2).collect();
    let kib: f64 = today[0].parse().unwrap_or(0.0);
    assert!(today[1] == "KiB" && (12.0..14.0).contains(&kib), "three 4 KiB downloads and their heads today: {table}");
    assert!(line("alpha").contains("room"), "{table}");
    assert!(line("beta").contains(" no ") && line("beta").contains(&format!("127.0.0.1:{dead}")), "{table}");
    // Two profile loads take their time; the dead box adds at most its timeout.
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

/// Six copies of the demo, each its own box (name and host name apart).
fn six_sites(dir: &Path) -> PathBuf {
    let demo = testkit::images::demo_profile();
    let sites: Vec<(String, String)> = (0..6)
        .map(|i| {
            let name = format!("box{i}");
            // box5 is a T740 (10 GbE card): the topology lets it fetch from the upstream.
            let class = if i == 5 { "\nhardware = \"t740\"" } else { "" };
            let text = demo
                .replace("name = \"demo\"", &format!("name = \"{name}\"{class}"))
                .replace("hostname = \"demo.mm.example.net\"", &format!("hostname = \"{name}.mm.example.net\""));
            (name, text)
        })
        .collect();
    let refs: Vec<(&str, String)> = sites.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    testkit::images::scratch_profiles(&dir.join("profiles"), &refs)
}

#[test]
fn the_topology_is_printed_from_the_profiles_and_each_box_is_given_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = six_sites(dir.path());
    let (ok, out) = xtask(&profiles, &["fleet", "topology", "--project", "fixture-arch"]);
    assert!(ok, "{out}");
    assert!(out.contains("fixture-arch: 6 boxes, 3 from the upstream"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("round 2")).count(), 3, "{out}");
    let t740 = out.lines().find(|l| l.contains(" box5 ")).unwrap_or_default();
    assert!(t740.contains("round 1") && t740.contains("10 Gbit/s  from upstream"), "the fastest box first:\n{out}");
    // What each box's build writes into /etc/micromirror/sync-peers.json.
    let mut fed = 0;
    for i in 0..6 {
        let site = build::load::load(&profiles, &format!("box{i}")).unwrap();
        let peers = build::load::sync_peers(&site).unwrap();
        if let Some(list) = peers.get("fixture-arch") {
            fed += 1;
            assert!(list.iter().all(|h| h.ends_with(".mm.example.net") && !h.starts_with(&format!("box{i}."))));
            let line = out.lines().find(|l| l.contains(&format!(" box{i} "))).unwrap();
            assert!(line.contains(&list[0].replace(".mm.example.net", "")), "{line} vs {list:?}");
        }
    }
    assert_eq!(fed, 3, "three boxes fetch fixture-arch from a peer");
    let (ok, out) = xtask(&profiles, &["fleet", "topology", "--project", "nothing-like-it"]);
    assert!(!ok && out.contains("no box carries `nothing-like-it`"), "{out}");
}
