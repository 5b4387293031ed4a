//! `cargo xtask boot --site NAME`: boot a copy of the site's image under QEMU with OVMF through
//! the one VM type (xtask/vm): TCG here, KVM where MICROMIRROR_KVM=1 and it works; the serial
//! console on this terminal or in a file; ports 22, 80, 443 and 873 forwarded on 127.0.0.1; a
//! hardware watchdog (i6300esb) that resets a hung guest.

use std::path::PathBuf;

use anyhow::{bail, Result};
use vm::{Config, Network, Serial, Vm};

use crate::{host, paths};

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
    let site = paths::load(&args.site)?;
    let image = paths::images(&args.site).join(format!("{}.img", args.site));
    let (disk, throwaway) = match &args.disk {
        Some(d) => (d.clone(), false),
        None => {
            if !image.exists() {
                bail!("no image at {}; build it with: cargo xtask image --site {}", image.display(), args.site);
            }
            let copy = paths::target().join("boot").join(format!("{}-disk.img", args.site));
            vm::disk_copy(&image, &copy, parse_size(&args.disk_size)?)?;
            (copy, true)
        }
    };
    let serial = args.serial_log.clone().map_or(Serial::Terminal, Serial::File);
    let mut config = Config::new(&disk, Network::for_site(&site)?, serial);
    config.port_base = args.port_base;
    config.guestfwd = args.guestfwd.clone();
    config.reboot = !args.no_reboot;
    config.memory_mib = args.memory;
    config.kvm = std::env::var("MICROMIRROR_KVM").is_ok_and(|v| v == "1");
    config.fresh_vars = throwaway;
    eprintln!("booting {} under QEMU ({}):", disk.display(), config.accel());
    for (guest, host) in vm::forwards(args.port_base) {
        eprintln!("  guest port {guest:>3} -> 127.0.0.1:{host}");
    }
    if let Some(log) = &args.serial_log {
        eprintln!("  serial console -> {}", log.display());
    }
    eprintln!(
        "  ready when the console says MICROMIRROR-HEALTH ok (about 40 s under TCG); sync, ACME and \
         update errors are expected without the tests' host services"
    );
    let status = Vm::start(&config)?.wait()?;
    if throwaway {
        // The grown copy is hundreds of MB of a throwaway boot: nothing in it is wanted later.
        let _ = fs_err::remove_file(&disk);
        let _ = fs_err::remove_file(config.vars());
    }
    if !status.success() {
        bail!("QEMU ended with {status}");
    }
    Ok(())
}

/// "64G", "512M", "1T" or bytes.
fn parse_size(text: &str) -> Result<u64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().map_err(|_| anyhow::anyhow!("--disk-size {text}: give a size such as 64G"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!("--disk-size {text}: the unit is K, M, G or T"),
    };
    Ok(n << shift)
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_sizes_read_as_typed() {
        assert_eq!(super::parse_size("64G").unwrap(), 64 << 30);
        assert_eq!(super::parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("1000").unwrap(), 1000);
        assert!(super::parse_size("64Q").is_err() && super::parse_size("G").is_err());
    }
}
