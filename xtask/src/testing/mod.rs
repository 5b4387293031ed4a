//! `cargo xtask test`: install the host tools the tests drive (real QEMU, rsync, mosquitto, …),
//! check formatting and lints, build every test binary once, then run them in two lanes at
//! once: the QEMU tests one after another (a TCG guest wants both cores), every other binary
//! one after another beside them (each with cargo's default threads, at the lowest priority so the
//! guests keep the CPU they need), then a short fuzz run.
//! It ends with the slowest tests, the QEMU tests' steps and one "N passed, N failed" line.
//! CI runs exactly this.

mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use report::BinaryRun;

use crate::{cmd, host, paths};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this
    pub filter: Option<String>,
    /// Skip `cargo fmt --check` and clippy
    #[arg(long)]
    pub no_lint: bool,
    /// Run only the appliance's QEMU test, on this site's base and hardware class (e.g. fmt2 on
    /// AlmaLinux, where its repositories can be reached)
    #[arg(long, conflicts_with = "filter")]
    pub site: Option<String>,
}

/// The test binaries that boot QEMU guests: (package, test target). They run one at a time.
const QEMU_TESTS: [(&str, &str); 3] = [("e2e", "appliance"), ("e2e", "update"), ("e2e", "adopt")];

/// A built test binary.
#[derive(Debug, Clone)]
struct TestBinary {
    /// package, or package::target for integration tests.
    name: String,
    executable: PathBuf,
    /// The package's folder: cargo runs tests there.
    dir: PathBuf,
    qemu: bool,
}

pub fn run(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    // Every tool any test uses, whatever the filter selects: the AlmaLinux base test needs dnf
    // as much as the boot tests need QEMU.
    host::ensure(&[host::IMAGE_DEBIAN, host::IMAGE_ALMALINUX, host::BOOT, host::TESTS])?;
    warn_when_disk_is_short();
    let sh = cmd::shell()?;
    if !args.no_lint {
        eprintln!("[test] cargo fmt --check");
        cmd::run_visible(cmd::cargo(&sh).args(["fmt", "--all", "--check"]))?;
        eprintln!("[test] cargo clippy");
        cmd::run_visible(cmd::cargo(&sh).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    eprintln!("[test] building every test binary");
    let binaries = build_test_binaries()?;
    eprintln!("[test] built {} test binaries ({:.0} s so far)", binaries.len(), started.elapsed().as_secs_f64());
    let (qemu, other): (Vec<TestBinary>, Vec<TestBinary>) = if let Some(site) = &args.site {
        paths::load(site)?;
        eprintln!("[test] the appliance test on {site}'s base and hardware class");
        let appliance = binaries.into_iter().filter(|b| b.name == "e2e::appliance").collect();
        (appliance, Vec::new())
    } else {
        binaries.into_iter().partition(|b| b.qemu)
    };
    let mut env: Vec<(&str, String)> = args.site.iter().map(|s| ("MICROMIRROR_TEST_SITE", s.clone())).collect();
    // One run: its test binaries share one build time and one demo image build (e2e::demo_image),
    // in target/e2e/run-ID, removed at the end (and any a killed run left, at the start).
    remove_run_folders();
    env.push(("MICROMIRROR_TEST_RUN", format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_second())));
    env.push(("MICROMIRROR_TEST_EPOCH", build::last_commit_epoch().to_string()));
    let runs = Mutex::new(Vec::new());
    let fuzz = Mutex::new(None);
    std::thread::scope(|scope| {
        scope.spawn(|| run_lane(&qemu, args.filter.as_deref(), &env, &runs));
        scope.spawn(|| {
            yield_to_the_guests();
            run_lane(&other, args.filter.as_deref(), &env, &runs);
            if args.filter.is_none() && args.site.is_none() {
                *fuzz.lock().unwrap_or_else(|p| p.into_inner()) = Some(fuzz_smoke());
            }
        });
    });
    let runs = runs.into_inner().unwrap_or_else(|p| p.into_inner());
    remove_run_folders();
    print_summary(&runs, started);
    let fuzz = fuzz.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(Err(e)) = &fuzz {
        eprintln!("[test] the fuzz smoke run failed: {e:#}");
    }
    if runs.iter().any(|r| !r.ok()) || matches!(fuzz, Some(Err(_))) {
        bail!("some tests failed (above); the logs of each binary are in {}", logs().display());
    }
    if runs.iter().all(|r| r.tests.is_empty()) {
        bail!("no test ran: does the filter match any test name?");
    }
    Ok(())
}

/// What a whole run writes under target/ at its peak, from an empty target/, with some room:
/// 12.7 GB measured (the test binaries, the demo and stand-in disks, the QEMU tests' copies).
const DISK_A_RUN_NEEDS_GB: f64 = 14.0;

/// Says so up front when target/'s file system has less room than a run needs: a full disk
/// otherwise shows up much later as a linker's bus error or a QEMU test's I/O error.
fn warn_when_disk_is_short() {
    let target = paths::target();
    let _ = fs_err::create_dir_all(&target);
    let Ok(fs) = rustix::fs::statvfs(&target) else { return };
    let free_gb = (fs.f_bavail as f64 * fs.f_frsize as f64) / 1e9;
    if free_gb < DISK_A_RUN_NEEDS_GB {
        eprintln!(
            "[test] warning: {free_gb:.1} GB free under {}, and a whole run needs about {DISK_A_RUN_NEEDS_GB:.0} GB; \
             free some (`cargo clean` removes every build) or the run may fail part way",
            target.display()
        );
    }
}

/// The shared demo builds of runs (target/e2e/run-*): a gigabyte each.
fn remove_run_folders() {
    let Ok(read) = fs_err::read_dir(paths::target().join("e2e")) else { return };
    for entry in read.flatten() {
        if entry.file_name().to_string_lossy().starts_with("run-") {
            let _ = fs_err::remove_dir_all(entry.path());
        }
    }
}

/// Lowers this thread's priority to the least (nice 19), so the test binaries, builds and the
/// fuzz run it starts (which inherit it) take only the CPU the QEMU lane leaves: a TCG guest
/// uses both cores, and every second it waits is a second on the critical path, while the
/// other lane finishes long before it either way.
fn yield_to_the_guests() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        eprintln!("[test] cannot lower the priority of the lane beside QEMU ({e}); it runs at the usual one");
    }
}

