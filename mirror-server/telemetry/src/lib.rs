//! Fleet telemetry: every request becomes a record streamed to the watchtower as RFC 5424
//! syslog over TLS. The request path only hands a record to a bounded in-memory queue (never
//! waits); a writer thread adds the client's ASN, delivers, spills to a bounded file while the
//! watchtower is away and replays it when it returns. Drops beyond both bounds are counted.

pub mod asn;
pub mod spill;
mod stream;
pub mod syslog;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Records waiting in memory; a burst beyond this while the writer is busy is dropped.
const QUEUE: usize = 32 * 1024;

/// One answered request.
#[derive(Debug, Clone)]
pub struct Record {
    /// Microseconds since the epoch, when the reply was sent.
    pub time_us: i64,
    pub client: IpAddr,
    pub path: String,
    pub project: Option<String>,
    pub release: Option<String>,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub user_agent: String,
    pub tls: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// host:port of the watchtower's syslog-over-TLS listener.
    pub watchtower: String,
    /// CA that signs the watchtower's certificate (PEM).
    pub ca_file: PathBuf,
    pub asn_database: Option<PathBuf>,
    pub spill_file: PathBuf,
    pub spill_max_bytes: u64,
    /// HOSTNAME of the syslog header: the mirror's public name.
    pub hostname: String,
}

/// Counters for the metrics listener.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records in the memory queue now.
    pub queued: AtomicU64,
    /// Bytes in the spill file now.
    pub spilled_bytes: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    /// 1 while connected to the watchtower.
    pub connected: AtomicU64,
}

/// What the writer thread receives: records, and at shutdown a request to finish the queue.
pub(crate) enum Msg {
    Record(Record),
    /// Deliver or spill everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Telemetry {
    queue: SyncSender<Msg>,
    pub stats: Arc<Stats>,
}

impl Telemetry {
    /// Starts the writer thread. Configuration errors (an unreadable CA) are reported here, at
    /// start, rather than as a silent stream of failed connections.
    pub fn start(config: TelemetryConfig) -> anyhow::Result<Telemetry> {
        let tls = stream::client_config(&config.ca_file)?;
        let asn = asn::AsnDb::open_optional(config.asn_database.as_deref());
        let spill = spill::Spill::open(&config.spill_file, config.spill_max_bytes).map_err(|e| {
            anyhow::anyhow!("cannot open the telemetry spill file {}: {e}", config.spill_file.display())
        })?;
        let (queue, rx) = sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        stats.spilled_bytes.store(spill.len_bytes(), Ordering::Relaxed);
        let writer = stream::Writer::new(config, tls, asn, spill, stats.clone());
        std::thread::Builder::new().name("telemetry".into()).spawn(move || writer.run(rx))?;
        Ok(Telemetry { queue, stats })
    }

    pub fn send(&self, record: Record) {
        match self.queue.try_send(Msg::Record(record)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// At shutdown: waits (up to `limit` once queued) until every record queued before is
    /// delivered or spilled to disk, so a restart loses none.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }
}
