//! Running external commands with errors that say what ran, where, and what it printed.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs a command, capturing its output; fails with the command line and its last output lines.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out =
        cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{shown}` (is it installed?)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{shown}` failed ({}):\n{}", out.status, tail(&format!("{stdout}{stderr}"), 40));
    }
    Ok(stdout)
}

/// Runs a command with its output shown live (long steps whose progress matters).
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    let status =
        cmd.stdin(Stdio::null()).status().with_context(|| format!("cannot start `{shown}` (is it installed?)"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
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

/// A nested `cargo` as a developer would type it in a shell. `cargo run` gives xtask the
/// variables it sets for the program it runs (CARGO_MANIFEST_DIR, CARGO_PKG_*, …); passed on,
/// they reach build scripts that watch them (ring's watches CARGO_MANIFEST_DIR), so the nested
/// build and a plain `cargo build` would each find the other's artifacts stale and rebuild.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref());
        if set_by_cargo_run {
            c.env_remove(name.as_ref());
        }
    }
    c
}
