//! Running external commands. They are written as xshell `cmd!` lines, which read as they would
//! be typed, and run through `run`/`run_visible` here, whose errors say what ran and the last
//! lines it printed (xshell's own error names the command but not its output). Processes that
//! must outlive the call (servers in benchmarks, a build in the background) are spawned as
//! `std::process::Command`s, built from a `Cmd` where one exists.

use std::ffi::OsStr;

use anyhow::{anyhow, bail, Result};
pub use xshell::{cmd, Cmd, Shell};

/// A shell in the workspace folder.
pub fn shell() -> Result<Shell> {
    let sh = Shell::new()?;
    sh.change_dir(crate::workspace());
    Ok(sh)
}

/// Runs a command to completion, capturing its output; fails with the command line and its
/// last 40 lines of output. Returns what it printed on stdout.
pub fn run(c: Cmd<'_>) -> Result<String> {
    let shown = c.to_string();
    let out = match c.quiet().ignore_status().output() {
        Ok(out) => out,
        Err(e) => bail!("cannot start `{shown}` (is it installed?): {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{shown}` failed ({}):\n{}", out.status, tail(&format!("{stdout}{stderr}"), 40));
    }
    Ok(stdout)
}

/// Runs a command with its output shown live (long steps whose progress matters).
pub fn run_visible(c: Cmd<'_>) -> Result<()> {
    // xshell's error says whether it could not start or exited non-zero, and names the command.
    c.quiet().run().map_err(|e| anyhow!("{e}"))
}

/// The cargo that runs us (cargo sets CARGO for what it runs), else the one on the PATH.
pub fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The variables cargo set for this process (`cargo run` for xtask, `cargo test` for a test):
/// CARGO_MANIFEST_DIR, CARGO_PKG_*, …. Passed on to a nested cargo, they reach build scripts
/// that watch them (ring's watches CARGO_MANIFEST_DIR), so the nested build and a plain `cargo
/// build` would each find the other's artifacts stale and rebuild. Every nested cargo of the
/// workspace (the build's programs, `cargo xtask test`, the test kit) removes them.
pub fn set_by_cargo() -> Vec<String> {
    const NAMES: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("CARGO_PKG_") || n.starts_with("CARGO_BIN_EXE_") || NAMES.contains(&n.as_str()))
        .collect()
}

/// A nested `cargo` as a developer would type it in a shell (see `set_by_cargo`).
pub fn cargo(sh: &Shell) -> Cmd<'_> {
    let mut c = sh.cmd(cargo_program());
    for name in set_by_cargo() {
        c = c.env_remove(name);
    }
    c
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn exists(program: impl AsRef<OsStr>) -> bool {
    let program = program.as_ref();
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).chain(["/usr/sbin".into(), "/sbin".into()]).any(|d| d.join(program).is_file())
        })
        .unwrap_or(false)
}
