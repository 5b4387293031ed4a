//! `cargo xtask adopt --site NAME --host [USER@]HOST[:PORT]`: moves a running fleet box onto the
//! image over SSH, keeping its mirror data. This module owns the effects (SSH, the profile file,
//! the built image's manifest); what the box reports and what adopt decides from it are pure,
//! in the `adoption` crate (xtask/adoption). Today it runs the preflight: read-only on the box, it
//! prints the plan and every check, and refuses with the reason and the fix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths;

#[derive(clap::Args)]
pub struct AdoptArgs {
    /// Site name: profiles/SITE.toml, built into target/images/SITE
    #[arg(long)]
    pub site: String,
    /// The running box: [USER@]HOST[:PORT] (USER defaults to the profile's admin user)
    #[arg(long)]
    pub host: String,
    /// The private key to log in with (its .pub beside it is compared with the profile's keys);
    /// default: ssh's own choice (agent, ~/.ssh/config)
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// An ssh option, as `ssh -o` takes it (repeatable), e.g. UserKnownHostsFile=FILE
    #[arg(long = "ssh-option")]
    pub ssh_options: Vec<String>,
    /// Write the live box's values into the profile's `TODO:` placeholders first
    #[arg(long)]
    pub fill_profile: bool,
    /// Stop after the preflight (changes nothing on the box)
    #[arg(long)]
    pub preflight_only: bool,
}

/// Where and how to reach the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// `[USER@]HOST[:PORT]`; an IPv6 address with a port is written `[2001:db8::1]:2222`.
pub fn parse_target(text: &str) -> Result<Target> {
    let (user, rest) = match text.split_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, text),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').with_context(|| format!("--host {text}: no closing ]"))?;
        (addr.to_string(), after.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
        (h.to_string(), Some(p))
    } else {
        (rest.to_string(), None)
    };
    let port =
        port.map(|p| p.parse::<u16>().with_context(|| format!("--host {text}: {p:?} is not a port"))).transpose()?;
    if host.is_empty() {
        bail!("--host {text}: no host; write [USER@]HOST[:PORT]");
    }
    Ok(Target { user, host, port })
}

pub struct Ssh {
    target: Target,
    user: String,
    identity: Option<PathBuf>,
    options: Vec<String>,
}

impl Ssh {
    fn command(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15"]);
        if let Some(key) = &self.identity {
            c.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
        }
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        if let Some(port) = self.target.port {
            c.arg("-p").arg(port.to_string());
        }
        c.arg(format!("{}@{}", self.user, self.target.host));
        c
    }

    /// Runs `script` as root on the box (`sudo -n sh -s`), returning what it printed.
    pub fn run_as_root(&self, what: &str, script: &str) -> Result<String> {
        let mut child = self
            .command()
            .arg("sudo -n sh -s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ssh (install openssh-client)")?;
        child.stdin.take().context("ssh's stdin")?.write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{what} on {}@{} failed ({}): {}\n  fix: check that `ssh {}@{}` works with this key and that the \
                 user has passwordless sudo",
                self.user,
                self.target.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.user,
                self.target.host
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The built image's sizes that the preflight checks against the box.
struct Built {
    root_image_bytes: u64,
    uki_bytes: u64,
}

fn built(site: &str) -> Result<Built> {
    let manifest_path = paths::images(site).join("manifest.json");
    let text = fs_err::read(&manifest_path)
        .with_context(|| format!("no built image for {site}; build it first: cargo xtask image --site {site}"))?;
    let m: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", manifest_path.display()))?;
    let root_image_bytes = m["layout"]["root_a"]["image"]
        .as_u64()
        .with_context(|| format!("{} has no layout.root_a.image: rebuild the image", manifest_path.display()))?;
    let uki_bytes = m["update"]["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["file"].as_str().is_some_and(|n| n.ends_with(".efi"))))
        .and_then(|f| f["size"].as_u64())
        .with_context(|| format!("{} names no UKI: rebuild the image", manifest_path.display()))?;
    Ok(Built { root_image_bytes, uki_bytes })
}

fn login_key(identity: Option<&Path>) -> Result<Option<String>> {
    let Some(key) = identity else { return Ok(None) };
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let text = fs_err::read_to_string(&public)
        .with_context(|| format!("{} has no public half beside it ({})", key.display(), public.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// The profile file's admin user, read without validating the rest (placeholders may remain).
fn admin_user(profile_path: &Path) -> Result<String> {
    let text = fs_err::read_to_string(profile_path)?;
    let doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not TOML", profile_path.display()))?;
    Ok(doc.get("access").and_then(|a| a.get("admin_user")).and_then(|u| u.as_str()).unwrap_or("mirror").to_string())
}

pub fn run(args: AdoptArgs) -> Result<()> {
    let profile_path = paths::profiles().join(format!("{}.toml", args.site));
    if !profile_path.exists() {
        bail!("no profile {}: import it (cargo xtask profiles import --ansible …) first", profile_path.display());
    }
    let target = parse_target(&args.host)?;
    let user = match &target.user {
        Some(u) => u.clone(),
        None => admin_user(&profile_path)?,
    };
    let ssh = Ssh { target: target.clone(), user, identity: args.identity.clone(), options: args.ssh_options.clone() };

    println!("[survey] reading {} over SSH (nothing is changed)", target.host);
    let report = ssh.run_as_root("the survey", adoption::survey::SCRIPT)?;
    let survey = adoption::survey::parse(&report).with_context(|| format!("the survey of {}", target.host))?;

    if args.fill_profile {
        let text = fs_err::read_to_string(&profile_path)?;
        let (filled, written) = adoption::fill::fill(&text, &survey)?;
        if written.is_empty() {
            println!("[profile] no placeholder to fill in {}", profile_path.display());
        } else {
            let tmp = profile_path.with_extension("toml.partial");
            fs_err::write(&tmp, filled)?;
            fs_err::rename(&tmp, &profile_path)?;
            for (key, value) in &written {
                println!("[profile] {key} = {value}");
            }
        }
    }

    let site = paths::load(&args.site)?;
    let built = built(&args.site)?;
    let login = login_key(args.identity.as_deref())?;
    let profile_name = profile_path.display().to_string();
    let plan = adoption::plan::plan(&adoption::plan::Inputs {
        survey: &survey,
        profile: &site.profile,
        profile_path: &profile_name,
        root_image_bytes: built.root_image_bytes,
        // The running UKI and the one an update installs, systemd-boot and its settings.
        esp_needs: 2 * built.uki_bytes + (4 << 20),
        login_key: login.as_deref(),
    });
    print!("{}", adoption::plan::render(&plan));
    let refusals = plan.refusals();
    if !refusals.is_empty() {
        bail!(
            "adopt refused by the checks above ({}); nothing was written to {}",
            refusals.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
            target.host
        );
    }
    println!("preflight passed: {} can be adopted as {}", target.host, args.site);
    if args.preflight_only {
        return Ok(());
    }
    bail!(
        "the trial boot and the commit are not built yet: this adopt stops after the preflight (nothing was written \
         to {})",
        target.host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_user_host_and_port() {
        let t = parse_target("mirror@192.0.2.50:2222").unwrap();
        assert_eq!(t, Target { user: Some("mirror".into()), host: "192.0.2.50".into(), port: Some(2222) });
        assert_eq!(parse_target("box.example.net").unwrap().port, None);
        let v6 = parse_target("[2001:db8::50]:22").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::50", Some(22)));
        assert_eq!(parse_target("2001:db8::50").unwrap().host, "2001:db8::50");
        assert!(parse_target("host:port").unwrap_err().to_string().contains("not a port"));
    }
}
