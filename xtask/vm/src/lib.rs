//! The one VM type: a disk booted under QEMU (q35, OVMF with a writable copy of its variables,
//! TCG, or KVM where asked for and it works), user-mode networking with `restrict=on` that
//! matches the site's own prefixes, ports 22, 80, 443, 873 and 9100 forwarded on 127.0.0.1, guestfwd
//! rules to host services, a serial log, an i6300esb watchdog, and guest reboots when asked.
//! `cargo xtask boot`, the end-to-end tests and every benchmark boot through it.
//!
//! A guest's reboot (or the watchdog's reset) with its console in a file is a power cycle: that
//! QEMU ends and a fresh one cold-starts the same disk and firmware variables (`power`). A warm
//! reset under TCG now and then left OVMF silent for good, which a real box's reset never does.
//!
//! It never leaves QEMU behind: QEMU runs in its own process group (guestfwd's helpers with
//! it), which dropping a `Vm` ends; and it is started with a parent-death signal, so a test or
//! benchmark that is killed or interrupted takes its QEMU with it. Every wait is bounded and a
//! failed wait shows the console's last lines.

mod power;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schema::profile::LoadedProfile;

use power::Power;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The guest ports forwarded to 127.0.0.1:`port_base` + port (9100: the metrics, which the
/// guest's firewall lets in from its admin prefixes, where QEMU's host address lies).
pub const FORWARDED: [u16; 5] = [22, 80, 443, 873, 9100];

/// Where the serial console goes.
#[derive(Debug, Clone)]
pub enum Serial {
    /// This terminal, with QEMU's monitor (Ctrl-A X ends it); QEMU stays in the terminal's
    /// process group so it may read the keyboard.
    Terminal,
    /// A file, replaced at each start (kept across the power cycles of a guest's reboots).
    File(PathBuf),
}

/// The user-mode network: the site's IPv4 prefix (and IPv6, when it has one) with its gateway as
/// QEMU's host address, so the guest's static addresses work unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// e.g. "192.0.2.0/24"
    pub ipv4_net: String,
    pub ipv4_host: String,
    /// The guest's own address: the forwards' target.
    pub guest: String,
    /// (prefix address, prefix length, host address)
    pub ipv6: Option<(String, u8, String)>,
    /// A resolver QEMU answers on, when it lies inside the IPv4 prefix.
    pub dns: Option<String>,
}

impl Network {
    /// The network a site's profile asks for.
    pub fn for_site(site: &LoadedProfile) -> Result<Network> {
        let net = &site.profile.network;
        let v4 = net.ipv4_net().context("QEMU boot needs the profile's network.ipv4 (the guest's static address)")?;
        let gw = net.ipv4_gateway.clone().context("network.ipv4_gateway is missing")?;
        let ipv6 = match (net.ipv6_net(), &net.ipv6_gateway) {
            (Some(v6), Some(gw6)) => Some((v6.trunc().addr().to_string(), v6.prefix_len(), gw6.to_string())),
            _ => None,
        };
        let dns = net.dns.first().filter(|d| d.parse::<std::net::Ipv4Addr>().is_ok_and(|a| v4.contains(&a))).cloned();
        Ok(Network { ipv4_net: v4.trunc().to_string(), ipv4_host: gw, guest: v4.addr().to_string(), ipv6, dns })
    }

    /// QEMU's `-netdev` value.
    pub fn netdev(&self, port_base: u16, guestfwd: &[String]) -> String {
        let mut s = format!("user,id=wan,restrict=on,net={},host={}", self.ipv4_net, self.ipv4_host);
        if let Some((prefix, len, host)) = &self.ipv6 {
            s.push_str(&format!(",ipv6-prefix={prefix},ipv6-prefixlen={len},ipv6-host={host}"));
        }
        if let Some(dns) = &self.dns {
            s.push_str(&format!(",dns={dns}"));
        }
        for (guest, host) in forwards(port_base) {
            s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-{}:{guest}", self.guest));
        }
        for g in guestfwd {
            s.push_str(&format!(",guestfwd={g}"));
        }
        s
    }
}

/// (guest port, host port) of each forward.
pub fn forwards(port_base: u16) -> Vec<(u16, u16)> {
    FORWARDED.into_iter().map(|p| (p, port_base.saturating_add(p))).collect()
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The disk, booted as it is and kept (make a copy to boot a throwaway one).
    pub disk: PathBuf,
    pub network: Network,
    /// Host ports are `port_base` + 22, 80, 443, 873, 9100 on 127.0.0.1.
    pub port_base: u16,
    /// Extra guestfwd rules, e.g. "tcp:192.0.2.2:873-cmd:socat - TCP:127.0.0.1:8873".
    pub guestfwd: Vec<String>,
    pub serial: Serial,
    /// Let the guest reboot (a power cycle, or QEMU's own reset on a terminal); otherwise a
    /// reboot ends the VM.
    pub reboot: bool,
    pub memory_mib: u32,
    /// Use KVM when /dev/kvm exists (it cannot run stock firmware on the development machines).
    pub kvm: bool,
    /// Start with fresh firmware variables even if the disk has some beside it.
    pub fresh_vars: bool,
    /// A USB stick (the USB installer), booted first: as remote hands pick it in the boot menu.
    pub usb: Option<PathBuf>,
    /// With a console in a file: keys can be typed on it too (`Vm::type_on_console`), through a
    /// socket beside the file (FILE.sock).
    pub keyboard: bool,
}

