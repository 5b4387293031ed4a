//! The build host's own tools: which packages each command needs, and installing the missing
//! ones (apt on Debian, dnf on Fedora/AlmaLinux), or naming the exact command when not root.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cmd::{self, cmd};

/// A host tool, found by command name or by a file it installs.
pub struct Need {
    pub probe: &'static str,
    pub debian: &'static str,
    pub fedora: &'static str,
}

const fn need(probe: &'static str, debian: &'static str, fedora: &'static str) -> Need {
    Need { probe, debian, fedora }
}

/// What `cargo xtask image` needs for a Debian 12 base.
pub const IMAGE_DEBIAN: &[Need] = &[
    need("mmdebstrap", "mmdebstrap", "mmdebstrap"),
    // The read-only root and its hash tree.
    need("mkfs.erofs", "erofs-utils", "erofs-utils"),
    need("veritysetup", "cryptsetup-bin", "cryptsetup"),
    need("zstd", "zstd", "zstd"),
    need("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "systemd-boot-efi", "systemd-boot-unsigned"),
    need("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi", "systemd-boot-unsigned"),
    // Signs the update's SHA256SUMS and turns the profile's signing key into the box's keyring.
    need("gpg", "gnupg", "gnupg2"),
    need("unshare", "util-linux", "util-linux"),
    need("systemctl", "systemd", "systemd"),
    // Fetches the SSH keys a profile names by URL (access.ssh_key_urls).
    need("curl", "curl", "curl"),
];

/// What `cargo xtask image` needs for an AlmaLinux 9 base.
pub const IMAGE_ALMALINUX: &[Need] = &[
    need("dnf", "dnf", "dnf"),
    need("rpm", "rpm", "rpm"),
    need("curl", "curl", "curl"),
    need("mkfs.erofs", "erofs-utils", "erofs-utils"),
    need("veritysetup", "cryptsetup-bin", "cryptsetup"),
    need("zstd", "zstd", "zstd"),
    need("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "systemd-boot-efi", "systemd-boot-unsigned"),
    need("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi", "systemd-boot-unsigned"),
    // Signs the update's SHA256SUMS and turns the profile's signing key into the box's keyring.
    need("gpg", "gnupg", "gnupg2"),
    need("systemctl", "systemd", "systemd"),
];

/// What `cargo xtask boot` and the boot tests need.
pub const BOOT: &[Need] = &[
    need("qemu-system-x86_64", "qemu-system-x86", "qemu-system-x86"),
    need("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf", "edk2-ovmf"),
    // Gives QEMU a parent-death signal (xtask/vm): no guest outlives what started it.
    need("setpriv", "util-linux", "util-linux"),
];

/// What the benchmarks add: the peer and the load generator.
pub const BENCH: &[Need] = &[
    need("nginx", "nginx-light", "nginx"),
    need("wrk", "wrk", "wrk"),
    need("curl", "curl", "curl"),
    need("openssl", "openssl", "openssl"),
    // The update benchmark's broker and the guest's forwards.
    need("mosquitto", "mosquitto", "mosquitto"),
    need("mosquitto_pub", "mosquitto-clients", "mosquitto"),
    need("socat", "socat", "socat"),
    // Peak memory of `mirror-server capacity` in the capacity benchmark.
    need("/usr/bin/time", "time", "time"),
];

/// What the rest of the tests need: real peers and checkers.
pub const TESTS: &[Need] = &[
    need("fsck.vfat", "dosfstools", "dosfstools"),
    need("objdump", "binutils", "binutils"),
    // Checks our metrics exposition (and, for the fleet, Prometheus' own configuration).
    need("promtool", "prometheus", "prometheus"),
    // A real Prometheus scrapes two servers with what `fleet prometheus` writes.
    need("prometheus", "prometheus", "prometheus"),
    need("sgdisk", "gdisk", "gdisk"),
    need("sfdisk", "fdisk", "util-linux"),
    need("mkfs.xfs", "xfsprogs", "xfsprogs"),
    need("rsync", "rsync", "rsync"),
    need("mosquitto", "mosquitto", "mosquitto"),
    need("mosquitto_pub", "mosquitto-clients", "mosquitto"),
    need("curl", "curl", "curl"),
    need("wget", "wget", "wget"),
    need("createrepo_c", "createrepo-c", "createrepo_c"),
    need("rpmbuild", "rpm", "rpm-build"),
    need("gpg", "gnupg", "gnupg2"),
    need("ssh", "openssh-client", "openssh-clients"),
    need("socat", "socat", "socat"),
    need("dpkg-scanpackages", "dpkg-dev", "dpkg-dev"),
    need("apt-ftparchive", "apt-utils", "apt"),
    need("rpmsign", "rpm", "rpm-sign"),
    need("openssl", "openssl", "openssl"),
    need("pebble", "pebble", "pebble"),
    need("rsyslogd", "rsyslog", "rsyslog"),
    need("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so", "rsyslog-gnutls", "rsyslog-gnutls"),
    need(
        "/usr/lib/x86_64-linux-gnu/perl5/5.36/MaxMind/DB/Writer/Tree.pm",
        "libmaxmind-db-writer-perl",
        "perl-MaxMind-DB-Writer",
    ),
    // A wall clock the tests step a day back and forth for the processes under test.
    need("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "libfaketime", "libfaketime"),
    // A slow FUSE disk for the page-cache-miss test (mirror-server/tests/fixtures/slowfs.py).
    need("/usr/lib/python3/dist-packages/fusepy.py", "python3-fusepy", "python3-fusepy"),
    // The AlmaLinux image's NetworkManager keyfiles and chrony.conf, loaded by the real programs
    // (in a network namespace with a private D-Bus).
    need("NetworkManager", "network-manager", "NetworkManager"),
    need("nmcli", "network-manager", "NetworkManager"),
    need("dbus-daemon", "dbus", "dbus-daemon"),
    need("chronyd", "chrony", "chrony"),
    // Lists the modules inside each hardware class's UKI initramfs.
    need("lsinitramfs", "initramfs-tools-core", "initramfs-tools"),
];

fn present(n: &Need) -> bool {
    if n.probe.starts_with('/') {
        Path::new(n.probe).exists()
    } else {
        cmd::exists(n.probe)
    }
}

/// Installs the missing packages of `needs`, or fails naming the command that would.
pub fn ensure(needs: &[&[Need]]) -> Result<()> {
    let missing: Vec<&Need> = needs.iter().flat_map(|n| n.iter()).filter(|n| !present(n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = cmd::exists("apt-get");
    let mut packages: Vec<&str> = missing.iter().map(|n| if apt { n.debian } else { n.fedora }).collect();
    packages.sort();
    packages.dedup();
    let install = if apt {
        format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}", packages.join(" "))
    } else if cmd::exists("dnf") {
        format!("dnf install -y {}", packages.join(" "))
    } else {
        bail!(
            "missing host tools ({}); install these packages with your package manager: {}",
            probes(&missing),
            packages.join(" ")
        );
    };
    if !rustix::process::geteuid().is_root() {
        bail!("missing host tools ({}); install them as root with:\n  sudo sh -c '{install}'", probes(&missing));
    }
    eprintln!("installing host packages: {}", packages.join(" "));
    let sh = cmd::shell()?;
    cmd::run_visible(cmd!(sh, "sh -c {install}"))?;
    let still: Vec<&Need> = missing.into_iter().filter(|n| !present(n)).collect();
    if !still.is_empty() {
        bail!("installed packages but still missing: {}", probes(&still));
    }
    Ok(())
}

fn probes(needs: &[&Need]) -> String {
    needs.iter().map(|n| n.probe).collect::<Vec<_>>().join(", ")
}
