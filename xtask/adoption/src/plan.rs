//! The preflight: what each partition of a surveyed box becomes, and whether the site's profile
//! matches the live box closely enough that the new system will be reached again. A refusal
//! names what differs and the fix; a note is shown and does not stop the adoption. Nothing
//! here touches the box.

use schema::human::human_bytes;
use schema::profile::Profile;

use crate::survey::{Partition, Survey};

pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const SWAP_TYPE: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

/// What adopt needs beyond the survey.
pub struct Inputs<'a> {
    pub survey: &'a Survey,
    pub profile: &'a Profile,
    /// The profile's file, named in the fixes.
    pub profile_path: &'a str,
    /// Bytes of the root image (file system and hash tree) a slot must hold; None before the
    /// site's image is built (a profile with placeholders cannot be), which leaves a note.
    pub root_image_bytes: Option<u64>,
    /// Free bytes the ESP must have for systemd-boot and the UKI (None: not built yet).
    pub esp_needs: Option<u64>,
    /// The public key adopt logs in with (`ssh-ed25519 AAAA…`), when known.
    pub login_key: Option<&'a str>,
    /// Surveyed by the USB installer, the old system not running: its addresses and sshd are not
    /// live, so only the NIC is compared (the new system's network is the profile's).
    pub offline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Agrees,
    /// Shown, not stopping.
    Note(String),
    /// Stops the adoption: what to do about it.
    Refuses(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub live: String,
    pub profile: String,
    pub verdict: Verdict,
}

/// What a partition becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Kept; systemd-boot and the UKI go in beside the old loader.
    Esp,
    /// Root slot A: the new system's first root.
    SlotA,
    /// Root slot B once the new system is committed (`_empty` until the first update).
    SlotB,
    /// The mirror data partition: /data/mirror served as /srv/mirror, state in a folder.
    Data,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Role::Esp => "kept: systemd-boot and the UKI beside the old loader",
            Role::SlotA => "root slot A (the new system)",
            Role::SlotB => "root slot B, once committed",
            Role::Data => "data: /data/mirror served as /srv/mirror, state beside it",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub partition: Partition,
    pub today: String,
    pub role: Option<Role>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub disk: String,
    pub sector_size: u64,
    pub partitions: Vec<Mapped>,
    pub checks: Vec<Check>,
}

impl Plan {
    pub fn refusals(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| matches!(c.verdict, Verdict::Refuses(_))).collect()
    }

    /// The partition that takes `role`.
    pub fn partition(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|m| m.role == Some(role)).map(|m| &m.partition)
    }
}

fn today(p: &Partition) -> String {
    match (p.mountpoint.as_deref(), p.fstype.as_deref()) {
        (Some("[SWAP]"), _) | (_, Some("swap")) => "swap".into(),
        (Some(m), Some(fs)) => format!("{fs} at {m}"),
        (None, Some(fs)) => format!("{fs}, not mounted"),
        (Some(m), None) => m.to_string(),
        (None, None) => "unknown".into(),
    }
}

fn role_of(p: &Partition) -> Option<Role> {
    let is_xfs = p.fstype.as_deref() == Some("xfs");
    match p.mountpoint.as_deref() {
        _ if p.type_guid == ESP_TYPE => Some(Role::Esp),
        // Slot A of an earlier adoption whose trial failed: the swap it was, written again.
        _ if p.type_guid == crate::trial::ROOT_X64_TYPE && p.label.starts_with("micromirror_") => Some(Role::SlotA),
        _ if p.type_guid == SWAP_TYPE || p.fstype.as_deref() == Some("swap") => Some(Role::SlotA),
        Some("/boot") if is_xfs => Some(Role::SlotB),
        Some("/") if is_xfs => Some(Role::Data),
        _ => None,
    }
}

