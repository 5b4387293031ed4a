//! The USB installer, for the boxes adopt cannot reach or convert over SSH (Secure Boot on, an
//! odd layout, a broken network): `cargo xtask installer --site NAME` writes a stick whose own
//! system is the site's image booted in installer mode, and `micromirror-installer` (this
//! crate's program, carried on the stick) converts the box's disk from it in one boot.
//!
//! This library is the contract between the two sides and the pure decisions: `payload` is
//! what the stick carries and how its partitions are named; `disks` reads what lsblk and
//! /etc/fstab say and picks the disk and the old root. It never runs a command or touches a
//! disk; the program (main.rs) does.

pub mod disks;
pub mod payload;
