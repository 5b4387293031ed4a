//! mirror-update, the box's updater: it checks the site's update server for signed images,
//! installs the newest into the free root slot (A/B), and reboots into it inside the
//! maintenance window; systemd-boot's boot counting and our health check bring the previous
//! version back when a new one does not prove itself. See ARCHITECTURE.md, "Updates".
//!
//! Pure decisions (`feed`, `plan`) are apart from the effects (`fetch`, `verify`, `slots`,
//! `entries`, `write`), which `install` orders so that an interruption is always harmless.

pub mod adopted;
pub mod daemon;
pub mod entries;
pub mod feed;
pub mod fetch;
pub mod health;
pub mod install;
pub mod lock;
pub mod machine;
pub mod plan;
pub mod report;
pub mod settings;
pub mod slots;
pub mod state;
pub mod verify;
pub mod write;