pub fn plan(i: &Inputs) -> Plan {
    let s = i.survey;
    let partitions: Vec<Mapped> =
        s.partitions.iter().map(|p| Mapped { partition: p.clone(), today: today(p), role: role_of(p) }).collect();
    let mut plan = Plan { disk: s.disk.clone(), sector_size: s.sector_size, partitions, checks: Vec::new() };
    let mut checks = firmware_checks(s);
    checks.extend(layout_checks(&plan, i));
    if i.offline {
        checks.push(check(
            "network",
            "not running",
            "the profile's",
            Verdict::Note("the old system is not running: its addresses and sshd are not compared".into()),
        ));
        checks.push(nic_check(i));
    } else {
        checks.extend(network_checks(i));
        checks.extend(access_checks(i));
    }
    plan.checks = checks;
    plan
}

fn check(name: &'static str, live: impl Into<String>, profile: impl Into<String>, verdict: Verdict) -> Check {
    Check { name, live: live.into(), profile: profile.into(), verdict }
}

fn firmware_checks(s: &Survey) -> Vec<Check> {
    let uefi = if s.uefi {
        Verdict::Agrees
    } else {
        Verdict::Refuses("the box boots by BIOS: only UEFI boxes can boot the image; use the USB installer".into())
    };
    let secure = match s.secure_boot {
        Some(false) => Verdict::Agrees,
        Some(true) => Verdict::Refuses(
            "Secure Boot is on and would refuse systemd-boot (not signed by Microsoft): turn it off in the \
             firmware setup (remote hands), then adopt, or use the USB installer"
                .into(),
        ),
        None => Verdict::Note("the firmware has no SecureBoot variable: taken as off".into()),
    };
    let sb_live = match s.secure_boot {
        Some(true) => "on",
        Some(false) => "off",
        None => "not reported",
    };
    vec![
        check("firmware", if s.uefi { "UEFI" } else { "BIOS" }, "UEFI", uefi),
        check("secure boot", sb_live, "off", secure),
        check("memory", human_bytes(s.memory_bytes), "", Verdict::Agrees),
        check("system", s.os.clone(), "", Verdict::Agrees),
    ]
}

fn layout_checks(plan: &Plan, i: &Inputs) -> Vec<Check> {
    let s = i.survey;
    let mut out = Vec::new();
    if s.partition_table != "gpt" {
        out.push(check(
            "partition table",
            s.partition_table.clone(),
            "gpt",
            Verdict::Refuses("only GPT disks are adopted; use the USB installer (a clean flash)".into()),
        ));
        return out;
    }
    for m in plan.partitions.iter().filter(|m| m.role.is_none()) {
        out.push(check(
            "partition",
            format!("{} ({}, {})", m.partition.node, m.today, human_bytes(m.partition.bytes(s.sector_size))),
            "ESP, /boot, swap, /",
            Verdict::Refuses(
                "a partition outside the kickstart layout: adopt does not guess what it holds; use the USB \
                 installer"
                    .into(),
            ),
        ));
    }
    let needed = [
        (Role::Esp, "an ESP"),
        (Role::SlotA, "a swap partition"),
        (Role::SlotB, "an XFS /boot"),
        (Role::Data, "an XFS / (the mirror data)"),
    ];
    for (role, what) in needed {
        let count = plan.partitions.iter().filter(|m| m.role == Some(role)).count();
        if count != 1 {
            out.push(check(
                "layout",
                format!("{count} × {what}"),
                format!("one {what}"),
                Verdict::Refuses("not the kickstart layout (ESP, /boot, swap, XFS /): use the USB installer".into()),
            ));
        }
    }
    let unbuilt = || Verdict::Note("not checked: build the site's image first (cargo xtask image)".into());
    for (role, name) in [(Role::SlotA, "slot A"), (Role::SlotB, "slot B")] {
        if let Some(p) = plan.partition(role) {
            let size = p.bytes(s.sector_size);
            let verdict = match i.root_image_bytes {
                None => unbuilt(),
                Some(root) if size >= root => Verdict::Agrees,
                Some(root) => Verdict::Refuses(format!(
                    "{} ({}) cannot hold the root image ({}): make the image smaller (base.packages, \
                     packages/modules-left-out.txt) or use the USB installer",
                    p.node,
                    human_bytes(size),
                    human_bytes(root)
                )),
            };
            let wanted = i.root_image_bytes.map(human_bytes).unwrap_or_else(|| "the root image".into());
            out.push(check(name, format!("{} {}", p.node, human_bytes(size)), wanted, verdict));
        }
    }
    if let Some(p) = plan.partition(Role::Esp) {
        let verdict = match (s.esp_free, i.esp_needs) {
            (None, _) => Verdict::Refuses("the ESP is not mounted at /boot/efi: mount it and run adopt again".into()),
            (Some(_), None) => unbuilt(),
            (Some(free), Some(needs)) if free >= needs => Verdict::Agrees,
            (Some(_), Some(needs)) => Verdict::Refuses(format!(
                "the ESP lacks room for systemd-boot and the UKI: free {} on it (old kernels' files in \
                 /boot/efi)",
                human_bytes(needs)
            )),
        };
        out.push(check(
            "esp",
            format!("{} {} free", p.node, s.esp_free.map(human_bytes).unwrap_or_else(|| "?".into())),
            i.esp_needs.map(|n| format!("{} free", human_bytes(n))).unwrap_or_else(|| "room for the UKI".into()),
            verdict,
        ));
    }
    let data = match (s.data_used, s.data_owner.as_deref()) {
        (Some(used), owner) => check(
            "mirror data",
            format!("/data/mirror, owner {} ({} used on its file system)", owner.unwrap_or("?"), human_bytes(used)),
            "kept in place",
            Verdict::Agrees,
        ),
        (None, _) => check(
            "mirror data",
            "no /data/mirror",
            "/data/mirror",
            Verdict::Refuses("the box has no /data/mirror: not a fleet box as the playbook makes them".into()),
        ),
    };
    out.push(data);
    out
}

