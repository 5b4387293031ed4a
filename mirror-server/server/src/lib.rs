//! mirror-server, the static file server that replaces nginx on a micro mirror.
//!
//! `runtime` starts one worker thread per core and hands the calling thread to `control`
//! (signals, reloads, certificate upkeep, the metrics `exporter`). A connection (`conn`) reads
//! heads (`http`) and answers them (`respond`) from the state in `shared`, configured by
//! `config`. The server never writes under the mirror root, has no code that deletes files, and
//! its request path never waits on the disk, telemetry or any socket but its own.

pub mod accesslog;
pub mod acme;
pub mod cache;
pub mod capacity;
pub mod cond;
pub mod config;
pub mod conn;
pub mod control;
pub mod exporter;
pub mod exposition;
pub mod filecache;
pub mod files;
pub mod front;
pub mod http;
pub mod listing;
pub mod live_capacity;
pub mod metrics;
pub mod mime;
pub mod pagecache;
pub mod ratelimit;
pub mod report;
pub mod respond;
pub mod runtime;
pub mod shared;
pub mod timefmt;
pub mod tls;
pub mod urlpath;
pub mod wire;

pub use config::{CertSource, Config, Limits, TlsConfig};
pub use runtime::run;
pub use shared::Shared;
