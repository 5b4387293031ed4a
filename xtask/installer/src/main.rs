//! `micromirror-installer [FOLDER]`: run by the stick's system (micromirror-installer.service,
//! in installer mode) with FOLDER the payload folder on the stick's ESP. It finds the box's
//! disk and converts it, then powers off:
//! - keep the data (adopt's conversion, run locally): the old root is mounted and the very
//!   scripts adopt runs over SSH run in a chroot of it (its own sh, sfdisk and efibootmgr), after
//!   the same checks; slot A is copied from the stick and read back; the record asks the new
//!   system to commit itself once healthy, and the old system stays first in BootOrder until
//!   then, so a failing new system lands back in it;
//! - a clean flash (no old system with /data/mirror): after the word ERASE is typed on the
//!   console, the site's disk image is written over the disk, as `dd` of the image would.
//!
//! Every step is said on the console (`MICROMIRROR-INSTALLER …`); a failure stops with the
//! reason and leaves the machine on, its message on the screen.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use installer::disks::{self, Conversion};
use installer::payload::{self, Payload};
use sha2::{Digest, Sha256};

const DEFAULT_FOLDER: &str = "/run/micromirror-installer/stick/micromirror-installer";
/// Where the old root is mounted for the chroot.
const OLD_ROOT: &str = "/run/micromirror-installer/old";
const PROBE: &str = "/run/micromirror-installer/probe";

fn say(what: &str) {
    println!("MICROMIRROR-INSTALLER {what}");
    let _ = std::io::stdout().flush();
}

fn main() {
    let folder = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| DEFAULT_FOLDER.into()));
    match run(&folder) {
        Ok(()) => {
            say("done: remove the stick; the box powers off now");
            let _ = Command::new("systemctl").arg("poweroff").status();
        }
        Err(e) => {
            say(&format!("failed: {e:#}"));
            say("stopped; the machine stays on with this message. Photograph it for the operator.");
            std::process::exit(1);
        }
    }
}

fn run(folder: &Path) -> Result<()> {
    let manifest = folder.join(payload::MANIFEST);
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let p = Payload::from_json(&text).with_context(|| format!("reading {}", manifest.display()))?;
    say(&format!("site {} ({}), version {}", p.site, p.hostname, p.version));
    let stick_root = by_label(payload::ROOT_LABEL)?;
    let blocks = disks::parse_lsblk(&output(Command::new("lsblk").args(disks::LSBLK_ARGS))?)?;
    let stick = blocks
        .iter()
        .find(|b| b.name == stick_root.to_string_lossy())
        .and_then(|b| b.parent.clone())
        .with_context(|| format!("lsblk does not name the disk of {}", stick_root.display()))?;
    let others = disks::other_disks(&blocks, &stick);
    let mut old_roots = Vec::new();
    for candidate in disks::root_candidates(&blocks, &others) {
        if holds_old_system(&candidate.name)? {
            old_roots.push(candidate);
        }
    }
    match disks::decide(&others, &old_roots) {
        Conversion::Keep { disk, old_root } => {
            say(&format!("{old_root} on {disk} holds an old system with /data/mirror: converting, keeping the data"));
            match keep(folder, &p, &old_root)? {
                Kept::Converted => Ok(()),
                Kept::Refused(why) => clean_flash(folder, &p, &disk, &why),
            }
        }
        Conversion::CleanFlash { disk, why } => clean_flash(folder, &p, &disk, &why),
        Conversion::Stop(why) => bail!("{why}"),
    }
}

/// The device a GPT label names.
fn by_label(label: &str) -> Result<PathBuf> {
    let link = Path::new("/dev/disk/by-partlabel").join(label);
    std::fs::canonicalize(&link).with_context(|| format!("no partition labelled {label} ({})", link.display()))
}

