//! The telemetry thread: takes records off the queue in batches, adds the ASN, and writes them
//! to the watchtower over TLS (certificate checked against the profile's CA). While the
//! watchtower is unreachable, records go to the spill file; on reconnection the spill file is
//! replayed first, so the watchtower receives records in order.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::asn::AsnDb;
use super::spill::Spill;
use super::syslog;
use super::{Msg, Record, Stats, TelemetryConfig};

const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

type Conn = StreamOwned<ClientConnection, TcpStream>;

/// TLS client configuration that trusts only the watchtower's CA.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading the watchtower CA {}", ca_file.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.with_context(|| format!("{}: unreadable PEM", ca_file.display()))?;
        roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(anyhow!("{}: no CA certificate in the file", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(super) struct Writer {
    config: TelemetryConfig,
    tls: Arc<ClientConfig>,
    asn: Option<AsnDb>,
    spill: Spill,
    stats: Arc<Stats>,
    conn: Option<Conn>,
    failures: u32,
    next_attempt: Instant,
}

impl Writer {
    pub(super) fn new(
        config: TelemetryConfig,
        tls: Arc<ClientConfig>,
        asn: Option<AsnDb>,
        spill: Spill,
        stats: Arc<Stats>,
    ) -> Writer {
        Writer { config, tls, asn, spill, stats, conn: None, failures: 0, next_attempt: Instant::now() }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        loop {
            frames.clear();
            let mut flushed = None;
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Record(r)) => frames.push(self.framed(&r)),
                Ok(Msg::Flush(done)) => flushed = Some(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while frames.len() < BATCH && flushed.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Record(r)) => frames.push(self.framed(&r)),
                    Ok(Msg::Flush(done)) => flushed = Some(done),
                    Err(_) => break,
                }
            }
            self.stats.queued.fetch_sub(frames.len() as u64, Ordering::Relaxed);
            self.keep_connected();
            if !frames.is_empty() {
                self.deliver(&frames);
            }
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    fn framed(&self, r: &Record) -> Vec<u8> {
        let asn = self.asn.as_ref().and_then(|db| db.lookup(r.client));
        let msg = syslog::format(r, &self.config.hostname, asn.as_ref());
        let mut out = Vec::with_capacity(msg.len() + 6);
        syslog::frame(&msg, &mut out);
        out
    }

    /// Writes the batch when connected and nothing older waits on disk; spills it otherwise.
    fn deliver(&mut self, frames: &[Vec<u8>]) {
        if self.spill.is_empty() {
            if let Some(conn) = &mut self.conn {
                let batch: Vec<u8> = frames.concat();
                match conn.write_all(&batch).and_then(|_| conn.flush()) {
                    Ok(()) => {
                        self.stats.delivered.fetch_add(frames.len() as u64, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => self.lost_connection(&e.to_string()),
                }
            }
        }
        for f in frames {
            match self.spill.push(f) {
                Ok(true) => {}
                Ok(false) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, file = %self.spill.path().display(), "cannot spill a telemetry record");
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.stats.spilled_bytes.store(self.spill.len_bytes(), Ordering::Relaxed);
    }

    /// Notices a watchtower that hung up, (re)connects when the backoff allows, and replays
    /// the spill file after a reconnection.
    fn keep_connected(&mut self) {
        if self.conn.as_ref().is_some_and(|c| peer_closed(&c.sock)) {
            self.lost_connection("the watchtower closed the connection");
        }
        if self.conn.is_none() && Instant::now() >= self.next_attempt {
            match self.connect() {
                Ok(conn) => {
                    tracing::info!(watchtower = %self.config.watchtower, "telemetry connected");
                    self.conn = Some(conn);
                    self.failures = 0;
                    self.stats.connected.store(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failures += 1;
                    let wait = Duration::from_secs(1 << self.failures.min(5)).min(MAX_BACKOFF);
                    self.next_attempt = Instant::now() + wait;
                    if self.failures == 1 {
                        tracing::warn!(error = %format!("{e:#}"), "watchtower unreachable; spilling records to disk");
                    }
                }
            }
        }
        if self.conn.is_some() && !self.spill.is_empty() {
            if let Err(e) = self.replay() {
                self.lost_connection(&format!("{e:#}"));
            }
        }
    }

    fn replay(&mut self) -> Result<()> {
        let data = self.spill.read_all()?;
        let (frames, torn) = syslog::unframe(&data);
        let whole = &data[..data.len() - torn];
        if let Some(conn) = &mut self.conn {
            conn.write_all(whole).and_then(|_| conn.flush()).context("replaying the spill file")?;
        }
        self.stats.delivered.fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.spill.clear()?;
        self.stats.spilled_bytes.store(0, Ordering::Relaxed);
        tracing::info!(records = frames.len(), "spilled telemetry delivered");
        Ok(())
    }

    fn lost_connection(&mut self, why: &str) {
        tracing::warn!(reason = why, "telemetry connection lost");
        self.conn = None;
        self.stats.connected.store(0, Ordering::Relaxed);
        self.next_attempt = Instant::now();
    }

    fn connect(&self) -> Result<Conn> {
        let target = &self.config.watchtower;
        let (host, _) = target.rsplit_once(':').ok_or_else(|| anyhow!("{target} is not host:port"))?;
        let host = host.trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string()).with_context(|| format!("{host} is not a server name"))?;
        let addrs: Vec<_> = target.to_socket_addrs().with_context(|| format!("resolving {target}"))?.collect();
        let mut last = anyhow!("{target} resolves to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(sock) => {
                    sock.set_write_timeout(Some(IO_TIMEOUT))?;
                    sock.set_read_timeout(Some(IO_TIMEOUT))?;
                    let tls = ClientConnection::new(self.tls.clone(), name.clone())?;
                    let mut conn = StreamOwned::new(tls, sock);
                    while conn.conn.is_handshaking() {
                        conn.conn
                            .complete_io(&mut conn.sock)
                            .with_context(|| format!("TLS handshake with {target}"))?;
                    }
                    return Ok(conn);
                }
                Err(e) => last = anyhow!("connecting to {addr}: {e}"),
            }
        }
        Err(last)
    }
}

/// Whether the peer has closed its side (or sent anything, which a syslog receiver never does
/// except to end the session): a non-blocking peek that does not consume.
fn peer_closed(sock: &TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match sock.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = sock.set_nonblocking(false);
    closed
}