/// Builds every test binary of the workspace (`cargo test --no-run`) and lists them.
fn build_test_binaries() -> Result<Vec<TestBinary>> {
    let sh = cmd::shell()?;
    let c = cmd::cargo(&sh).args([
        "test",
        "--workspace",
        "--locked",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let out = Command::from(c).stderr(Stdio::inherit()).output().context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed (above)");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(exe) = msg["executable"].as_str() else { continue };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let package = package_name(msg["package_id"].as_str().unwrap_or(""));
        let target = msg["target"]["name"].as_str().unwrap_or("").to_string();
        let kind = msg["target"]["kind"][0].as_str().unwrap_or("");
        let name = if kind == "test" { format!("{package}::{target}") } else { format!("{package} ({kind})") };
        let dir = msg["manifest_path"].as_str().map(Path::new).and_then(Path::parent).map(Path::to_path_buf);
        let qemu = kind == "test" && QEMU_TESTS.contains(&(package.as_str(), target.as_str()));
        binaries.push(TestBinary { name, executable: exe.into(), dir: dir.unwrap_or_else(paths::workspace), qemu });
    }
    binaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(binaries)
}

/// The package's name in a package id spec: `path+file:///w/tests#e2e@0.1.0` names it after
/// the `#`; `path+file:///w/xtask/vm#0.1.0`, whose folder has the package's name, does not.
fn package_name(id: &str) -> String {
    let (url, fragment) = id.rsplit_once('#').unwrap_or((id, ""));
    match fragment.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => url.rsplit('/').next().unwrap_or(url).to_string(),
    }
}

fn logs() -> PathBuf {
    paths::target().join("test-logs")
}

/// Runs the binaries one after another, each reported as it ends.
fn run_lane(binaries: &[TestBinary], filter: Option<&str>, env: &[(&str, String)], runs: &Mutex<Vec<BinaryRun>>) {
    for binary in binaries {
        let run = run_binary(binary, filter, env);
        let mark = if run.ok() { "ok" } else { "FAILED" };
        eprintln!(
            "[test] {:>6.0} s  {:<32} {} passed, {} failed  {mark}",
            run.seconds,
            run.binary,
            run.passed(),
            run.failed()
        );
        for t in run.tests.iter().filter(|t| !t.passed) {
            eprintln!("---- {}::{} ----\n{}", binary.name, t.name, t.output);
        }
        if !run.finished {
            let log = fs_err::read_to_string(log_of(binary)).unwrap_or_default();
            eprintln!(
                "---- {} ended without finishing its tests; its last output: ----\n{}",
                binary.name,
                cmd::tail(&log, 60)
            );
        }
        runs.lock().unwrap_or_else(|p| p.into_inner()).push(run);
    }
}

