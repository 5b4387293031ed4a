//! How close to full is a mirror? From request records (the box's own, or an nginx access log
//! in the combined format or the fleet's): the link's utilisation at 1 s, 1 min and 5 min, the
//! index of dispersion of requests and bytes from 1 s to 1 h with a Hurst estimate of how far
//! the traffic is from Poisson, each project's share and CDN efficiency, and a verdict on the
//! sustained baseline with the projects to move off when it is overshot.
//!
//! Pure: records and numbers in, a report out. It reads no file and opens no socket; the
//! server's `capacity` command and its live accounting feed it.

pub mod dispersion;
pub mod history;
pub mod log;
pub mod report;
pub mod series;
pub mod verdict;

pub use report::{analyse, Inputs, Report, Tally};

/// One finished (or cut-short) response.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unix seconds when the response ended (the log line's time).
    pub end: f64,
    /// Seconds the response took; its bytes are spread over that time. None when the log
    /// does not say (nginx's plain combined format): the tally then assumes the link's rate.
    pub duration: Option<f64>,
    /// Bytes that went out (the log's bytes sent, else its body bytes).
    pub bytes: u64,
    /// The first path segment: the project's folder.
    pub project: String,
}
