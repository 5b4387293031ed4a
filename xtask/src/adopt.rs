//! `cargo xtask adopt --site NAME --host [USER@]HOST[:PORT]`: moves a running fleet box onto the
//! image over SSH, keeping its mirror data. This module owns the effects (SSH, the profile file,
//! the built image's manifest); what the box reports and what adopt decides from it are pure,
//! in the `adoption` crate (xtask/adoption). The preflight is read-only on the box: it prints the
//! plan and every check, and refuses with the reason and the fix. Then the trial: slot A written
//! into the swap partition and read back, systemd-boot and the UKI into the ESP, the box's
//! identity into the state folder, one boot of the new system through UEFI BootNext; adopt waits
//! from outside for it to pass its health check and answer over SSH (same host key) and HTTP,
//! and then commits (`mirror-update adopt-commit` on the new system). A trial that fails lands
//! in the old system by itself; adopt says so and what the new system said.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::site_image::{self, esp_files, Built};

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
    /// The new system's HTTP address to check before the commit (default http://HOST/)
    #[arg(long)]
    pub http: Option<String>,
    /// How long the trial boot may take to pass its health check
    #[arg(long, default_value_t = 30)]
    pub trial_minutes: u64,
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
        self.feed(what, "sudo -n sh -s", script.as_bytes())
    }

    /// Runs `command` on the box with `input` on its standard input.
    pub fn feed(&self, what: &str, command: &str, input: &[u8]) -> Result<String> {
        self.stream(what, command, &mut |stdin| stdin.write_all(input))
    }

    /// Runs `command` on the box with what `write` writes on its standard input.
    pub fn stream(
        &self,
        what: &str,
        command: &str,
        write: &mut dyn FnMut(&mut std::process::ChildStdin) -> std::io::Result<()>,
    ) -> Result<String> {
        let mut child = self
            .command()
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ssh (install openssh-client)")?;
        let mut stdin = child.stdin.take().context("ssh's stdin")?;
        let written = write(&mut stdin);
        drop(stdin);
        let out = child.wait_with_output()?;
        written.with_context(|| format!("{what}: sending to {}", self.target.host))?;
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

    /// One short look: what `command` printed, or None while the box does not answer.
    fn poll(&self, command: &str) -> Option<String> {
        let out = self.command().args(["-o", "ConnectTimeout=10"]).arg(command).stdin(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The box's ed25519 host key, as ssh-keyscan reads it.
    fn host_key(&self) -> Option<String> {
        let mut c = Command::new("ssh-keyscan");
        c.args(["-T", "10", "-t", "ed25519"]);
        if let Some(port) = self.target.port {
            c.arg("-p").arg(port.to_string());
        }
        let out = c.arg(&self.target.host).stderr(Stdio::null()).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().get(1).map(|k| k.to_string()))
    }
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
    // A preflight may run before the image is built (right after --fill-profile).
    let built = match site_image::built(&args.site) {
        Ok(b) => Some(b),
        Err(e) if args.preflight_only => {
            println!("[image] {e:#}: the slots and the ESP are not checked");
            None
        }
        Err(e) => return Err(e),
    };
    let login = login_key(args.identity.as_deref())?;
    let profile_name = profile_path.display().to_string();
    let plan = adoption::plan::plan(&adoption::plan::Inputs {
        survey: &survey,
        profile: &site.profile,
        profile_path: &profile_name,
        root_image_bytes: built.as_ref().map(|b| b.root_image_bytes),
        esp_needs: built.as_ref().map(Built::esp_needs),
        login_key: login.as_deref(),
        offline: false,
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
    let Some(built) = built.filter(|_| !args.preflight_only) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let http = args.http.clone().unwrap_or_else(|| format!("http://{}/", target.host));
    let sent = trial(&ssh, &plan, &built, &site.profile.site.hostname)?;
    println!("[trial] {} sent to the box; rebooting it into {} once", human(sent), built.version);
    let deadline = std::time::Duration::from_secs(args.trial_minutes * 60);
    let serving = wait_for_trial(&ssh, &built.version, &http, deadline)?;
    println!(
        "[trial] {} runs {} and serves {http} ({} s after the reboot)",
        target.host,
        built.version,
        serving.as_secs()
    );
    commit(&ssh)?;
    println!(
        "adopted: {} runs {} from now on; {} s from the start of adopt to the commit, {} sent to the box",
        target.host,
        built.version,
        started.elapsed().as_secs(),
        human(sent)
    );
    Ok(())
}

fn human(bytes: u64) -> String {
    schema::human::human_bytes(bytes)
}

/// The trial's writes: slot A, the ESP, the state, BootNext, then the reboot. Returns the bytes
/// sent to the box.
fn trial(ssh: &Ssh, plan: &adoption::plan::Plan, built: &Built, hostname: &str) -> Result<u64> {
    use adoption::plan::Role;
    use adoption::trial;
    let version = image::version::Version::parse(&built.version).context("the built version")?;
    let writes = trial::Writes::new(plan, &version, jiff::Timestamp::now().as_second(), false)
        .context("the old /boot's partition number")?;
    let t = writes.trial(plan, hostname);
    print!("{}", ssh.run_as_root("preparing the trial", &trial::prepare(&t))?);

    // Slot A: the root image, decompressed here and streamed into the old swap partition.
    let slot = &plan.partition(Role::SlotA).context("slot A")?.node;
    println!("[trial] writing the root image ({}) into {slot}", human(built.root_image_bytes));
    let mut hash = <sha2::Sha256 as sha2::Digest>::new();
    let mut sent: u64 = 0;
    ssh.stream("writing slot A", &format!("sudo -n dd of={slot} bs=4M conv=fsync status=none"), &mut |stdin| {
        let mut decoder = zstd::stream::read::Decoder::new(std::fs::File::open(&built.root_zst)?)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut decoder, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            sha2::Digest::update(&mut hash, &buf[..n]);
            stdin.write_all(&buf[..n])?;
            sent += n as u64;
        }
    })?;
    let wanted: String = sha2::Digest::finalize(hash).iter().map(|b| format!("{b:02x}")).collect();
    let read_back = ssh.run_as_root("reading slot A back", &format!("head -c {sent} {slot} | sha256sum"))?;
    if read_back.split_whitespace().next() != Some(wanted.as_str()) {
        bail!("slot A ({slot}) does not read back as written (sha256 {wanted}, the box read {read_back}); nothing else was changed: run adopt again");
    }
    println!("[trial] slot A reads back as written ({sent} bytes, sha256 {})", &wanted[..16]);

    let uki = fs_err::read(&built.uki)?;
    let [loader, loader_conf] = esp_files(built, ["EFI/BOOT/BOOTX64.EFI", "loader/loader.conf"])?;
    for (name, bytes) in [("uki.efi", &uki), ("systemd-bootx64.efi", &loader), ("loader.conf", &loader_conf)] {
        ssh.feed("staging a file", &format!("sudo -n sh -c 'cat > {}/{name}'", trial::STAGING), bytes)?;
        sent += bytes.len() as u64;
    }
    print!("{}", ssh.run_as_root("installing the trial", &trial::install(&t))?);
    print!("{}", ssh.run_as_root("rebooting", &trial::reboot())?);
    Ok(sent)
}

/// What a look at the box over SSH finds during the trial.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Still the boot adopt started from.
    Before,
    /// The new system, with its health check's state (active: passed; failed; activating).
    New { health: String },
    /// Another boot of the old system: the trial is over.
    Old,
}

/// Four looks a minute: within the appliance's limit of new SSH connections (10 a minute from one
/// address), with room for the commit's.
const POLL: std::time::Duration = std::time::Duration::from_secs(15);

const LOOK: &str = "cat /proc/sys/kernel/random/boot_id; cat /proc/cmdline;                     systemctl show -p ActiveState --value micromirror-health.service 2>/dev/null || true";

fn seen(output: &str, first_boot: &str, version: &str) -> Seen {
    let mut lines = output.lines();
    let boot = lines.next().unwrap_or_default().trim();
    let cmdline = lines.next().unwrap_or_default();
    let health = lines.next().unwrap_or_default().trim().to_string();
    if boot == first_boot {
        Seen::Before
    } else if cmdline.split_whitespace().any(|a| a == format!("micromirror.version={version}")) {
        Seen::New { health }
    } else {
        Seen::Old
    }
}

fn describe(look: Option<&Seen>) -> String {
    match look {
        None => "the box does not answer over SSH (rebooting)".into(),
        Some(Seen::Before) => "still the old system's boot".into(),
        Some(Seen::New { health }) => format!("the new system is up; its health check is {health}"),
        Some(Seen::Old) => "the old system is back".into(),
    }
}

/// Waits for the new system to pass its health check and answer over SSH (same host key) and
/// HTTP; a return of the old system ends the wait with what the new one said.
fn wait_for_trial(ssh: &Ssh, version: &str, http: &str, limit: std::time::Duration) -> Result<std::time::Duration> {
    let start = std::time::Instant::now();
    let first_boot = ssh.poll(LOOK).and_then(|o| o.lines().next().map(str::to_string)).unwrap_or_default();
    let host_key = ssh.host_key();
    let mut last = None;
    loop {
        if start.elapsed() > limit {
            bail!(
                "the new system did not pass its health check within {} min (last seen: {last:?}); the box returns \
                 to the old system at its next reset; the log is {} on the box",
                limit.as_secs() / 60,
                adoption::trial::LOG
            );
        }
        let look = ssh.poll(LOOK).map(|o| seen(&o, &first_boot, version));
        if look != last {
            println!("[trial] {} ({} s)", describe(look.as_ref()), start.elapsed().as_secs());
        }
        match &look {
            Some(Seen::New { health }) if health == "active" => {
                if ssh.host_key() != host_key {
                    bail!("the new system answers with another SSH host key than the old one had: stopped before the commit");
                }
                if http_status(http) == Some(200) {
                    return Ok(start.elapsed());
                }
            }
            Some(Seen::Old) => {
                let said =
                    ssh.run_as_root("reading the new system's verdict", &adoption::trial::verdict_from_old_system())?;
                bail!(
                    "the new system did not pass its trial; the box is back on its old system, with its data and \
                     services as before. What the new system said:\n{said}"
                );
            }
            _ => {}
        }
        last = look;
        // The image's firewall drops a source's SSH connections beyond 10 a minute.
        std::thread::sleep(POLL);
    }
}

/// The status code of a GET of `url` (http only), or None without an answer.
fn http_status(url: &str) -> Option<u16> {
    use std::io::Read;
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&address).ok()?.next()?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10)).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).ok()?;
    String::from_utf8_lossy(&head[..n]).split_whitespace().nth(1)?.parse().ok()
}

/// The commit, on the new system: `mirror-update adopt-commit`, then a look at the result (one
/// connection: the box's firewall counts them).
fn commit(ssh: &Ssh) -> Result<()> {
    let said = ssh.feed(
        "committing",
        "sudo -n mirror-update adopt-commit && echo && sudo -n mirror-update status --fields",
        b"",
    )?;
    let fields = said.lines().last().unwrap_or_default();
    print!("{}", said.strip_suffix(fields).unwrap_or(&said));
    if !fields.contains("other=empty") {
        bail!("after the commit the updater does not see an empty slot B: {fields}");
    }
    println!("[commit] {}", fields.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trial_is_told_apart_by_boot_id_and_command_line() {
        let before = "b1\nBOOT_IMAGE=/vmlinuz root=UUID=x\n\n";
        assert_eq!(seen(before, "b1", "20261206.120000"), Seen::Before);
        let new = "b2\nmicromirror.version=20261206.120000 root=PARTLABEL=x\nactivating\n";
        assert_eq!(seen(new, "b1", "20261206.120000"), Seen::New { health: "activating".into() });
        assert_eq!(seen("b3\nBOOT_IMAGE=/vmlinuz\n\n", "b1", "20261206.120000"), Seen::Old);
    }

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