fn same_address(a: &str, b: &str) -> bool {
    a.parse::<ipnet::IpNet>().ok().zip(b.parse::<ipnet::IpNet>().ok()).is_some_and(|(x, y)| x == y)
}

fn same_ip(a: &str, b: &str) -> bool {
    a.parse::<std::net::IpAddr>().ok().zip(b.parse::<std::net::IpAddr>().ok()).is_some_and(|(x, y)| x == y)
}

fn fix(i: &Inputs, key: &str, live: &str) -> String {
    format!("set {key} = {live:?} in {} (or run adopt with --fill-profile)", i.profile_path)
}

fn network_checks(i: &Inputs) -> Vec<Check> {
    let (s, net) = (i.survey, &i.profile.network);
    let mut out = Vec::new();
    let live_all: Vec<(String, String)> =
        s.addresses.iter().map(|(nic, a)| (nic.clone(), a.clone())).collect::<Vec<_>>();
    let live_text = |v6: bool| {
        let found: Vec<String> =
            live_all.iter().filter(|(_, a)| a.contains(':') == v6).map(|(n, a)| format!("{a} on {n}")).collect();
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    };
    if net.dhcp {
        out.push(check("addresses", live_text(false), "DHCP (a lab site)", Verdict::Agrees));
    } else {
        for (key, wanted, v6) in [("network.ipv4", &net.ipv4, false), ("network.ipv6", &net.ipv6, true)] {
            let first_live = live_all.iter().find(|(_, a)| a.contains(':') == v6).map(|(_, a)| a.clone());
            let verdict = match wanted {
                Some(w) if live_all.iter().any(|(_, a)| same_address(a, w)) => Verdict::Agrees,
                Some(w) => Verdict::Refuses(format!(
                    "the new system would come up on {w}, which the box does not have, and could not be reached \
                     again: {}",
                    fix(i, key, first_live.as_deref().unwrap_or("the box's address"))
                )),
                None if first_live.is_some() => Verdict::Refuses(format!(
                    "the box has {} but the profile gives none: {}",
                    first_live.as_deref().unwrap_or(""),
                    fix(i, key, first_live.as_deref().unwrap_or(""))
                )),
                None => Verdict::Agrees,
            };
            out.push(check(
                if v6 { "ipv6" } else { "ipv4" },
                live_text(v6),
                wanted.clone().unwrap_or_default(),
                verdict,
            ));
        }
        for (name, key, wanted, live) in [
            ("gateway4", "network.ipv4_gateway", &net.ipv4_gateway, &s.gateway4),
            ("gateway6", "network.ipv6_gateway", &net.ipv6_gateway, &s.gateway6),
        ] {
            let verdict = match (wanted, live) {
                (Some(w), Some(l)) if same_ip(w, l) => Verdict::Agrees,
                (None, None) => Verdict::Agrees,
                (_, Some(l)) => Verdict::Refuses(format!(
                    "the new system would route through another gateway and be unreachable from outside its \
                     subnet: {}",
                    fix(i, key, l)
                )),
                (Some(_), None) => Verdict::Note("the box has no default route of this family today".into()),
            };
            out.push(check(
                name,
                live.clone().unwrap_or_else(|| "none".into()),
                wanted.clone().unwrap_or_default(),
                verdict,
            ));
        }
        let dns_same = net.dns.len() == s.dns.len() && net.dns.iter().zip(&s.dns).all(|(a, b)| same_ip(a, b));
        let verdict = if dns_same {
            Verdict::Agrees
        } else {
            Verdict::Note("the resolvers differ (the box stays reachable; name lookups use the profile's)".into())
        };
        out.push(check("dns", s.dns.join(" "), net.dns.join(" "), verdict));
    }
    out.push(nic_check(i));
    out
}