impl Config {
    pub fn new(disk: &Path, network: Network, serial: Serial) -> Config {
        Config {
            disk: disk.to_path_buf(),
            network,
            port_base: free_port_base(),
            guestfwd: Vec::new(),
            serial,
            reboot: false,
            memory_mib: 1024,
            kvm: false,
            fresh_vars: false,
            usb: None,
            keyboard: false,
        }
    }

    pub fn accel(&self) -> &'static str {
        if self.kvm && Path::new("/dev/kvm").exists() {
            "kvm"
        } else {
            "tcg"
        }
    }

    /// The firmware's variables for this disk: a writable copy of OVMF's template beside it,
    /// kept across that disk's boots. No boot order is ever passed (but a USB stick's, picked as
    /// from the boot menu): OVMF finds \EFI\BOOT\BOOTX64.EFI by itself, as a real box's firmware does.
    pub fn vars(&self) -> PathBuf {
        self.disk.with_extension("OVMF_VARS.fd")
    }

    /// The socket keys are typed into, when the console takes them.
    fn keyboard_socket(&self) -> Option<PathBuf> {
        match &self.serial {
            Serial::File(log) if self.keyboard => Some(log.with_extension("sock")),
            _ => None,
        }
    }

    /// Whether a guest's reset is a power cycle (a fresh QEMU) rather than QEMU's own reset:
    /// so with the console in a file, where QEMU's standard I/O carries its QMP events.
    fn power_cycles(&self) -> bool {
        self.reboot && matches!(self.serial, Serial::File(_))
    }

    fn command(&self) -> Command {
        // setpriv gives QEMU a parent-death signal without an unsafe pre_exec hook: when the
        // process that started it dies (a killed test, an interrupted benchmark), so does QEMU.
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", "qemu-system-x86_64", "-machine", "q35", "-accel", self.accel()]);
        c.args(["-cpu", "max", "-smp", "2", "-m", &self.memory_mib.to_string(), "-nodefaults", "-display", "none"]);
        c.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"));
        c.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", self.vars().display()));
        c.arg("-drive").arg(format!("file={},if=virtio,format=raw,cache=unsafe,discard=unmap", self.disk.display()));
        if let Some(stick) = &self.usb {
            c.args(["-device", "qemu-xhci,id=xhci", "-drive"]);
            c.arg(format!("if=none,id=stick,format=raw,cache=unsafe,file={}", stick.display()));
            c.args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
        }
        c.arg("-netdev").arg(self.network.netdev(self.port_base, &self.guestfwd));
        // No network boot (no iPXE ROM, none of OVMF's PXE): no box in the fleet boots so, and a
        // disk with nothing to boot reaches the firmware's shell in seconds, not minutes.
        c.args(["-device", "virtio-net-pci,netdev=wan,mac=52:54:00:12:34:56,romfile=", "-device", "virtio-rng-pci"]);
        for knob in ["IPv4PXESupport", "IPv6PXESupport", "IPv4Support", "IPv6Support"] {
            c.arg("-fw_cfg").arg(format!("name=opt/org.tianocore/{knob},string=n"));
        }
        c.args(["-device", "i6300esb", "-action", "watchdog=reset", "-serial"]);
        match (&self.serial, self.keyboard_socket()) {
            (Serial::Terminal, _) => c.arg("mon:stdio"),
            (Serial::File(log), None) => c
                .arg("chardev:console")
                .arg("-chardev")
                .arg(format!("file,id=console,path={},append=on", log.display())),
            (Serial::File(log), Some(socket)) => {
                // QEMU logs the console to the file whether or not a client is connected.
                c.arg("chardev:console").arg("-chardev").arg(format!(
                    "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                    socket.display(),
                    log.display()
                ))
            }
        };
        if self.power_cycles() {
            c.args(["-chardev", "stdio,id=qmp,signal=off", "-mon", "chardev=qmp,mode=control"]);
        }
        if !self.reboot || self.power_cycles() {
            c.arg("-no-reboot");
        }
        c
    }
}

/// A running VM: one QEMU, or one after another across the guest's power cycles; stopped when
/// dropped.
pub struct Vm {
    power: Arc<Power>,
    supervisor: Option<JoinHandle<()>>,
    pub serial: Option<PathBuf>,
    pub port_base: u16,
    keyboard: Option<PathBuf>,
}

