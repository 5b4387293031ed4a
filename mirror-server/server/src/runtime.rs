//! Workers and listeners, nginx's model: one single-threaded tokio runtime per worker thread,
//! each with its own SO_REUSEPORT listeners, so a connection lives and dies on one thread with
//! no cross-thread wake-ups. `run` starts them and hands the calling thread to `control`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{CertSource, Config};
use crate::shared::{build_shared, Lasting, SharedCell};
use crate::{conn, control, tls};

/// One address to listen on, and the TLS acceptor when it is an HTTPS one.
pub type Listen = (SocketAddr, Option<TlsAcceptor>);

/// Runs the server until SIGTERM/SIGINT, then lets transfers finish up to the grace period.
/// The calling thread becomes the control thread (signals, reloads, the metrics listener).
pub fn run(config: Config, threads: usize, reload: impl Fn() -> Result<Config> + Send + Sync + 'static) -> Result<()> {
    let lasting = Lasting::start(&config, raise_open_file_limit())?;
    // Bound before any request is served, so whoever sees the server answer can scrape it too.
    let metrics = config.metrics_listen.map(|addr| bind_std(addr).map(|l| (addr, l))).transpose()?;
    let shared: SharedCell = Arc::new(RwLock::new(Arc::new(build_shared(&config, &lasting)?)));
    let active = Arc::new(AtomicUsize::new(0));
    let listen = listeners(&config, &lasting);
    let threads = threads.max(1);
    start_workers(threads, &listen, &shared, &active, &config, &lasting)?;
    for (addr, tls) in &listen {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, root = %config.root.display(), threads, "serving");
    }
    tell_systemd_serving();
    control::run(&config, &lasting, &shared, &active, metrics, reload)?;
    lasting.finish(&config);
    Ok(())
}

/// Type=notify: every listener is bound, so what is ordered after the server (the boot's health
/// check, the sync service) starts when it answers, not when its process was forked. Outside
/// systemd (no NOTIFY_SOCKET) this does nothing.
fn tell_systemd_serving() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the server is ready");
    }
}

/// Every address the workers bind: plain HTTP, and HTTPS with the certificate store's acceptor.
fn listeners(config: &Config, lasting: &Lasting) -> Vec<Listen> {
    let mut listen: Vec<Listen> = config.listen.iter().map(|a| (*a, None)).collect();
    if let Some(t) = &config.tls {
        if let CertSource::Files { cert, key } = &t.source {
            match tls::load_files(cert, key) {
                Ok(loaded) => lasting.certs.set(loaded),
                // HTTP keeps serving; HTTPS starts when the files become usable.
                Err(e) => {
                    tracing::error!(error = %e, "no usable certificate yet; HTTPS handshakes fail until there is one")
                }
            }
        }
        let acceptor = TlsAcceptor::from(tls::server_config(lasting.certs.clone()));
        listen.extend(t.listen.iter().map(|a| (*a, Some(acceptor.clone()))));
    }
    listen
}

/// Starts the worker threads; each binds its own listeners and reports the outcome before
/// serving, so a port in use fails the start instead of one worker.
fn start_workers(
    threads: usize,
    listen: &[Listen],
    shared: &SharedCell,
    active: &Arc<AtomicUsize>,
    config: &Config,
    lasting: &Lasting,
) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    for i in 0..threads {
        let (shared, active, listen, scavenger, ready) =
            (shared.clone(), active.clone(), listen.to_vec(), config.scavenger, ready_tx.clone());
        let shutdown = lasting.shutdown.subscribe();
        std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let mut bound = Vec::new();
                for (addr, tls) in &listen {
                    match bind(*addr, scavenger) {
                        Ok(l) => bound.push((l, tls.clone())),
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready.send(Ok(()));
                let loops: Vec<_> = bound
                    .into_iter()
                    .map(|(l, tls)| tokio::spawn(accept_loop(l, tls, shared.clone(), active.clone(), shutdown.clone())))
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
                // Connections still sending keep this runtime alive until the process exits.
                std::future::pending::<()>().await;
            });
        })?;
    }
    drop(ready_tx);
    for _ in 0..threads {
        ready_rx.recv().context("a worker thread died while starting")??;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: SharedCell,
    active: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(current) = shared.read().ok().map(|s| s.clone()) else { continue };
        if active.load(Ordering::Relaxed) >= current.limits.max_connections {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => conn::serve(stream, peer, current).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head: slow clients do not linger.
                    let limit = current.limits.header_timeout;
                    if let Ok(Ok(tls_stream)) = tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        conn::serve(tls_stream, peer, current).await;
                    }
                }
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A listening socket. SO_REUSEPORT lets every worker thread bind the same address: the kernel
/// spreads connections across them, and no connection ever moves between threads.
pub fn bind(addr: SocketAddr, scavenger: bool) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    if scavenger {
        set_scavenger(&socket, addr.is_ipv6());
    }
    socket.bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

/// A plain listener bound now, handed to a runtime later.
fn bind_std(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding the metrics listener {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// DSCP CS1 ("scavenger", TOS byte 0x20) on everything we send, IPv4 and IPv6; accepted
/// sockets inherit it from the listener.
pub fn set_scavenger(socket: &impl std::os::fd::AsFd, ipv6: bool) {
    use rustix::net::sockopt;
    const CS1: u8 = 0x20;
    let _ = sockopt::set_ip_tos(socket, CS1);
    if ipv6 {
        let _ = sockopt::set_ipv6_tclass(socket, u32::from(CS1));
    }
}

/// Raises the soft limit on open descriptors to the hard one, as nginx's worker_rlimit_nofile
/// does (connections and cached files both hold one), and returns the limit in force. The unit
/// sets both to 65536, so on the box nothing changes; elsewhere glibc raises it with the
/// prlimit64 syscall, which the unit's filter (~@resources lists setrlimit) would allow.
fn raise_open_file_limit() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    let (Some(current), Some(max)) = (lim.current, lim.maximum) else {
        // Unlimited (RLIM_INFINITY) either way: nothing to raise, and no cap to keep under.
        return lim.current.unwrap_or(1 << 20);
    };
    if current < max && setrlimit(Resource::Nofile, Rlimit { current: Some(max), maximum: Some(max) }).is_ok() {
        return max;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scavenger_marks_ipv4_and_ipv6_sockets_cs1() {
        use rustix::net::sockopt;
        for v6 in [false, true] {
            let socket = if v6 { TcpSocket::new_v6() } else { TcpSocket::new_v4() }.unwrap();
            set_scavenger(&socket, v6);
            let value =
                if v6 { sockopt::ipv6_tclass(&socket).unwrap() } else { u32::from(sockopt::ip_tos(&socket).unwrap()) };
            assert_eq!(value, 0x20, "DSCP CS1 is TOS byte 0x20 (v6: {v6})");
        }
    }
}
