//! Adoption of a box of today's fleet (AlmaLinux, kickstart layout, mirror data on the root
//! XFS) onto the image, over SSH and keeping its data: the pure half. `survey` is the script
//! the box runs (read-only, with what a minimal AlmaLinux 8 or 9 carries) and the parsing of
//! what it prints; `plan` maps the live disk and network onto the image's layout and the site's
//! profile and lists what refuses the adoption; `fill` writes live values into a profile's
//! `TODO:` placeholders; `trial` makes the scripts the old system runs for the trial boot. This crate never runs a command, opens a socket or writes a file: the
//! `cargo xtask adopt` command (xtask/src/adopt) does.

pub mod fill;
pub mod plan;
pub mod survey;
pub mod trial;

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("the box's report has no `{0}` section: the survey script did not run to its end")]
    MissingSection(&'static str),
    #[error("the box's `{section}` report cannot be read: {detail}")]
    Unreadable { section: &'static str, detail: String },
    #[error("{0}")]
    Profile(String),
}