impl Vm {
    /// Starts QEMU on `config.disk`.
    pub fn start(config: &Config) -> Result<Vm> {
        if !config.disk.exists() {
            bail!("no disk at {}", config.disk.display());
        }
        let vars = config.vars();
        if config.fresh_vars || !vars.exists() {
            fs_err::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS} (is ovmf installed?)"))?;
        }
        let keyboard = config.keyboard_socket();
        if let Some(socket) = &keyboard {
            // A unix socket's path is at most 107 bytes.
            if socket.as_os_str().len() > 107 {
                bail!("the console's socket path {} is too long for a unix socket", socket.display());
            }
        }
        let serial = match &config.serial {
            Serial::File(log) => {
                let _ = fs_err::remove_file(log);
                Some(log.clone())
            }
            Serial::Terminal => None,
        };
        let (power, supervisor) = power::start(config.clone())?;
        Ok(Vm { power, supervisor: Some(supervisor), serial, port_base: config.port_base, keyboard })
    }

    /// The process id of the QEMU running now.
    pub fn pid(&self) -> u32 {
        self.power.pid()
    }

    /// How many times the guest has been power-cycled (its reboots and watchdog resets).
    pub fn power_cycles(&self) -> u32 {
        self.power.cycles()
    }

    pub fn port(&self, guest: u16) -> u16 {
        self.port_base + guest
    }

    /// The serial console so far ("" on a terminal).
    pub fn console(&self) -> String {
        self.serial
            .as_ref()
            .and_then(|s| std::fs::read(s).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Types `text` on the serial console (a VM started with `keyboard`).
    pub fn type_on_console(&self, text: &str) -> Result<()> {
        use std::io::Write;
        let socket = self.keyboard.as_ref().context("this VM's console takes no keys (Config::keyboard)")?;
        let mut stream = std::os::unix::net::UnixStream::connect(socket)
            .with_context(|| format!("connecting to the console at {}", socket.display()))?;
        stream.write_all(text.as_bytes())?;
        Ok(())
    }

    /// The console's last `lines` lines.
    pub fn console_tail(&self, lines: usize) -> String {
        let console = self.console();
        let all: Vec<&str> = console.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the VM still runs (a power cycle in progress counts).
    pub fn running(&self) -> bool {
        self.power.ended().is_none()
    }

    /// Why the VM ended, when it has.
    fn ended_because(&self) -> Option<String> {
        self.power.ended().map(|end| match end {
            Ok(status) => format!("QEMU exited ({status})"),
            Err(e) => e,
        })
    }

    /// Waits for a console line holding `marker`; returns it from the marker on.
    pub fn wait_for_line(&mut self, marker: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) =
                self.console().lines().find_map(|l| l.find(marker).map(|i| l[i..].trim_end().to_string()))
            {
                return Ok(line);
            }
            if let Some(why) = self.ended_because() {
                bail!("{why} before `{marker}` appeared; console:\n{}", self.console_tail(80));
            }
            if start.elapsed() > limit {
                bail!("no `{marker}` on the console within {limit:?}; console:\n{}", self.console_tail(80));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Polls `ok` until it holds; after `limit`, an error naming `what` with the console's tail.
    pub fn wait_for(&self, limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while !ok() {
            if let Some(why) = self.ended_because() {
                bail!("{why} before {what}; console:\n{}", self.console_tail(60));
            }
            if start.elapsed() > limit {
                bail!("{what} did not happen within {limit:?}; console:\n{}", self.console_tail(60));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Waits for the VM to end by itself (the guest powered off, or Ctrl-A X on a terminal).
    pub fn wait(mut self) -> Result<ExitStatus> {
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        match self.power.ended() {
            Some(Ok(status)) => Ok(status),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("the VM's supervisor ended without an exit status"),
        }
    }

    /// Stops QEMU and everything in its process group, and power cycles no more (the guest
    /// loses nothing the kernel has written; XFS and ext4 recover).
    pub fn stop(&mut self) {
        self.power.stop();
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A sparse copy of `image` grown to `size` bytes, for a VM to boot and keep.
pub fn disk_copy(image: &Path, dest: &Path, size: u64) -> Result<()> {
    if let Some(dir) = dest.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let status = Command::new("cp").arg("--sparse=always").arg(image).arg(dest).status()?;
    if !status.success() {
        bail!("copying {} to {} failed", image.display(), dest.display());
    }
    let file = fs_err::OpenOptions::new().write(true).open(dest)?;
    if file.metadata()?.len() < size {
        file.set_len(size)?;
    }
    Ok(())
}

/// A base port such that base + each forwarded port is free on 127.0.0.1 right now (two calls
/// in one process try different bases first); the highest, base + 9100, stays under 65536.
pub fn free_port_base() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16).wrapping_add(calls.wrapping_mul(101));
    for i in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(i * 37) % 360) * 100;
        if FORWARDED.iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", base + p)).is_ok()) {
            return base;
        }
    }
    30_000
}

#[cfg(test)]
mod tests;