fn output(c: &mut Command) -> Result<String> {
    let out = c.stderr(Stdio::piped()).output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mount(args: &[&str], source: &str, at: &str) -> Result<()> {
    std::fs::create_dir_all(at).with_context(|| format!("making {at}"))?;
    output(Command::new("mount").args(args).arg(source).arg(at)).map(|_| ())
}

fn umount(at: &str) -> Result<()> {
    output(Command::new("umount").arg(at)).map(|_| ())
}

/// Whether `partition` holds a system's root with /data/mirror (looked at read-only, without
/// replaying a journal).
fn holds_old_system(partition: &str) -> Result<bool> {
    let options = ["-o", "ro,norecovery"];
    if mount(&options, partition, PROBE).is_err() && mount(&["-o", "ro"], partition, PROBE).is_err() {
        return Ok(false);
    }
    let found = Path::new(PROBE).join("etc/fstab").is_file() && Path::new(PROBE).join("data/mirror").is_dir();
    umount(PROBE)?;
    Ok(found)
}

/// Runs `script` as root inside the old system (its own sh and tools), showing its steps.
fn in_old_system(what: &str, script: &str) -> Result<String> {
    let mut child = Command::new("chroot")
        .args([OLD_ROOT, "/bin/sh", "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: chroot {OLD_ROOT}"))?;
    child.stdin.take().context("the chroot's stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    // The scripts' steps; the survey's report is for the plan, not the screen.
    for line in said.lines().filter(|l| l.starts_with("[box]")) {
        println!("{line}");
    }
    if !out.status.success() {
        bail!("{what} failed in the old system: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(said)
}

/// The old system mounted as it mounts itself (/, /boot, /boot/efi from its fstab), with the
/// installer's /dev, /proc, /sys and udev's database, for the chroot.
struct OldSystem {
    mounted: Vec<String>,
}

impl OldSystem {
    fn mount(old_root: &str) -> Result<OldSystem> {
        let mut s = OldSystem { mounted: Vec::new() };
        mount(&[], old_root, OLD_ROOT)?;
        s.mounted.push(OLD_ROOT.into());
        let fstab = std::fs::read_to_string(Path::new(OLD_ROOT).join("etc/fstab")).context("the old /etc/fstab")?;
        for point in ["/boot", "/boot/efi"] {
            let (source, fstype) = disks::fstab_source(&fstab, point)
                .with_context(|| format!("the old /etc/fstab mounts nothing at {point}"))?;
            let at = format!("{OLD_ROOT}{point}");
            mount(&["-t", &fstype], &source, &at).with_context(|| format!("mounting the old {point}"))?;
            s.mounted.push(at);
        }
        for (from, at) in [("/dev", "dev"), ("/proc", "proc"), ("/sys", "sys"), ("/run/udev", "run/udev")] {
            let at = format!("{OLD_ROOT}/{at}");
            mount(&["--rbind"], from, &at)?;
            output(Command::new("mount").args(["--make-rslave", &at]))?;
            s.mounted.push(at);
        }
        Ok(s)
    }

    fn unmount(mut self) -> Result<()> {
        while let Some(at) = self.mounted.pop() {
            output(Command::new("umount").args(["-R", &at])).with_context(|| format!("unmounting {at}"))?;
        }
        Ok(())
    }
}

/// How the keeping conversion ended (an error is neither).
enum Kept {
    Converted,
    /// The checks refused before anything was written: why.
    Refused(String),
}

fn keep(folder: &Path, p: &Payload, old_root: &str) -> Result<Kept> {
    let old = OldSystem::mount(old_root)?;
    let result = convert(folder, p);
    let unmounted = old.unmount();
    let kept = result?;
    unmounted?;
    output(&mut Command::new("sync"))?;
    say("the old system's file systems are unmounted and synced");
    Ok(kept)
}

fn convert(folder: &Path, p: &Payload) -> Result<Kept> {
    use adoption::plan::{self, Role};
    use adoption::trial;
    let report = in_old_system("the survey", adoption::survey::SCRIPT)?;
    let survey = adoption::survey::parse(&report).context("the survey of the old system")?;
    let profile: schema::profile::Profile =
        toml_edit::de::from_str(&p.profile).context("the site's profile on the stick")?;
    let the_plan = plan::plan(&plan::Inputs {
        survey: &survey,
        profile: &profile,
        profile_path: "the site's profile",
        root_image_bytes: Some(p.root_image.bytes),
        esp_needs: Some(p.esp_needs),
        login_key: None,
        offline: true,
    });
    println!("{}", plan::render(&the_plan));
    let refusals = the_plan.refusals();
    if !refusals.is_empty() {
        return Ok(Kept::Refused(format!(
            "the checks above refuse keeping its data ({}); nothing was written. To keep the data, fix the profile \
             (or the box) and make a new stick",
            refusals.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        )));
    }
    let version = image::version::Version::parse(&p.version).context("the payload's version")?;
    let writes = trial::Writes::new(&the_plan, &version, jiff::Timestamp::now().as_second(), true)
        .context("the old /boot's partition number")?;
    let t = writes.trial(&the_plan, &p.hostname);
    in_old_system("preparing", &trial::prepare(&t))?;
    let slot = &the_plan.partition(Role::SlotA).context("slot A")?.node;
    say(&format!("writing the root image ({} bytes) into {slot}", p.root_image.bytes));
    copy_verified(&by_label(payload::ROOT_LABEL)?, Path::new(slot), 0, &p.root_image)?;
    say(&format!("slot A reads back as written (sha256 {})", &p.root_image.sha256[..16]));
    let staging = Path::new(OLD_ROOT).join(trial::STAGING.trim_start_matches('/'));
    for (from, to) in
        [(payload::UKI, "uki.efi"), (payload::LOADER, "systemd-bootx64.efi"), (payload::LOADER_CONF, "loader.conf")]
    {
        std::fs::copy(folder.join(from), staging.join(to)).with_context(|| format!("staging {from}"))?;
    }
    in_old_system("installing", &trial::install(&t))?;
    verify_esp(folder, &writes.entry_name)?;
    say("the ESP holds systemd-boot and the UKI as the stick has them; the new system boots next, once");
    Ok(Kept::Converted)
}

/// Reads back what `install` copied into the old ESP.
fn verify_esp(folder: &Path, entry_name: &str) -> Result<()> {
    let esp = Path::new(OLD_ROOT).join("boot/efi");
    for (from, to) in [
        (payload::UKI, format!("EFI/Linux/{entry_name}")),
        (payload::LOADER, "EFI/systemd/systemd-bootx64.efi".into()),
        (payload::LOADER_CONF, "loader/loader.conf".into()),
    ] {
        let (a, b) = (folder.join(from), esp.join(&to));
        if std::fs::read(&a)? != std::fs::read(&b).with_context(|| format!("reading {}", b.display()))? {
            bail!("{} does not read back as {}", b.display(), a.display());
        }
    }
    Ok(())
}

/// Copies `blob.bytes` from the start of `from` to `to` at `offset`, flushes, and reads them
/// back: the sha256 must be the payload's.
fn copy_verified(from: &Path, to: &Path, offset: u64, blob: &payload::Blob) -> Result<()> {
    let mut src = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut dst =
        std::fs::OpenOptions::new().write(true).open(to).with_context(|| format!("opening {}", to.display()))?;
    dst.seek(SeekFrom::Start(offset))?;
    let copied = std::io::copy(&mut (&mut src).take(blob.bytes), &mut dst)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    if copied != blob.bytes {
        bail!("{} ended after {copied} of {} bytes", from.display(), blob.bytes);
    }
    dst.sync_all()?;
    drop(dst);
    // Read back through a fresh descriptor; the page cache was written back by sync_all.
    let mut back = std::fs::File::open(to)?;
    back.seek(SeekFrom::Start(offset))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut back.take(blob.bytes), &mut hash)?;
    let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != blob.sha256 {
        bail!("{} does not read back as written (sha256 {got}, wanted {})", to.display(), blob.sha256);
    }
    Ok(())
}

/// The image over the whole disk, as `dd` of it would write it: the head (GPT, ESP, slot A) and
/// the backup GPT, then a boot entry for it. Only after the word ERASE on the console.
fn clean_flash(folder: &Path, p: &Payload, disk: &str, why: &str) -> Result<()> {
    let size = output(Command::new("blockdev").args(["--getsize64", disk]))?.trim().parse::<u64>().unwrap_or(0);
    if size < p.image_size {
        bail!("{disk} ({size} bytes) is smaller than the image ({} bytes)", p.image_size);
    }
    say(&format!("{disk} cannot be kept: {why}"));
    print!("{}", output(Command::new("lsblk").args(["-o", "NAME,SIZE,FSTYPE,LABEL,PARTLABEL", disk]))?);
    say(&format!("a clean flash ERASES everything on {disk}. Type ERASE and Enter to go on; anything else stops."));
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "ERASE" {
        bail!("not confirmed: nothing was written to {disk}");
    }
    say(&format!("writing the image's head ({} bytes) onto {disk}", p.disk_head.bytes));
    copy_verified(&by_label(payload::DISK_LABEL)?, Path::new(disk), 0, &p.disk_head)?;
    copy_verified(&folder.join(payload::BACKUP_GPT), Path::new(disk), p.backup_gpt_offset, &p.backup_gpt)?;
    // The table now says what the image's does; the kernel reads it again for efibootmgr.
    let _ = Command::new("blockdev").args(["--rereadpt", disk]).status();
    // -c: the entry goes first in BootOrder (the firmware may list the new disk after its shell).
    output(
        Command::new("efibootmgr")
            .args(["-q", "-c", "-d", disk, "-p", "1", "-L", adoption::trial::ENTRY_LABEL])
            .args(["-l", "\\EFI\\BOOT\\BOOTX64.EFI"]),
    )?;
    say(&format!(
        "{disk} holds the image and boots it first; its state and data partitions are made at its first boot"
    ));
    Ok(())
}
