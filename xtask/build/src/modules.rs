//! Stage 3b: the kernel modules a headless, wired micro mirror never loads (audio, graphics,
//! radio, cameras, lab hardware: the folders in packages/modules-left-out.txt, and the modules
//! that could not load without them) are taken out of the tree, and the module index is rebuilt
//! with the base's own depmod. A module the boot, a
//! hardware class or the network setup needs is never taken: the build stops and names it.
//! Runs before the initramfs is made, so the initramfs and the root agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use schema::profile::LoadedProfile;

use crate::{boot, progress, tree};

/// Modules the running system loads by itself (congestion control, queueing, the firewall,
/// bonds and VLANs), besides the boot's and the hardware classes' drivers.
const RUNTIME: &[&str] = &["tcp_bbr", "sch_fq_codel", "nf_tables", "bonding", "8021q"];

/// The folders left out, relative to /usr/lib/modules/VERSION/kernel/.
pub fn left_out() -> Vec<&'static str> {
    include_str!("../packages/modules-left-out.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Modules that must stay: the boot's, every hardware class's, the watchdogs, `RUNTIME`.
fn needed(site: &LoadedProfile) -> BTreeSet<String> {
    let mut v: BTreeSet<String> = boot::initrd_drivers(site).into_iter().map(|m| normalise(&m)).collect();
    v.extend(schema::hardware::all_drivers().iter().map(|m| normalise(m)));
    v.extend(boot::WATCHDOGS.iter().chain(RUNTIME).map(|m| normalise(m)));
    v
}

/// A module's name as modprobe compares it: `-` and `_` are the same.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The module a file holds: `e1000e.ko`, `e1000e.ko.xz` → "e1000e".
fn module_of(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let (stem, _) = name.split_once(".ko")?;
    Some(normalise(stem))
}

/// The needed modules among `files`, by name.
fn needed_among<'a>(files: impl Iterator<Item = &'a PathBuf>, needed: &BTreeSet<String>) -> Vec<(String, PathBuf)> {
    files.filter_map(|f| module_of(f).filter(|m| needed.contains(m)).map(|m| (m, f.clone()))).collect()
}

pub fn trim(site: &LoadedProfile, root: &Path) -> Result<()> {
    let stage = progress::stage("modules", "leaving out the modules a micro mirror never loads");
    let kver = boot::kernel_version(root)?;
    let kernel = root.join("usr/lib/modules").join(&kver).join("kernel");
    let needed = needed(site);
    let folders: Vec<PathBuf> = left_out().iter().map(|f| kernel.join(f)).filter(|f| f.is_dir()).collect();
    let mut taken = Vec::new();
    for folder in &folders {
        taken.extend(tree::walk(folder)?.into_iter().filter(|f| module_of(f).is_some()));
    }
    let modules_dir = kernel.parent().unwrap_or(&kernel).to_path_buf();
    let dep = fs_err::read_to_string(modules_dir.join("modules.dep")).unwrap_or_default();
    let gone: BTreeSet<String> = taken
        .iter()
        .filter_map(|f| f.strip_prefix(&modules_dir).ok().map(|p| p.to_string_lossy().into_owned()))
        .collect();
    let stranded: Vec<PathBuf> = stranded(&dep, &gone).into_iter().map(|m| modules_dir.join(m)).collect();
    taken.extend(stranded.iter().cloned());
    let clash = needed_among(taken.iter(), &needed);
    if let Some((module, file)) = clash.first() {
        bail!(
            "xtask/build/packages/modules-left-out.txt leaves out {}, which holds {module}, a module the boot, a \
             hardware class or the network setup needs: take its folder off that list",
            file.strip_prefix(root).unwrap_or(file).display()
        );
    }
    let bytes: u64 = taken.iter().filter_map(|f| fs_err::metadata(f).ok()).map(|m| m.len()).sum();
    for folder in &folders {
        tree::remove_dir_all_if_exists(folder)?;
    }
    for file in &stranded {
        fs_err::remove_file(file)?;
    }
    boot::in_chroot(root, &["depmod".into(), "-a".into(), kver.clone()], &[])?;
    stage.done(&format!("{} modules left out ({}), index rebuilt", taken.len(), progress::human_bytes(bytes)));
    Ok(())
}

/// The modules outside `gone` that need one inside it (modules.dep lists each module's whole
/// chain of dependencies, paths relative to the version's folder): they could never load.
fn stranded(modules_dep: &str, gone: &BTreeSet<String>) -> Vec<String> {
    modules_dep
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(module, deps)| !gone.contains(*module) && deps.split_whitespace().any(|d| gone.contains(d)))
        .map(|(module, _)| module.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_that_needs_a_left_out_one_is_left_out_with_it() {
        let dep = "kernel/drivers/platform/x86/thinkpad_acpi.ko: kernel/sound/core/snd.ko kernel/drivers/gpu/x.ko\n\
                   kernel/sound/core/snd.ko: kernel/sound/soundcore.ko\n\
                   kernel/drivers/net/ethernet/sfc/sfc.ko: kernel/drivers/mtd/mtd.ko\n\
                   kernel/net/ipv4/tcp_bbr.ko:\n";
        let gone: BTreeSet<String> =
            ["kernel/sound/core/snd.ko", "kernel/sound/soundcore.ko", "kernel/drivers/gpu/x.ko"]
                .map(String::from)
                .into();
        assert_eq!(stranded(dep, &gone), ["kernel/drivers/platform/x86/thinkpad_acpi.ko"]);
    }

    #[test]
    fn module_names_come_from_plain_and_compressed_files() {
        assert_eq!(module_of(Path::new("a/e1000e.ko")).as_deref(), Some("e1000e"));
        assert_eq!(module_of(Path::new("a/sp5100-tco.ko.xz")).as_deref(), Some("sp5100_tco"));
        assert_eq!(module_of(Path::new("a/modules.dep")), None);
    }

    #[test]
    fn no_folder_left_out_is_one_the_hardware_classes_drivers_live_in() {
        let list = left_out();
        assert!(list.contains(&"sound") && list.contains(&"drivers/gpu"), "{list:?}");
        for keep in ["drivers/net/ethernet", "drivers/ata", "drivers/nvme", "drivers/watchdog", "net/netfilter", "fs"] {
            assert!(!list.iter().any(|f| keep.starts_with(f) || f.starts_with(keep)), "{keep} is left out");
        }
        let files = [PathBuf::from("k/drivers/net/ethernet/intel/e1000e/e1000e.ko"), PathBuf::from("k/sound/x.ko")];
        let needed: BTreeSet<String> = ["e1000e".to_string()].into();
        assert_eq!(needed_among(files.iter(), &needed), vec![("e1000e".to_string(), files[0].clone())]);
    }
}
