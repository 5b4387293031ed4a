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
