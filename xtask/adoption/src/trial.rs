//! The scripts adopt runs as root on the old system for the trial boot, made from the plan
//! (pure: the caller sends them over SSH). Each step appends a line to `LOG` on the box and
//! prints it, so adopt's output and the box's log say the same. The scripts only use what a
//! minimal AlmaLinux 8 or 9 carries (sh, coreutils, sed, util-linux's swapoff and sfdisk,
//! efibootmgr). What each step's interruption leaves is in ARCHITECTURE.md ("Adoption").

use image::version::Version;
use schema::adoption::{Adoption, Phase};

use crate::plan::{Plan, Role};
use crate::survey::Partition;

/// The box's own log of its adoption.
pub const LOG: &str = "/var/log/micromirror-adopt.log";
/// Where the files for the ESP wait on the old root before they are copied in.
pub const STAGING: &str = "/var/tmp/micromirror-adopt";
/// The state folder on the data file system (the old root XFS), as the new system mounts it.
pub const STATE: &str = "/micromirror-state";
/// The GPT type of an x86-64 root partition (a root slot).
pub const ROOT_X64_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The label the new system finds its data file system by.
pub const DATA_LABEL: &str = "mm-adopted";
/// The firmware boot entry adopt adds (not in BootOrder until the commit).
pub const ENTRY_LABEL: &str = "Micro mirror";

/// What the trial needs beyond the plan.
pub struct Trial<'a> {
    pub plan: &'a Plan,
    /// `micromirror_<VERSION>`: slot A's partition label, which the UKI names as its root.
    pub slot_label: &'a str,
    /// The UKI's file name under \EFI\Linux (counted: it must prove itself).
    pub entry_name: &'a str,
    /// The adoption record (JSON) for the state folder.
    pub record_json: &'a str,
    /// The site's host name, whose certbot certificate the new system takes over.
    pub hostname: &'a str,
}

/// What the trial writes besides the plan's partitions, named once for adopt and the USB
/// installer.
pub struct Writes {
    pub slot_label: String,
    pub entry_name: String,
    pub record_json: String,
}

impl Writes {
    /// For `version`, begun at `started_at`; `self_commit`: the new system commits itself once
    /// healthy (the USB installer's, where nobody waits outside).
    pub fn new(plan: &Plan, version: &Version, started_at: i64, self_commit: bool) -> Option<Writes> {
        let record = Adoption {
            phase: Phase::Trial,
            version: version.to_string(),
            old_boot_partition: plan.partition(Role::SlotB).and_then(|p| partition_number(&p.node))?,
            started_at,
            committed_at: None,
            self_commit,
        };
        Some(Writes {
            slot_label: version.slot_label(),
            entry_name: version.entry_name(Some(1)),
            record_json: record.to_json(),
        })
    }

    pub fn trial<'a>(&'a self, plan: &'a Plan, hostname: &'a str) -> Trial<'a> {
        Trial {
            plan,
            slot_label: &self.slot_label,
            entry_name: &self.entry_name,
            record_json: &self.record_json,
            hostname,
        }
    }
}

const PRELUDE: &str = r#"set -eu
log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>LOGFILE; echo "[box] $*"; }
"#;

fn prelude() -> String {
    PRELUDE.replace("LOGFILE", LOG)
}

