//! The fleet on Prometheus and Grafana, from the profiles: `prometheus.yml` (one scrape job over
//! file_sd targets), `targets/micromirror.json` (each box with its site, sponsor, hardware and
//! projects as labels), recording rules, alerting rules (a sync late for its schedule, a
//! certificate with under 14 days, a box overshot for a day, the watchtower stream down, a failed
//! update, a box unreachable) and `grafana/micromirror.json` (the fleet as a table, utilisation
//! per box, CDN efficiency per project, bytes served stacked by box). Rendering is pure; `write`
//! puts the files down.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Target;

pub fn write(out: &Path, targets: &[Target]) -> Result<()> {
    for (rel, text) in files(targets) {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        fs_err::write(&path, text)?;
    }
    eprintln!("{} targets; config in {}/prometheus.yml (check: promtool check config)", targets.len(), out.display());
    Ok(())
}

/// (path under the output folder, text) of every file.
pub fn files(targets: &[Target]) -> Vec<(&'static str, String)> {
    vec![
        ("prometheus.yml", PROMETHEUS_YML.to_string()),
        ("targets/micromirror.json", targets_json(targets)),
        ("rules/micromirror-recording.yml", RECORDING.to_string()),
        ("rules/micromirror-alerts.yml", ALERTS.to_string()),
        ("grafana/micromirror.json", dashboard()),
    ]
}

const PROMETHEUS_YML: &str = r#"# The micro mirror fleet, written by `cargo xtask fleet prometheus` from profiles/.
# The scraper must be inside each site's access.admin_prefixes (metrics answer nobody else).
global:
  scrape_interval: 60s
  evaluation_interval: 60s
rule_files:
  - rules/micromirror-recording.yml
  - rules/micromirror-alerts.yml
scrape_configs:
  - job_name: micromirror
    scrape_timeout: 10s
    file_sd_configs:
      - files:
          - targets/micromirror.json
"#;

/// Projects as ",a,b," so `projects=~".*,fedora,.*"` selects the boxes hosting one.
fn targets_json(targets: &[Target]) -> String {
    let list: Vec<serde_json::Value> = targets
        .iter()
        .map(|t| {
            json!({
                "targets": [t.address],
                "labels": {
                    "site": t.site,
                    "sponsor": t.sponsor,
                    "hardware": t.hardware,
                    "projects": format!(",{},", t.projects.join(",")),
                },
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

const RECORDING: &str = r#"groups:
  - name: micromirror-recording
    rules:
      - record: site:micromirror_sent_bytes:rate5m
        expr: sum by (site) (rate(micromirror_http_sent_bytes_total[5m]))
      - record: project:micromirror_sent_bytes:rate5m
        expr: sum by (site, project) (rate(micromirror_http_sent_bytes_total[5m]))
      - record: project:micromirror_sync_age_seconds
        expr: time() - micromirror_sync_last_success_timestamp_seconds
      - record: site:micromirror_certificate_days_left
        expr: (micromirror_tls_certificate_expiry_timestamp_seconds - time()) / 86400
      - record: site:micromirror_utilisation_p95_1h
        expr: micromirror_link_utilisation_ratio{window="1h",stat="p95"}
"#;

const ALERTS: &str = r#"groups:
  - name: micromirror-alerts
    rules:
      - alert: MicromirrorDown
        expr: up{job="micromirror"} == 0
        for: 15m
        labels: { severity: page }
        annotations:
          summary: "{{ $labels.site }} does not answer its metrics"
      - alert: MicromirrorSyncLate
        expr: project:micromirror_sync_age_seconds > on (instance) group_left () (2 * micromirror_sync_schedule_seconds)
        for: 30m
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }}: {{ $labels.project }} has not synced for two of its schedule's periods"
      - alert: MicromirrorCheckerHalfway
        expr: micromirror_sync_checker_behind_seconds > 0.5 * micromirror_sync_checker_limit_seconds
        for: 30m
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }}: {{ $labels.project }} is past half of what {{ $labels.checker }}'s checker allows before it drops the mirror"
      - alert: MicromirrorCertificateExpiring
        expr: site:micromirror_certificate_days_left < 14
        for: 1h
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }}: the HTTPS certificate expires in {{ $value | humanize }} days"
      - alert: MicromirrorOvershot
        expr: micromirror_capacity_verdict == 2
        for: 1d
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }} has carried more than 20 % of its link for a day: move a project off (mirror-server capacity)"
      - alert: MicromirrorWatchtowerDown
        expr: micromirror_telemetry_connected == 0
        for: 30m
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }} cannot reach the watchtower (records spill to disk)"
      - alert: MicromirrorUpdateFailed
        expr: micromirror_update_last_check_failed == 1 or increase(micromirror_update_failed_versions[1d]) > 0
        for: 1h
        labels: { severity: ticket }
        annotations:
          summary: "{{ $labels.site }}: an update failed (mirror-update status on the box says why)"
"#;

