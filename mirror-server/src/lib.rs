//! The appliance's runtime: the site profile and project catalog (shared with xtask), the static
//! HTTP server and the sync service. The two binaries in `src/bin` are thin shells over this.

pub mod catalog;
pub mod diagnostics;
pub mod profile;
pub mod server;
pub mod site_config;
pub mod sync;
pub mod telemetry;
mod toml_load;
pub mod units;
