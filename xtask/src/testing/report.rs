//! What `cargo xtask test` makes of the test binaries' output (libtest's JSON events, one per
//! line): each test's result and time, each binary's counts, the slowest tests, and the closing
//! line CI reads. Pure: it reads text, it runs nothing.

use serde::Deserialize;

/// One test's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub binary: String,
    pub name: String,
    pub passed: bool,
    pub seconds: f64,
    /// What the test printed (libtest keeps it for failed tests only).
    pub output: String,
}

/// One binary's run.
#[derive(Debug, Clone, Default)]
pub struct BinaryRun {
    pub binary: String,
    pub tests: Vec<TestResult>,
    /// Whether libtest reported the end of its suite (a crash or a kill does not).
    pub finished: bool,
    pub seconds: f64,
}

impl BinaryRun {
    pub fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.tests.iter().filter(|t| !t.passed).count()
    }

    /// Passed only when every test passed and the suite ended.
    pub fn ok(&self) -> bool {
        self.finished && self.failed() == 0
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    event: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    exec_time: f64,
    #[serde(default)]
    stdout: String,
}

/// Reads a binary's JSON events; lines that are not events (a test printing past the capture)
/// are passed over.
pub fn parse(binary: &str, json_lines: &str) -> BinaryRun {
    let mut run = BinaryRun { binary: binary.to_string(), ..Default::default() };
    for event in json_lines.lines().filter_map(|l| serde_json::from_str::<Event>(l).ok()) {
        match (event.kind.as_str(), event.event.as_str()) {
            // ("test", "timeout") only says a test has run for over a minute; it goes on.
            ("test", "ok" | "failed") => run.tests.push(TestResult {
                binary: binary.to_string(),
                name: event.name,
                passed: event.event == "ok",
                seconds: event.exec_time,
                output: event.stdout,
            }),
            ("suite", "ok" | "failed") => {
                run.finished = true;
                run.seconds = event.exec_time;
            }
            _ => {}
        }
    }
    run
}

/// The `n` slowest tests of every run, as a table.
pub fn slowest(runs: &[BinaryRun], n: usize) -> String {
    let mut all: Vec<&TestResult> = runs.iter().flat_map(|r| r.tests.iter()).collect();
    all.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let mut out = format!("{:>9}  test\n", "seconds");
    for t in all.into_iter().take(n) {
        out.push_str(&format!(
            "{:>9.1}  {}::{}{}\n",
            t.seconds,
            t.binary,
            t.name,
            if t.passed { "" } else { "  FAILED" }
        ));
    }
    out
}

/// The closing line CI reads: "N passed, N failed".
pub fn closing_line(runs: &[BinaryRun]) -> String {
    let passed: usize = runs.iter().map(BinaryRun::passed).sum();
    let failed: usize = runs.iter().map(BinaryRun::failed).sum();
    let crashed = runs.iter().filter(|r| !r.finished).count();
    format!("{passed} passed, {} failed", failed + crashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = r#"{ "type": "suite", "event": "started", "test_count": 3 }
{ "type": "test", "event": "started", "name": "a::fast" }
{ "type": "test", "event": "timeout", "name": "a::slow" }
{ "type": "test", "name": "a::fast", "event": "ok", "exec_time": 0.25 }
some line a test printed
{ "type": "test", "name": "a::slow", "event": "ok", "exec_time": 12.5 }
{ "type": "test", "name": "a::broken", "event": "failed", "exec_time": 1.0, "stdout": "assertion failed\n" }
{ "type": "suite", "event": "failed", "passed": 2, "failed": 1, "ignored": 0, "measured": 0, "filtered_out": 0, "exec_time": 13.9 }"#;

    #[test]
    fn events_become_results_with_times_and_output() {
        let run = parse("schema", EVENTS);
        assert_eq!((run.passed(), run.failed(), run.finished, run.ok()), (2, 1, true, false));
        assert_eq!(run.seconds, 13.9);
        let broken = run.tests.iter().find(|t| t.name == "a::broken").unwrap();
        assert_eq!((broken.passed, broken.output.as_str()), (false, "assertion failed\n"));
    }

    #[test]
    fn a_binary_that_never_ends_its_suite_counts_as_failed() {
        let cut = EVENTS.lines().take(4).collect::<Vec<_>>().join("\n");
        let run = parse("e2e::update", &cut);
        assert!(!run.finished && !run.ok());
        assert_eq!(closing_line(&[run]), "1 passed, 1 failed");
    }

    #[test]
    fn the_slowest_come_first_and_failures_are_marked() {
        let table = slowest(&[parse("schema", EVENTS)], 2);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].trim_start().starts_with("12.5  schema::a::slow"), "{table}");
        assert!(lines[2].ends_with("schema::a::broken  FAILED"), "{table}");
        assert_eq!(closing_line(&[parse("schema", EVENTS)]), "2 passed, 1 failed");
    }
}
