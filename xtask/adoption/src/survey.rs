//! What a running box says about itself: `SCRIPT`, run as root over SSH (`sudo -n sh -s`),
//! prints one section per fact, and `parse` reads them into a `Survey`. The script only reads:
//! it runs on AlmaLinux 8 (util-linux 2.32, no `lsblk -o PATH`) and 9 with their minimal
//! installs' tools (util-linux, iproute, coreutils, efibootmgr, openssh-server), and a tool
//! that is missing leaves its section empty rather than stopping the rest.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::AdoptError;

/// The survey, POSIX sh. Sections start with `=== NAME` on a line of their own.
pub const SCRIPT: &str = r#"set -u
# A tool's complaint lands in its own section, where the parser shows it.
exec 2>&1
section() { printf '\n=== %s\n' "$1"; }
root_source=$(findmnt -no SOURCE /)
disk=/dev/$(lsblk -no PKNAME "$root_source" | head -n1)
section disk; echo "$disk"
section sfdisk; sfdisk -J "$disk"
section lsblk; lsblk -J -b -p -o NAME,SIZE,FSTYPE,MOUNTPOINT,UUID "$disk"
section swaps; cat /proc/swaps
section uefi; if [ -d /sys/firmware/efi ]; then echo yes; else echo no; fi
section secureboot
for f in /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c; do
  if [ -e "$f" ]; then od -An -tu1 "$f"; else echo absent; fi
done
section bootentries; efibootmgr -v 2>&1 || true
section esp; if mountpoint -q /boot/efi; then df -B1 -P /boot/efi | tail -n1; fi
section memory; grep '^MemTotal:' /proc/meminfo
section data
if [ -d /data/mirror ]; then
  df -B1 -P /data/mirror | tail -n1
  stat -c '%U' /data/mirror
fi
section addresses; ip -j addr show
section routes4; ip -j -4 route show default
section routes6; ip -j -6 route show default
section resolv; cat /etc/resolv.conf 2>/dev/null
section nics
for d in /sys/class/net/*; do
  [ -e "$d/device" ] || continue
  path=$(udevadm info -q property -p "$d" 2>/dev/null | sed -n 's/^ID_PATH=//p')
  echo "${d##*/} $(cat "$d/address") $(basename "$(readlink -f "$d/device/driver")") ${path:--}"
done
section sshd; sshd -T 2>/dev/null | grep -i '^port '
section os; cat /etc/os-release
section authorized_keys
home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
cat "$home/.ssh/authorized_keys" 2>/dev/null
section end
"#;

/// A partition as sfdisk and lsblk see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub node: String,
    pub start_sector: u64,
    pub sectors: u64,
    /// The GPT type GUID, upper case.
    pub type_guid: String,
    pub label: String,
    pub fstype: Option<String>,
    pub mountpoint: Option<String>,
}

