//! `[network]`: which NIC becomes `wan0` (or which two are bonded) and its static addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::diagnostics::Reporter;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Network {
    /// Which NIC becomes `wan0`; the first wired NIC when absent.
    #[serde(default)]
    pub nic: NicMatch,
    /// Two NICs bonded with LACP (802.3ad) as `wan0`, instead of `nic`.
    #[serde(default)]
    pub bond: Option<Bond>,
    /// Lab sites only: take addresses from DHCP instead of the static ones.
    #[serde(default)]
    pub dhcp: bool,
    /// "address/prefix", e.g. "192.0.2.10/24".
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv4_gateway: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub ipv6_gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    /// Time servers (host names or addresses), e.g. the sponsor's; the distro's pool when empty.
    #[serde(default)]
    pub ntp: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Bond {
    /// The two member NICs, by MAC address (the switch ports of one LACP group).
    #[serde(default)]
    pub members: Vec<String>,
    /// Or: every port of this kernel driver (a two-port card), e.g. "ixgbe".
    #[serde(default)]
    pub driver: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct NicMatch {
    #[serde(default)]
    pub mac: Option<String>,
    /// udev's ID_PATH, e.g. "pci-0000:01:00.0".
    #[serde(default)]
    pub pci_path: Option<String>,
    /// Kernel driver, e.g. "r8169".
    #[serde(default)]
    pub driver: Option<String>,
}

impl Network {
    pub fn ipv4_net(&self) -> Option<Ipv4Net> {
        self.ipv4.as_ref()?.parse().ok()
    }
    pub fn ipv6_net(&self) -> Option<Ipv6Net> {
        self.ipv6.as_ref()?.parse().ok()
    }
}

pub(super) fn validate(n: &Network, test_site: bool, r: &mut Reporter) {
    let set = [&n.nic.mac, &n.nic.pci_path, &n.nic.driver].iter().filter(|v| v.is_some()).count();
    if let Some(bond) = &n.bond {
        if set > 0 {
            r.error("network.bond", "both nic and bond are set", "keep bond for two bonded NICs, or nic for one");
        }
        if bond.driver.is_some() && !bond.members.is_empty() {
            r.error(
                "network.bond",
                "both members and driver are set",
                "name the two NICs by MAC address, or all ports of one driver, not both",
            );
        } else if bond.driver.is_none() && bond.members.len() != 2 {
            r.error(
                "network.bond.members",
                format!("{} members; a bond here has exactly two", bond.members.len()),
                "list the two NICs' MAC addresses (or give driver = \"ixgbe\" to bond every port of a card)",
            );
        }
        if let Some(d) = bond.driver.as_deref().filter(|d| !is_driver_name(d)) {
            r.error("network.bond.driver", format!("`{d}` is not a kernel module name"), "write e.g. \"ixgbe\"");
        }
        for (i, mac) in bond.members.iter().enumerate() {
            if !is_mac(mac) {
                r.error(
                    &format!("network.bond.members[{i}]"),
                    format!("`{mac}` is not a MAC address"),
                    "write it as 00:11:22:33:44:55",
                );
            }
        }
    }
    if set > 1 {
        r.error(
            "network.nic",
            "more than one of mac, pci_path and driver is set",
            "keep the one that identifies the NIC on this box",
        );
    }
    if let Some(mac) = &n.nic.mac {
        if !is_mac(mac) {
            r.error("network.nic.mac", format!("`{mac}` is not a MAC address"), "write it as 00:11:22:33:44:55");
        }
    }
    if n.dhcp && !test_site {
        r.warn(
            "network.dhcp",
            "DHCP on a production site: the sponsor gives static addresses",
            "set the static addresses and dhcp = false before shipping",
        );
    }
    let v4 = parse_net::<Ipv4Net>(r, "network.ipv4", &n.ipv4, "192.0.2.10/24");
    let v6 = parse_net::<Ipv6Net>(r, "network.ipv6", &n.ipv6, "2001:db8::10/64");
    let gw4 = parse_addr::<Ipv4Addr>(r, "network.ipv4_gateway", &n.ipv4_gateway, "192.0.2.1");
    let gw6 = parse_addr::<Ipv6Addr>(r, "network.ipv6_gateway", &n.ipv6_gateway, "2001:db8::1");
    if !n.dhcp && n.ipv4.is_none() && n.ipv6.is_none() {
        r.error(
            "network",
            "no address: the box would be unreachable",
            "set ipv4 and/or ipv6 with their gateways (or dhcp = true on a lab site)",
        );
    }
    if let Some(net) = v4 {
        // In a /31 (RFC 3021) both addresses are hosts; in a /32 the one address is.
        let (first, last) = (net.network(), net.broadcast());
        if net.prefix_len() < 31 && (net.addr() == first || net.addr() == last) {
            let which = if net.addr() == first { "the network address" } else { "the broadcast address" };
            r.error(
                "network.ipv4",
                format!("{} is {which} of {}: no host can use it", net.addr(), net.trunc()),
                format!("use a host address between {first} and {last}, as the sponsor assigned"),
            );
        }
    }
    if let (Some(net), Some(gw)) = (v4, gw4) {
        if net.addr() == gw {
            r.error(
                "network.ipv4_gateway",
                format!("the gateway {gw} is the box's own address"),
                "use the sponsor's router address",
            );
        }
    }
    if let (Some(net), Some(gw)) = (v6, gw6) {
        if net.addr() == gw {
            r.error(
                "network.ipv6_gateway",
                format!("the gateway {gw} is the box's own address"),
                "use the sponsor's router address (or its fe80:: link-local address)",
            );
        }
    }
    if !n.dhcp && (v4.is_some() || v6.is_some()) && n.dns.is_empty() {
        r.error(
            "network.dns",
            "static addresses without a resolver: the box could not look up a name (its upstream, ACME)",
            "list the resolvers the sponsor gave, e.g. dns = [\"192.0.2.53\"]",
        );
    }
    if let (Some(net), Some(gw)) = (v4, gw4) {
        // A /31 or /32 gateway may sit outside the on-link prefix only by explicit route; refuse.
        if !net.contains(&gw) {
            r.error(
                "network.ipv4_gateway",
                format!("gateway {gw} is outside {net}"),
                format!("use the gateway the sponsor gave for {}", net.trunc()),
            );
        }
    }
    if let (Some(net), Some(gw)) = (v6, gw6) {
        if !net.contains(&gw) && !is_link_local(gw) {
            r.error(
                "network.ipv6_gateway",
                format!("gateway {gw} is outside {net}"),
                "use the sponsor's gateway inside the prefix, or its fe80:: link-local address",
            );
        }
    }
    if v4.is_some() && gw4.is_none() && n.ipv4_gateway.is_none() {
        r.error("network.ipv4_gateway", "ipv4 is set without a gateway", "add ipv4_gateway");
    }
    if v6.is_some() && gw6.is_none() && n.ipv6_gateway.is_none() {
        r.error("network.ipv6_gateway", "ipv6 is set without a gateway", "add ipv6_gateway");
    }
    for (i, d) in n.dns.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            r.error(
                &format!("network.dns[{i}]"),
                format!("`{d}` is not an IP address"),
                "write resolver addresses such as \"192.0.2.53\"",
            );
        }
    }
    for (i, server) in n.ntp.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() && !super::checks::is_hostname(server) {
            r.error(
                &format!("network.ntp[{i}]"),
                format!("`{server}` is neither a host name nor an address"),
                "write e.g. \"ntp.example.net\" or \"192.0.2.123\"",
            );
        }
    }
    if !test_site {
        let doc: Vec<IpAddr> = v4
            .map(|n| IpAddr::V4(n.addr()))
            .into_iter()
            .chain(v6.map(|n| IpAddr::V6(n.addr())))
            .filter(|a| is_documentation(*a))
            .collect();
        for a in doc {
            let key = if a.is_ipv4() { "network.ipv4" } else { "network.ipv6" };
            r.warn(
                key,
                format!("{a} is a documentation address (placeholder)"),
                "replace it with the address the hosting network assigned before shipping",
            );
        }
    }
}