fn dashboard() -> String {
    let target = |expr: &str, legend: &str| json!({ "expr": expr, "legendFormat": legend, "refId": "A" });
    let panel =
        |id: u32, title: &str, kind: &str, targets: Vec<serde_json::Value>, y: u32, extra: serde_json::Value| {
            let mut p = json!({
                "id": id, "title": title, "type": kind,
                "datasource": { "type": "prometheus", "uid": "${datasource}" },
                "gridPos": { "h": 9, "w": 24, "x": 0, "y": y },
                "targets": targets,
            });
            if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            p
        };
    let table_targets = vec![
        json!({ "expr": "micromirror_capacity_verdict", "format": "table", "instant": true, "refId": "A" }),
        json!({ "expr": "site:micromirror_certificate_days_left", "format": "table", "instant": true, "refId": "B" }),
        json!({ "expr": "max by (site) (project:micromirror_sync_age_seconds)", "format": "table", "instant": true, "refId": "C" }),
        json!({ "expr": "site:micromirror_utilisation_p95_1h", "format": "table", "instant": true, "refId": "D" }),
    ];
    let d = json!({
        "title": "Micro mirror fleet",
        "uid": "micromirror-fleet",
        "schemaVersion": 39,
        "refresh": "1m",
        "time": { "from": "now-24h", "to": "now" },
        "templating": { "list": [{ "name": "datasource", "type": "datasource", "query": "prometheus" }] },
        "panels": [
            panel(1, "The fleet", "table", table_targets, 0, json!({ "transformations": [{ "id": "merge" }] })),
            panel(2, "Utilisation per box (p95 of the last hour)", "timeseries",
                vec![target("site:micromirror_utilisation_p95_1h", "{{site}}")], 9,
                json!({ "fieldConfig": { "defaults": { "unit": "percentunit", "max": 1 } } })),
            panel(3, "CDN efficiency per project (bytes served a day / bytes on disk)", "timeseries",
                vec![target("avg by (project) (micromirror_cdn_efficiency_ratio)", "{{project}}")], 18, json!({})),
            panel(4, "Bytes served, stacked by box", "timeseries",
                vec![target("site:micromirror_sent_bytes:rate5m", "{{site}}")], 27,
                json!({ "fieldConfig": { "defaults": { "unit": "Bps", "custom": { "stacking": { "mode": "normal" }, "fillOpacity": 60 } } } })),
        ],
    });
    serde_json::to_string_pretty(&d).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promtool_accepts_the_config_and_the_rules_and_targets_carry_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let targets = vec![Target {
            site: "fmt2".into(),
            address: "mm.example.net:9100".into(),
            sponsor: "Example \"Networks\"".into(),
            hardware: "t620".into(),
            projects: vec!["fedora".into(), "epel".into()],
        }];
        write(dir.path(), &targets).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("promtool").args(args).current_dir(dir.path()).output().unwrap();
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        };
        let (ok, out) = run(&["check", "config", "prometheus.yml"]);
        assert!(ok, "{out}");
        let (ok, out) = run(&["check", "rules", "rules/micromirror-recording.yml", "rules/micromirror-alerts.yml"]);
        assert!(ok && out.contains("SUCCESS: 7 rules found"), "{out}");
        let t: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(dir.path().join("targets/micromirror.json")).unwrap())
                .unwrap();
        assert_eq!(t[0]["labels"]["projects"], ",fedora,epel,");
        assert_eq!(t[0]["labels"]["sponsor"], "Example \"Networks\"");
        let d: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(dir.path().join("grafana/micromirror.json")).unwrap())
                .unwrap();
        let titles: Vec<&str> = d["panels"].as_array().unwrap().iter().filter_map(|p| p["title"].as_str()).collect();
        assert_eq!(titles.len(), 4, "{titles:?}");
    }

    /// promtool's own rule tests: a box past half its checker's limit for 30 minutes warns, one
    /// well inside it does not.
    #[test]
    fn the_checker_alert_fires_at_half_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[]).unwrap();
        let series = |site: &str, behind: u64| {
            format!(
                "      - series: 'micromirror_sync_checker_behind_seconds{{site=\"{site}\",project=\"archlinux\",checker=\"Arch\"}}'\n\
                 \x20       values: '{behind}x60'\n\
                 \x20     - series: 'micromirror_sync_checker_limit_seconds{{site=\"{site}\",project=\"archlinux\",checker=\"Arch\"}}'\n\
                 \x20       values: '259200x60'\n"
            )
        };
        let test = format!(
            "rule_files:\n  - rules/micromirror-alerts.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}{}\
             \x20   alert_rule_test:\n      - eval_time: 20m\n        alertname: MicromirrorCheckerHalfway\n        exp_alerts: []\n\
             \x20     - eval_time: 40m\n        alertname: MicromirrorCheckerHalfway\n        exp_alerts:\n\
             \x20         - exp_labels: {{severity: ticket, site: fmt2, project: archlinux, checker: Arch}}\n\
             \x20           exp_annotations:\n\
             \x20             summary: \"fmt2: archlinux is past half of what Arch's checker allows before it drops the mirror\"\n",
            series("fmt2", 140_000),
            series("lax1", 7_200)
        );
        fs_err::write(dir.path().join("checker-test.yml"), test).unwrap();
        let out = std::process::Command::new("promtool")
            .args(["test", "rules", "checker-test.yml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("SUCCESS"), "{said}");
    }
}
