//! `cargo xtask boot --site NAME`: boot a copy of the site's image in QEMU with OVMF (TCG here,
//! KVM where it works), the serial console on this terminal or in a file, and ports 22, 80, 443
//! and 873 forwarded on 127.0.0.1, and a hardware watchdog (i6300esb) that resets a hung guest.
//! The boot tests drive this same command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use schema::profile::LoadedProfile;

use crate::cmd::{self, cmd};
use crate::pipeline::load;
use crate::{host, paths};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(clap::Args)]
pub struct BootArgs {
    /// Site name: boots target/images/SITE/SITE.img (build it first with `cargo xtask image`)
    #[arg(long)]
    pub site: String,
    /// Boot this disk file as it is (kept across boots) instead of a fresh throwaway copy
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Size of the fresh copy's virtual disk; the box grows its data partition into it
    #[arg(long, default_value = "64G")]
    pub disk_size: String,
    /// Host ports are BASE+22, BASE+80, BASE+443 and BASE+873 on 127.0.0.1
    #[arg(long, default_value_t = 10000)]
    pub port_base: u16,
    /// Write the serial console to this file instead of the terminal
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Exit QEMU instead of rebooting the guest
    #[arg(long)]
    pub no_reboot: bool,
    /// Extra guestfwd rules, e.g. "tcp:192.0.2.2:873-cmd:nc 127.0.0.1 8873" or
    /// "tcp:192.0.2.2:873-tcp:127.0.0.1:8873"
    #[arg(long)]
    pub guestfwd: Vec<String>,
    /// Memory in MiB
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
}

pub fn run(args: BootArgs) -> Result<()> {
    host::ensure(&[host::BOOT])?;
    let site = load::load(&args.site)?;
    let image = paths::images(&args.site).join(format!("{}.img", args.site));
    let disk = match &args.disk {
        Some(d) => d.clone(),
        None => {
            if !image.exists() {
                bail!("no image at {}; build it with: cargo xtask image --site {}", image.display(), args.site);
            }
            let copy = paths::target().join("boot").join(format!("{}-disk.img", args.site));
            fresh_disk(&image, &copy, &args.disk_size)?;
            copy
        }
    };
    let vars = fresh_vars(&disk, args.disk.is_none())?;
    let sh = cmd::shell()?;
    let qemu = qemu_command(&sh, &site, &disk, &vars, &args)?;
    eprintln!("booting {} under QEMU ({}):", disk.display(), accel());
    for (guest, host) in forwards(args.port_base) {
        eprintln!("  guest port {guest:>3} -> 127.0.0.1:{host}");
    }
    if let Some(log) = &args.serial_log {
        eprintln!("  serial console -> {}", log.display());
    }
    cmd::run_visible(qemu)
}

/// A sparse copy of the image, resized to `size` (the box grows into it on first boot).
pub fn fresh_disk(image: &Path, copy: &Path, size: &str) -> Result<()> {
    if let Some(dir) = copy.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let sh = cmd::shell()?;
    cmd::run(cmd!(sh, "cp --sparse=always {image} {copy}"))?;
    cmd::run(cmd!(sh, "truncate -s {size} {copy}"))?;
    Ok(())
}

/// The firmware's variables for this disk: a writable copy of OVMF's template beside the disk,
/// kept across that disk's boots (a fresh throwaway disk gets fresh variables). No boot order
/// is ever passed: OVMF finds \EFI\BOOT\BOOTX64.EFI by itself, as a real box's firmware does.
fn fresh_vars(disk: &Path, throwaway: bool) -> Result<PathBuf> {
    let vars = disk.with_extension("OVMF_VARS.fd");
    if throwaway || !vars.exists() {
        fs_err::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
    }
    Ok(vars)
}

pub fn forwards(base: u16) -> Vec<(u16, u16)> {
    [22u16, 80, 443, 873].into_iter().map(|p| (p, base.saturating_add(p))).collect()
}

fn accel() -> &'static str {
    // KVM cannot run stock firmware on the development machines (see boot-notes); TCG always works.
    if std::env::var("MICROMIRROR_KVM").is_ok_and(|v| v == "1") && Path::new("/dev/kvm").exists() {
        "kvm"
    } else {
        "tcg"
    }
}

/// The user-mode network matches the profile's prefixes, so the guest's static addresses work.
pub fn netdev(site: &LoadedProfile, port_base: u16, guestfwd: &[String]) -> Result<String> {
    let net = &site.profile.network;
    let v4 = net.ipv4_net().context("QEMU boot needs the profile's network.ipv4 (the guest's static address)")?;
    let gw = net.ipv4_gateway.clone().context("network.ipv4_gateway is missing")?;
    let mut s = format!("user,id=wan,restrict=on,net={},host={gw}", v4.trunc());
    if let (Some(v6), Some(gw6)) = (net.ipv6_net(), &net.ipv6_gateway) {
        s.push_str(&format!(",ipv6-prefix={},ipv6-prefixlen={},ipv6-host={gw6}", v6.trunc().addr(), v6.prefix_len()));
    }
    if let Some(dns) = net.dns.first() {
        if dns.parse::<std::net::Ipv4Addr>().is_ok_and(|d| v4.contains(&d)) {
            s.push_str(&format!(",dns={dns}"));
        }
    }
    for (guest, host) in forwards(port_base) {
        s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-{}:{guest}", v4.addr()));
    }
    for g in guestfwd {
        s.push_str(&format!(",guestfwd={g}"));
    }
    Ok(s)
}

fn qemu_command<'a>(
    sh: &'a cmd::Shell,
    site: &LoadedProfile,
    disk: &Path,
    vars: &Path,
    args: &BootArgs,
) -> Result<cmd::Cmd<'a>> {
    let (accel, memory) = (accel(), args.memory.to_string());
    let code = format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}");
    let vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let disk = format!("file={},if=virtio,format=raw,cache=unsafe,discard=unmap", disk.display());
    let netdev = netdev(site, args.port_base, &args.guestfwd)?;
    let serial = match &args.serial_log {
        Some(log) => format!("file:{}", log.display()),
        None => "mon:stdio".into(),
    };
    let no_reboot = args.no_reboot.then_some("-no-reboot");
    Ok(cmd!(
        sh,
        "qemu-system-x86_64 -machine q35 -accel {accel} -cpu max -smp 2 -m {memory} -nodefaults -display none
            -drive {code} -drive {vars} -drive {disk} -netdev {netdev}
            -device virtio-net-pci,netdev=wan,mac=52:54:00:12:34:56 -device virtio-rng-pci
            -device i6300esb -action watchdog=reset -serial {serial} {no_reboot...}"
    ))
}
