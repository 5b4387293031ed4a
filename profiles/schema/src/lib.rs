//! The one schema of a micro mirror, next to the data it describes: the site profile
//! (`profile`), the project catalog (`catalog`, with the `release` rules its entries carry),
//! how fresh a project looks to its distribution's checker (`freshness`), the fleet's hardware classes (`hardware`), the problems found in any of them (`diagnostics`), where the appliance keeps things (`paths`),
//! the sync status files that mirror-sync writes and others read (`status`), and the updater's
//! (`update_status`), the record of an adopted box's adoption (`adoption`), and the fleet's sync
//! topology derived from the profiles (`topology`).
//!
//! xtask reads it at build time, the appliance's programs at run time. It does no I/O beyond
//! reading the files it is asked to load and the status files; it never runs a command, never
//! opens a socket, and depends on nothing of the runtime (no async, no TLS).

pub mod adoption;
pub mod catalog;
pub mod diagnostics;
pub mod freshness;
pub mod hardware;
pub mod human;
pub mod paths;
pub mod profile;
pub mod release;
pub mod site_config;
pub mod status;
mod toml_load;
pub mod topology;
pub mod update_status;