/// The partition number of `node` on `disk`: /dev/sda4 → 4, /dev/nvme0n1p2 → 2.
pub fn partition_number(node: &str) -> Option<u32> {
    let digits: String = node.chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

fn part(plan: &Plan, role: Role) -> &Partition {
    plan.partition(role).expect("a plan without refusals has every role")
}

/// Before slot A is written: swap off for good (the swap partition becomes slot A). The fstab
/// line goes first, so nothing turns the swap on again, and the kernel's list is checked after:
/// writing over a swap in use would corrupt the running system's memory.
pub fn prepare(t: &Trial) -> String {
    let swap = &part(t.plan, Role::SlotA).node;
    format!(
        "{prelude}mkdir -p {STAGING}\nlog \"adopt begins: slot A is {swap}, the new system {label}\"\n\
         if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab; then\n\
         \x20 sed -i.micromirror-adopt -E 's/^([^#].*[[:space:]]swap[[:space:]])/# micromirror-adopt: \\1/' /etc/fstab\n\
         \x20 systemctl daemon-reload 2>/dev/null || true\nfi\n\
         swapoff {swap} 2>/dev/null || true\n\
         for active in $(tail -n +2 /proc/swaps | cut -d' ' -f1); do\n\
         \x20 if [ \"$(readlink -f \"$active\")\" = \"$(readlink -f {swap})\" ]; then log \"{swap} is still a swap in use: stopped\"; exit 1; fi\n\
         done\n\
         log \"swap is off and its /etc/fstab line disabled (a copy: /etc/fstab.micromirror-adopt)\"\n",
        prelude = prelude(),
        label = t.slot_label,
    )
}

/// After slot A is written and checked: the partition table, the ESP, the state, the one-shot
/// boot entry. The reboot is the caller's.
pub fn install(t: &Trial) -> String {
    let plan = t.plan;
    let disk = &plan.disk;
    let (slot, data, esp) = (part(plan, Role::SlotA), part(plan, Role::Data), part(plan, Role::Esp));
    let n = |p: &Partition| partition_number(&p.node).unwrap_or(0);
    let quiet = "--no-reread --no-tell-kernel";
    format!(
        r#"{prelude}sfdisk {quiet} --part-type {disk} {slot_n} {ROOT_X64_TYPE}
sfdisk {quiet} --part-label {disk} {slot_n} {slot_label}
sfdisk {quiet} --part-label {disk} {data_n} {DATA_LABEL}
log "partition table: {slot_node} is root slot A ({slot_label}), {data_node} is labelled {DATA_LABEL}"
mkdir -p /boot/efi/EFI/systemd /boot/efi/EFI/Linux /boot/efi/loader
cp {STAGING}/systemd-bootx64.efi /boot/efi/EFI/systemd/systemd-bootx64.efi
cp {STAGING}/loader.conf /boot/efi/loader/loader.conf
cp {STAGING}/uki.efi /boot/efi/EFI/Linux/{entry}
sync
log "ESP: systemd-boot and EFI/Linux/{entry} beside the old loader"
mkdir -p {STATE}/ssh {STATE}/identity {STATE}/acme
chmod 0700 {STATE}/ssh {STATE}/identity
cp -p /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub {STATE}/ssh/
cp /etc/machine-id {STATE}/identity/machine-id
if [ -r /etc/letsencrypt/live/{host}/fullchain.pem ]; then
  cp -L /etc/letsencrypt/live/{host}/fullchain.pem /etc/letsencrypt/live/{host}/privkey.pem {STATE}/acme/
  log "state: the certificate for {host} carried"
fi
if [ -d /etc/letsencrypt/accounts ]; then
  mkdir -p {STATE}/acme/certbot
  cp -a /etc/letsencrypt/accounts {STATE}/acme/certbot/
  chmod -R go-rwx {STATE}/acme/certbot
  log "state: certbot's ACME account kept in {STATE}/acme/certbot (mirror-server signs with its own ES256 account)"
fi
cat >{STATE}/adoption.json <<'RECORD'
{record}
RECORD
log "state: SSH host keys, machine id and the adoption record in {STATE}"
for old in $(efibootmgr | sed -n 's/^Boot\([0-9A-Fa-f]\{{4\}}\)[* ] {ENTRY_LABEL}$/\1/p'); do
  efibootmgr -q -b "$old" -B
done
efibootmgr -q -C -d {disk} -p {esp_n} -L "{ENTRY_LABEL}" -l '\EFI\systemd\systemd-bootx64.efi'
entry=$(efibootmgr | sed -n 's/^Boot\([0-9A-Fa-f]\{{4\}}\)[* ] {ENTRY_LABEL}$/\1/p' | head -n1)
[ -n "$entry" ] || {{ log "no boot entry named {ENTRY_LABEL} after efibootmgr -C"; exit 1; }}
efibootmgr -q -n "$entry"
log "firmware: Boot$entry ({ENTRY_LABEL}) boots once (BootNext); BootOrder is unchanged"
"#,
        prelude = prelude(),
        slot_n = n(slot),
        data_n = n(data),
        esp_n = n(esp),
        slot_node = slot.node,
        data_node = data.node,
        slot_label = t.slot_label,
        entry = t.entry_name,
        host = t.hostname,
        record = t.record_json,
    )
}

/// The reboot into the trial, detached so the SSH session that starts it ends cleanly.
pub fn reboot() -> String {
    format!(
        "{}log \"rebooting into the new system once\"\nsetsid sh -c 'sleep 2; systemctl reboot' >/dev/null 2>&1 </dev/null &\n",
        prelude()
    )
}

/// On the old system after a failed trial: what the new system said, from its journal on the
/// data file system.
pub fn verdict_from_old_system() -> String {
    format!(
        "journalctl -D {STATE}/journal -o short-monotonic --no-pager 2>/dev/null | \
         grep -E 'MICROMIRROR-(HEALTH|ROLLBACK|VERITY)' | tail -n 5; \
         echo \"[box] the adoption log: {LOG}; the new system's journal: journalctl -D {STATE}/journal\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests_support::fleet_plan;

    fn fleet_trial(plan: &Plan) -> Trial<'_> {
        Trial {
            plan,
            slot_label: "micromirror_20261206.120000",
            entry_name: "micromirror_20261206.120000+1.efi",
            record_json: "{\"phase\": \"trial\"}",
            hostname: "m.example.net",
        }
    }

    /// `sh -n`: the shell reads the script without running it.
    fn parses(script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut sh = std::process::Command::new("sh")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        sh.stdin.take().ok_or("no stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
        let out = sh.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn every_script_of_the_trial_is_valid_sh() {
        let plan = fleet_plan();
        let t = fleet_trial(&plan);
        for (name, script) in [
            ("prepare", prepare(&t)),
            ("install", install(&t)),
            ("reboot", reboot()),
            ("verdict", verdict_from_old_system()),
        ] {
            parses(&script).unwrap_or_else(|e| panic!("{name}: {e}\n{script}"));
        }
        parses(crate::survey::SCRIPT).unwrap();
    }

    #[test]
    fn partitions_are_numbered_from_their_node() {
        assert_eq!(partition_number("/dev/sda4"), Some(4));
        assert_eq!(partition_number("/dev/nvme0n1p12"), Some(12));
        assert_eq!(partition_number("/dev/sda"), None);
    }

    #[test]
    fn the_install_script_retypes_slot_a_labels_the_data_and_sets_only_boot_next() {
        let plan = fleet_plan();
        let t = fleet_trial(&plan);
        let s = install(&t);
        assert!(s.contains(&format!("--part-type /dev/sda 4 {ROOT_X64_TYPE}")), "swap (sda4) becomes slot A:\n{s}");
        assert!(s.contains("--part-label /dev/sda 3 mm-adopted"), "{s}");
        assert!(s.contains("-d /dev/sda -p 1 -L \"Micro mirror\""), "{s}");
        assert!(s.contains("efibootmgr -q -n \"$entry\"") && !s.contains(" -o "), "BootNext only, never BootOrder");
        assert!(!s.contains("/dev/sda2"), "the old /boot is not touched before the commit");
        let p = prepare(&t);
        assert!(p.contains("swapoff /dev/sda4") && p.contains("/etc/fstab"), "{p}");
        assert!(p.find("/etc/fstab").unwrap() < p.find("swapoff").unwrap(), "fstab first, then swapoff:\n{p}");
        assert!(p.contains("still a swap in use: stopped"), "{p}");
    }
}
