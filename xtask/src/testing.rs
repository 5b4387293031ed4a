//! `cargo xtask test`: install the host tools the tests drive (real QEMU, rsync, mosquitto, …),
//! then run formatting and lint checks and every test of the workspace. CI runs exactly this.

use anyhow::Result;

use crate::{cmd, host, paths};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this
    pub filter: Option<String>,
    /// Skip `cargo fmt --check` and clippy
    #[arg(long)]
    pub no_lint: bool,
    /// Run only the boot and appliance tests, on this site's base and hardware class (e.g.
    /// fmt2 on AlmaLinux, where its repositories can be reached)
    #[arg(long, conflicts_with = "filter")]
    pub site: Option<String>,
}

pub fn run(args: TestArgs) -> Result<()> {
    // Every tool any test uses, whatever the filter selects: the AlmaLinux base test needs dnf
    // as much as the boot tests need QEMU.
    host::ensure(&[host::IMAGE_DEBIAN, host::IMAGE_ALMALINUX, host::BOOT, host::TESTS])?;
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
    if let Some(site) = &args.site {
        crate::pipeline::load::load(site)?;
        eprintln!("[test] boot and appliance tests on {site}'s base and hardware class");
        return cmd::run_visible(
            cmd::cargo(&sh)
                .args([
                    "test",
                    "--locked",
                    "-p",
                    "e2e",
                    "--test",
                    "boot",
                    "--test",
                    "appliance",
                    "--",
                    "--test-threads=1",
                ])
                .env("MICROMIRROR_TEST_SITE", site),
        )
        .map(|_| ());
    }
    eprintln!("[test] cargo test --workspace");
    let filter = args.filter.iter();
    // The boot tests print the serial console on failure; keep their output readable.
    cmd::run_visible(
        cmd::cargo(&sh).args(["test", "--workspace", "--locked"]).args(filter).args(["--", "--test-threads=1"]),
    )?;
    if args.filter.is_none() {
        fuzz_smoke()?;
    }
    Ok(())
}

/// A short run of the request-parser fuzz target (cargo fuzz needs nightly features; the
/// stable toolchain provides them with RUSTC_BOOTSTRAP=1).
fn fuzz_smoke() -> Result<()> {
    let sh = cmd::shell()?;
    let fuzz_installed =
        cmd::cargo(&sh).args(["fuzz", "--version"]).quiet().ignore_status().output().is_ok_and(|o| o.status.success());
    if !fuzz_installed {
        eprintln!("[test] installing cargo-fuzz");
        cmd::run_visible(cmd::cargo(&sh).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    // The corpus grows during a run; it lives under target/, seeded from the committed seeds.
    let corpus = paths::target().join("fuzz-corpus/request_head");
    fs_err::create_dir_all(&corpus)?;
    let seeds = paths::workspace().join("mirror-server/server/fuzz/seeds/request_head");
    for seed in fs_err::read_dir(&seeds)?.flatten() {
        fs_err::copy(seed.path(), corpus.join(seed.file_name()))?;
    }
    eprintln!("[test] fuzz smoke run: request_head for 20 s");
    sh.change_dir(paths::workspace().join("mirror-server/server"));
    let run = cmd::cargo(&sh).args(["fuzz", "run", "request_head"]).arg(&corpus);
    cmd::run_visible(run.args(["--", "-max_total_time=20", "-seed=1"]).env("RUSTC_BOOTSTRAP", "1"))
}