/// The NIC that carries the box's addresses must be the one the profile names `wan0`.
fn nic_check(i: &Inputs) -> Check {
    let (s, net) = (i.survey, &i.profile.network);
    let carrying: Option<&crate::survey::Nic> = s.nics.iter().find(|n| !n.addresses.is_empty()).or(s.nics.first());
    let live = carrying
        .map(|n| format!("{} {} {} {}", n.name, n.mac, n.driver, n.pci_path))
        .unwrap_or_else(|| "no NIC".into());
    if let Some(bond) = &net.bond {
        let members: Vec<&crate::survey::Nic> = s
            .nics
            .iter()
            .filter(|n| {
                bond.members.iter().any(|m| m.eq_ignore_ascii_case(&n.mac)) || bond.driver.as_deref() == Some(&n.driver)
            })
            .collect();
        let verdict = if members.len() >= 2 {
            Verdict::Agrees
        } else {
            Verdict::Refuses(format!(
                "the profile's bond matches {} of the box's NICs ({}): name the two members by MAC in \
                 network.bond.members in {}",
                members.len(),
                s.nics.iter().map(|n| format!("{} {}", n.name, n.mac)).collect::<Vec<_>>().join(", "),
                i.profile_path
            ))
        };
        return check("nic", live, "bond", verdict);
    }
    let m = &net.nic;
    let wanted = [
        m.mac.as_ref().map(|v| format!("mac {v}")),
        m.driver.as_ref().map(|v| format!("driver {v}")),
        m.pci_path.as_ref().map(|v| format!("pci_path {v}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let Some(nic) = carrying else {
        return check("nic", live, wanted, Verdict::Refuses("the box reports no NIC".into()));
    };
    let matches = |n: &crate::survey::Nic| {
        m.mac.as_ref().is_none_or(|v| v.eq_ignore_ascii_case(&n.mac))
            && m.driver.as_ref().is_none_or(|v| *v == n.driver)
            && m.pci_path.as_ref().is_none_or(|v| *v == n.pci_path)
    };
    let matched: Vec<&crate::survey::Nic> = s.nics.iter().filter(|n| matches(n)).collect();
    let verdict = if matched.len() == 1 && matched[0].name == nic.name {
        Verdict::Agrees
    } else if !matches(nic) {
        Verdict::Refuses(format!(
            "the profile's NIC is not {}, which carries the box's addresses: the new system would name \
             another NIC wan0; set network.nic = {{ mac = {:?} }} in {} (or --fill-profile)",
            nic.name, nic.mac, i.profile_path
        ))
    } else {
        Verdict::Refuses(format!(
            "the profile's NIC matches {} NICs; name {} by its MAC: network.nic = {{ mac = {:?} }} in {}",
            matched.len(),
            nic.name,
            nic.mac,
            i.profile_path
        ))
    };
    check("nic", live, if wanted.is_empty() { "the first wired NIC".into() } else { wanted }, verdict)
}

/// "ssh-ed25519 AAAA… comment" → "ssh-ed25519 AAAA…".
pub fn key_material(line: &str) -> Option<String> {
    let mut w = line.split_whitespace();
    let (kind, blob) = (w.next()?, w.next()?);
    Some(format!("{kind} {blob}"))
}

fn access_checks(i: &Inputs) -> Vec<Check> {
    let (s, access) = (i.survey, &i.profile.access);
    let port = match s.ssh_port {
        Some(p) if p == access.ssh_port => Verdict::Agrees,
        Some(p) => Verdict::Refuses(format!(
            "the new system's sshd would listen on {} and adopt could not reach it: set access.ssh_port = {p} in {}",
            access.ssh_port, i.profile_path
        )),
        None => Verdict::Note("sshd did not say its port (sshd -T)".into()),
    };
    let mut out = vec![check(
        "ssh port",
        s.ssh_port.map(|p| p.to_string()).unwrap_or_default(),
        access.ssh_port.to_string(),
        port,
    )];
    let profile_keys: Vec<String> = access.ssh_keys.iter().filter_map(|k| key_material(k)).collect();
    let verdict = match i.login_key.and_then(key_material) {
        Some(k) if profile_keys.contains(&k) => Verdict::Agrees,
        Some(_) if !access.ssh_key_urls.is_empty() => {
            Verdict::Note("the login key is not among access.ssh_keys; the keys at ssh_key_urls may hold it".into())
        }
        Some(k) => Verdict::Refuses(format!(
            "the key adopt logs in with is not in access.ssh_keys of {}: the new system would not let it in; add \
             \"{k}\"",
            i.profile_path
        )),
        None => Verdict::Note("the login key is not known (an agent's key): not compared".into()),
    };
    out.push(check(
        "login key",
        i.login_key.and_then(key_material).map(|k| short_key(&k)).unwrap_or_else(|| "?".into()),
        format!("{} key(s)", access.ssh_keys.len()),
        verdict,
    ));
    out
}

fn short_key(k: &str) -> String {
    let blob = k.split_whitespace().nth(1).unwrap_or("");
    format!("{} …{}", k.split_whitespace().next().unwrap_or(""), &blob[blob.len().saturating_sub(12)..])
}

/// The plan as an operator reads it: the partitions, then each check.
pub fn render(plan: &Plan) -> String {
    let mut t = format!("disk {}\n", plan.disk);
    let rows: Vec<[String; 4]> = plan
        .partitions
        .iter()
        .map(|m| {
            [
                m.partition.node.clone(),
                human_bytes(m.partition.bytes(plan.sector_size)),
                m.today.clone(),
                m.role.map(Role::describe).unwrap_or("UNKNOWN: adopt stops").to_string(),
            ]
        })
        .collect();
    t.push_str(&table(&["partition", "size", "today", "becomes"], &rows));
    t.push('\n');
    let rows: Vec<[String; 4]> = plan
        .checks
        .iter()
        .map(|c| {
            let verdict = match &c.verdict {
                Verdict::Agrees => "ok".to_string(),
                Verdict::Note(n) => format!("note: {n}"),
                Verdict::Refuses(_) => "REFUSED".to_string(),
            };
            [c.name.to_string(), c.live.clone(), c.profile.clone(), verdict]
        })
        .collect();
    t.push_str(&table(&["check", "the box", "the profile", ""], &rows));
    for c in plan.refusals() {
        if let Verdict::Refuses(why) = &c.verdict {
            t.push_str(&format!("refused ({}): {why}\n", c.name));
        }
    }
    t
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod tests_support {
    /// The plan of the AlmaLinux 9 fixture box (swap last) on a matching profile.
    pub fn fleet_plan() -> super::Plan {
        super::tests::plan_for(super::tests::ALMA9, super::tests::MATCHING, Some(super::tests::KEY))
    }
}
