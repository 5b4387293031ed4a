//! The fleet's hardware classes (`profiles/hardware/*.toml`, built into this crate): for each,
//! the drivers the box needs in its initramfs and image, the NIC (or bond) that becomes `wan0`
//! by default, the link speed and the disk size. A class is data: adding one is adding a file
//! and a line to `CLASSES`, never a code branch. Pure: parses embedded text, touches nothing.

use std::sync::OnceLock;

use serde::Deserialize;

use crate::profile::NicMatch;

/// The class files, by name (what a profile's `site.hardware` says).
const CLASSES: &[(&str, &str)] = &[
    ("t620", include_str!("../../hardware/t620.toml")),
    ("t740", include_str!("../../hardware/t740.toml")),
    ("r220", include_str!("../../hardware/r220.toml")),
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HardwareClass {
    #[serde(skip)]
    pub name: String,
    pub title: String,
    /// Capacity of the uplink (`wan0`), for utilisation figures.
    pub link_mbit: u32,
    /// The disk the class ships with, in GB: a profile's default `site.disk_gb`.
    pub disk_gb: u64,
    /// Kernel modules of its storage and NICs, loaded from the initramfs.
    pub drivers: Vec<String>,
    /// The NIC that becomes `wan0` unless the profile says otherwise.
    #[serde(default)]
    pub nic: Option<NicMatch>,
    /// Or: every port of this driver bonded with LACP as `wan0`.
    #[serde(default)]
    pub bond: Option<BondByDriver>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BondByDriver {
    pub driver: String,
}

/// Every known class, in the order of `CLASSES`.
pub fn classes() -> &'static [HardwareClass] {
    static PARSED: OnceLock<Vec<HardwareClass>> = OnceLock::new();
    PARSED.get_or_init(|| {
        CLASSES
            .iter()
            .map(|(name, text)| {
                // The files are part of this crate; a unit test parses each, so this cannot
                // fail in a build that passed its tests.
                let mut class: HardwareClass = toml_edit::de::from_str(text)
                    .unwrap_or_else(|e| panic!("profiles/hardware/{name}.toml is broken: {e}"));
                class.name = name.to_string();
                class
            })
            .collect()
    })
}

pub fn get(name: &str) -> Option<&'static HardwareClass> {
    classes().iter().find(|c| c.name == name)
}

pub fn names() -> Vec<&'static str> {
    CLASSES.iter().map(|(n, _)| *n).collect()
}

/// Drivers for a box of no named class (the demo, a lab machine, QEMU): every class's, so the
/// image boots on any of them.
pub fn all_drivers() -> Vec<String> {
    let mut v: Vec<String> = classes().iter().flat_map(|c| c.drivers.iter().cloned()).collect();
    v.sort();
    v.dedup();
    v
}

/// A 1 Gbit/s link when the class is unknown: the fleet's common case.
pub const DEFAULT_LINK_MBIT: u32 = 1000;
/// A 2 TB disk when neither the profile nor a class says: the T620's.
pub const DEFAULT_DISK_GB: u64 = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_parses_and_names_its_wan0() {
        assert_eq!(classes().len(), CLASSES.len());
        for c in classes() {
            assert!(!c.drivers.is_empty(), "{}", c.name);
            assert!(c.nic.is_some() != c.bond.is_some(), "{}: exactly one of nic and bond", c.name);
        }
        assert_eq!(get("t620").map(|c| c.disk_gb), Some(2000));
        assert!(get("t740").unwrap().drivers.contains(&"mlx4_en".to_string()));
        assert_eq!(get("r220").unwrap().bond.as_ref().map(|b| b.driver.as_str()), Some("ixgbe"));
        assert!(all_drivers().contains(&"r8169".to_string()) && all_drivers().contains(&"ixgbe".to_string()));
    }
}