fn log_of(binary: &TestBinary) -> PathBuf {
    logs().join(format!("{}.log", binary.name.replace("::", "-").replace([' ', '(', ')'], "")))
}

/// One test binary as cargo would run it (in its package's folder), with libtest's JSON events
/// and times (`-Z unstable-options`, which RUSTC_BOOTSTRAP allows a stable libtest); what the
/// binary writes to stderr (child processes, QEMU) goes to its log under target/test-logs/.
fn run_binary(binary: &TestBinary, filter: Option<&str>, env: &[(&str, String)]) -> BinaryRun {
    let started = Instant::now();
    let log = log_of(binary);
    let stderr = fs_err::create_dir_all(logs()).and_then(|()| fs_err::File::create(&log)).map(|f| f.into_parts().0);
    let mut c = Command::new(&binary.executable);
    c.current_dir(&binary.dir)
        .args(["-Z", "unstable-options", "--format", "json", "--report-time"])
        .args(filter)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO", cmd::cargo_program())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(stderr.map_or(Stdio::inherit(), Stdio::from));
    let out = match c.output() {
        Ok(out) => out,
        Err(e) => {
            let mut run = BinaryRun { binary: binary.name.clone(), ..Default::default() };
            run.tests.push(report::TestResult {
                binary: binary.name.clone(),
                name: "(start)".into(),
                passed: false,
                seconds: 0.0,
                output: format!("cannot run {}: {e}", binary.executable.display()),
            });
            return run;
        }
    };
    let mut run = report::parse(&binary.name, &String::from_utf8_lossy(&out.stdout));
    run.seconds = started.elapsed().as_secs_f64();
    run
}

fn print_summary(runs: &[BinaryRun], started: Instant) {
    println!("\nslowest tests:\n{}", report::slowest(runs, 12));
    let steps = paths::target().join("e2e-logs/steps");
    let mut files: Vec<PathBuf> =
        fs_err::read_dir(&steps).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for file in files {
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        println!("steps of the QEMU test {name} ({}):", file.display());
        println!("{}", fs_err::read_to_string(&file).unwrap_or_default());
    }
    println!("cargo xtask test took {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    println!("{}", report::closing_line(runs));
}

/// The flags cargo-fuzz gives rustc for a libFuzzer build without a sanitizer (`cargo fuzz
/// build -s none`): coverage counters and comparison tracing for libFuzzer, `cfg(fuzzing)`,
/// debug assertions and overflow checks. Stable flags: building them directly spares every
/// fresh machine the install of cargo-fuzz itself.
const LIBFUZZER_RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// A short run of the request-parser fuzz target under libFuzzer, as `cargo fuzz run -s none`
/// would do it.
fn fuzz_smoke() -> Result<()> {
    let started = Instant::now();
    let fuzz = paths::workspace().join("mirror-server/server/fuzz");
    let target = fuzz.join("target");
    let sh = cmd::shell()?;
    sh.change_dir(&fuzz);
    eprintln!("[test] building the fuzz target request_head with libFuzzer");
    let flags: Vec<&str> = LIBFUZZER_RUSTFLAGS.split_whitespace().collect();
    // --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
    let build = cmd::cargo(&sh)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "request_head",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", flags.join(" "));
    cmd::run(build).context(
        "if its Cargo.lock is behind the workspace's dependencies: `cargo metadata --manifest-path \
         mirror-server/server/fuzz/Cargo.toml > /dev/null` brings it up to date; commit the result",
    )?;
    // The corpus grows during a run; it lives under target/, seeded from the committed seeds.
    let corpus = paths::target().join("fuzz-corpus/request_head");
    fs_err::create_dir_all(&corpus)?;
    for seed in fs_err::read_dir(fuzz.join("seeds/request_head"))?.flatten() {
        fs_err::copy(seed.path(), corpus.join(seed.file_name()))?;
    }
    eprintln!("[test] fuzz smoke run: request_head for 20 s");
    let binary = target.join("x86_64-unknown-linux-gnu/release/request_head");
    cmd::run(cmd::cmd!(sh, "{binary} {corpus} -max_total_time=20 -seed=1"))?;
    eprintln!("[test] fuzz smoke run passed ({:.0} s with its build)", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn package_names_come_from_either_form_of_the_id() {
        assert_eq!(super::package_name("path+file:///w/tests#e2e@0.1.0"), "e2e");
        assert_eq!(super::package_name("path+file:///w/xtask/vm#0.1.0"), "vm");
        assert_eq!(super::package_name("path+file:///w/mirror-server/server#mirror-server@0.1.0"), "mirror-server");
    }
}