fn parse_net<T: std::str::FromStr>(r: &mut Reporter, key: &str, v: &Option<String>, example: &str) -> Option<T> {
    let v = v.as_ref()?;
    match v.parse::<T>() {
        Ok(n) => Some(n),
        Err(_) => {
            r.error(key, format!("`{v}` is not an address with a prefix length"), format!("write it as \"{example}\""));
            None
        }
    }
}

fn parse_addr<T: std::str::FromStr>(r: &mut Reporter, key: &str, v: &Option<String>, example: &str) -> Option<T> {
    let v = v.as_ref()?;
    match v.parse::<T>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(key, format!("`{v}` is not an address"), format!("write it as \"{example}\""));
            None
        }
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// RFC 5737 and RFC 3849 ranges: fine for tests, placeholders anywhere else.
pub fn is_documentation(a: IpAddr) -> bool {
    let nets = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"];
    nets.iter().filter_map(|n| n.parse::<IpNet>().ok()).any(|n| n.contains(&a))
}

fn is_driver_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 56 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Network {
    /// Whether the profile itself says which NIC (or bond) is wan0.
    pub fn names_its_nic(&self) -> bool {
        self.bond.is_some() || self.nic != NicMatch::default()
    }

    /// The hardware class's NIC or bond, where the profile names none.
    pub fn apply_class_default(&mut self, class: &crate::hardware::HardwareClass) {
        if self.names_its_nic() {
            return;
        }
        if let Some(nic) = &class.nic {
            self.nic = nic.clone();
        } else if let Some(bond) = &class.bond {
            self.bond = Some(Bond { members: vec![], driver: Some(bond.driver.clone()) });
        }
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