impl Partition {
    pub fn bytes(&self, sector_size: u64) -> u64 {
        self.sectors * sector_size
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: String,
    /// udev's ID_PATH, e.g. "pci-0000:00:02.0" (what a profile's `nic.pci_path` names).
    pub pci_path: String,
    /// "address/prefix" of each global address.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Survey {
    pub disk: String,
    pub partition_table: String,
    pub sector_size: u64,
    pub partitions: Vec<Partition>,
    /// Devices the kernel swaps to now.
    pub active_swap: Vec<String>,
    pub uefi: bool,
    /// None: the firmware does not say (no SecureBoot variable).
    pub secure_boot: Option<bool>,
    pub boot_entries: String,
    pub memory_bytes: u64,
    /// Free bytes on the ESP (mounted at /boot/efi); None when it is not mounted there.
    pub esp_free: Option<u64>,
    /// Bytes used on the file system holding /data/mirror, and its owner; None without one.
    pub data_used: Option<u64>,
    pub data_owner: Option<String>,
    pub nics: Vec<Nic>,
    /// Every global address on any interface (a bond's too): (interface, "address/prefix").
    pub addresses: Vec<(String, String)>,
    pub gateway4: Option<String>,
    pub gateway6: Option<String>,
    pub dns: Vec<String>,
    pub ssh_port: Option<u16>,
    pub os: String,
    pub authorized_keys: Vec<String>,
}

fn sections(text: &str) -> BTreeMap<&str, String> {
    let mut out: BTreeMap<&str, String> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            current = Some(name.trim());
            out.entry(name.trim()).or_default();
        } else if let Some(name) = current {
            let body = out.entry(name).or_default();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn json(section: &'static str, text: &str) -> Result<Value, AdoptError> {
    serde_json::from_str(text.trim())
        .map_err(|e| AdoptError::Unreadable { section, detail: format!("{e}: {}", first_line(text)) })
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or("(empty)")
}

/// lsblk 2.32 writes numbers as strings; later versions as numbers.
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

/// Reads what `SCRIPT` printed.
pub fn parse(output: &str) -> Result<Survey, AdoptError> {
    let s = sections(output);
    let get = |name: &'static str| s.get(name).map(String::as_str).ok_or(AdoptError::MissingSection(name));
    get("end")?;
    let mut survey = Survey { disk: get("disk")?.trim().to_string(), ..Survey::default() };
    read_partitions(&mut survey, get("sfdisk")?, get("lsblk")?)?;
    survey.active_swap =
        get("swaps")?.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    survey.uefi = get("uefi")?.trim() == "yes";
    // The variable's 4 attribute bytes, then its value: 1 is on.
    let secure: Vec<u64> = get("secureboot")?.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    survey.secure_boot = secure.last().map(|v| *v == 1);
    survey.boot_entries = get("bootentries")?.trim().to_string();
    survey.memory_bytes =
        get("memory")?.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).unwrap_or(0) * 1024;
    survey.esp_free = get("esp")?.split_whitespace().nth(3).and_then(|n| n.parse().ok());
    let mut data = get("data")?.lines().filter(|l| !l.trim().is_empty());
    survey.data_used = data.next().and_then(|df| df.split_whitespace().nth(2)?.parse().ok());
    survey.data_owner = data.next().map(|o| o.trim().to_string());
    survey.addresses = global_addresses(&json("addresses", get("addresses")?)?);
    survey.nics = read_nics(get("nics")?, &survey.addresses);
    survey.gateway4 = default_gateway("routes4", get("routes4")?)?;
    survey.gateway6 = default_gateway("routes6", get("routes6")?)?;
    survey.dns = get("resolv")?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|a| a.trim().to_string())
        .collect();
    survey.ssh_port = get("sshd")?.split_whitespace().nth(1).and_then(|p| p.parse().ok());
    survey.os = get("os")?
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    survey.authorized_keys = get("authorized_keys")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    Ok(survey)
}

fn read_partitions(survey: &mut Survey, sfdisk: &str, lsblk: &str) -> Result<(), AdoptError> {
    let table = json("sfdisk", sfdisk)?;
    let table = &table["partitiontable"];
    survey.partition_table = text(&table["label"]).unwrap_or_default();
    survey.sector_size = number(&table["sectorsize"]).unwrap_or(512);
    let blocks = json("lsblk", lsblk)?;
    let mut devices: Vec<&Value> = Vec::new();
    let mut stack: Vec<&Value> = blocks["blockdevices"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(d) = stack.pop() {
        devices.push(d);
        if let Some(children) = d["children"].as_array() {
            stack.extend(children.iter());
        }
    }
    let parts = table["partitions"]
        .as_array()
        .ok_or(AdoptError::Unreadable { section: "sfdisk", detail: "no partitions list".into() })?;
    for p in parts {
        let node = text(&p["node"]).unwrap_or_default();
        let block = devices.iter().find(|d| text(&d["name"]).as_deref() == Some(node.as_str()));
        survey.partitions.push(Partition {
            start_sector: number(&p["start"]).unwrap_or(0),
            sectors: number(&p["size"]).unwrap_or(0),
            type_guid: text(&p["type"]).unwrap_or_default().to_uppercase(),
            label: text(&p["name"]).unwrap_or_default(),
            fstype: block.and_then(|b| text(&b["fstype"])),
            mountpoint: block.and_then(|b| text(&b["mountpoint"])),
            node,
        });
    }
    Ok(())
}

fn global_addresses(links: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or_default();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"].as_str() != Some("global") {
                continue;
            }
            if let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                out.push((name.to_string(), format!("{local}/{prefix}")));
            }
        }
    }
    out
}

fn read_nics(nics: &str, addresses: &[(String, String)]) -> Vec<Nic> {
    nics.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, mac, driver, path) = (w.next()?, w.next()?, w.next()?, w.next().unwrap_or("-"));
            Some(Nic {
                name: name.into(),
                mac: mac.to_lowercase(),
                driver: driver.into(),
                pci_path: if path == "-" { String::new() } else { path.into() },
                addresses: addresses.iter().filter(|(n, _)| n == name).map(|(_, a)| a.clone()).collect(),
            })
        })
        .collect()
}

fn default_gateway(section: &'static str, routes: &str) -> Result<Option<String>, AdoptError> {
    if routes.trim().is_empty() {
        return Ok(None);
    }
    let routes = json(section, routes)?;
    Ok(routes.as_array().and_then(|r| r.iter().find_map(|route| text(&route["gateway"]))))
}

#[cfg(test)]
mod tests;
