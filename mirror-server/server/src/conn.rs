//! One client connection: read request heads under timeouts, answer them in order (pipelining),
//! keep the connection alive when both sides want it. Small bodies are copied into the same
//! write as the head (one syscall); larger ones go out through the wire (sendfile on plain TCP).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::time::timeout;

use super::accesslog::Record;
use super::http::{self, Method, Parsed, Request};
use super::respond::{self, Body, Reply};
use super::wire::{Cut, Wire};
use super::{pagecache, timefmt};
use crate::shared::Shared;
use mirror_telemetry as telemetry;

/// Bodies up to this size are read into memory and written with the head.
const SMALL_BODY: u64 = 64 * 1024;

pub async fn serve<W: Wire>(mut stream: W, peer: SocketAddr, shared: Arc<Shared>) {
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        // Answer every complete request already buffered (pipelining), in order.
        loop {
            match http::parse(&inbuf) {
                Parsed::Complete(req, used) => {
                    inbuf.drain(..used);
                    let started = Instant::now();
                    let allowed = shared.limiter.allow(peer.ip());
                    let reply = if allowed { respond::handle(&shared, &req) } else { respond::error(&shared, 429) };
                    let mut reply = respond::finish(&shared, reply).await;
                    let keep = req.keep_alive() && !reply.close && !*shutdown.borrow();
                    reply.close = !keep;
                    // A reply cut short (the client went away mid-body) is logged and counted
                    // with the bytes that did go out, as nginx does; then the connection ends.
                    let written = write_reply(&mut stream, &mut out, &req, &reply, !inbuf.is_empty()).await;
                    account(&shared, peer, &req, &reply, &written, started, stream.tls_protocol());
                    if written.cut {
                        return;
                    }
                    if !keep {
                        let _ = flush(&mut stream, &mut out).await;
                        return;
                    }
                }
                Parsed::Partial => break,
                Parsed::Error(e) => {
                    let mut reply = respond::error(&shared, e.status());
                    reply.close = true;
                    let fake = bad_request_stub(&inbuf);
                    let written = write_reply(&mut stream, &mut out, &fake, &reply, false).await;
                    if !written.cut {
                        let _ = flush(&mut stream, &mut out).await;
                    }
                    account(&shared, peer, &fake, &reply, &written, Instant::now(), stream.tls_protocol());
                    return;
                }
            }
        }
        if flush(&mut stream, &mut out).await.is_err() {
            return;
        }
        let limit = if inbuf.is_empty() { shared.limits.idle_timeout } else { shared.limits.header_timeout };
        let read = tokio::select! {
            r = timeout(limit, stream.read_more(&mut inbuf)) => r,
            _ = shutdown.changed(), if inbuf.is_empty() => return,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                if !inbuf.is_empty() {
                    // A client that started a request and stalled: say so, then hang up.
                    let mut reply = respond::error(&shared, 408);
                    reply.close = true;
                    let fake = bad_request_stub(&inbuf);
                    let _ = write_reply(&mut stream, &mut out, &fake, &reply, false).await;
                    let _ = flush(&mut stream, &mut out).await;
                }
                return;
            }
        }
    }
}

/// A stand-in request for the access log when the head could not be parsed.
fn bad_request_stub(buf: &[u8]) -> Request {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()).min(200);
    Request {
        method: Method::Get,
        target: String::new(),
        minor_version: 1,
        headers: Vec::new(),
        line: String::from_utf8_lossy(&buf[..line_end]).trim_end().to_string(),
    }
}

fn head_bytes(out: &mut Vec<u8>, req: &Request, reply: &Reply) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(if req.minor_version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(number.format(reply.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(http::reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: mirror-server\r\nDate: ");
    timefmt::push_http_date(out, timefmt::now_secs());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if reply.status != 304 {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(number.format(reply.length).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if reply.close { b"Connection: close\r\n\r\n" } else { b"Connection: keep-alive\r\n\r\n" });
}

/// What one reply put on the wire: all of it, or, when the send was cut short (the client went
/// away), the bytes that went out before it was.
struct Written {
    sent: u64,
    head: u64,
    cut: bool,
}

impl Written {
    /// Body bytes that went out (nginx's $body_bytes_sent).
    fn body(&self) -> u64 {
        self.sent.saturating_sub(self.head)
    }
}

/// Queues or sends one reply: its head, then its body.
async fn write_reply<W: Wire>(
    stream: &mut W,
    out: &mut Vec<u8>,
    req: &Request,
    reply: &Reply,
    more_pipelined: bool,
) -> Written {
    // Bytes of earlier pipelined replies still waiting in `out` go out first, and are theirs.
    let earlier = out.len() as u64;
    head_bytes(out, req, reply);
    let head = out.len() as u64 - earlier;
    if req.method == Method::Head || reply.status == 304 {
        return Written { sent: head, head, cut: false };
    }
    match send_body(stream, out, reply, more_pipelined, earlier, head).await {
        Ok(sent) => Written { sent, head, cut: false },
        Err(cut) => Written { sent: cut.sent, head, cut: true },
    }
}

/// Queues or sends the body after the head already in `out` (behind `earlier` bytes of other
/// replies); returns this reply's bytes on the wire (head + body), or, when the send was cut
/// short, how many of them went out before it was.
async fn send_body<W: Wire>(
    stream: &mut W,
    out: &mut Vec<u8>,
    reply: &Reply,
    more_pipelined: bool,
    mut earlier: u64,
    head_len: u64,
) -> Result<u64, Cut> {
    // This reply's bytes sent so far (a cut adds what went out of `out` beyond `earlier`).
    let mut mine = 0u64;
    let ours =
        |cut: Cut, mine: u64, earlier: u64| Cut { sent: mine + cut.sent.saturating_sub(earlier), error: cut.error };
    let read_failed = |e: io::Error, sent: u64| Cut { sent, error: e };
    match &reply.body {
        Body::Empty => Ok(head_len),
        // `respond::finish` renders every listing before a reply is written.
        Body::Listing(_) => Err(Cut { sent: 0, error: io::Error::other("a listing reached the writer unrendered") }),
        Body::Bytes(b) => {
            out.extend_from_slice(b);
            if out.len() > 256 << 10 || !more_pipelined {
                flush(stream, out).await.map_err(|c| ours(c, 0, earlier))?;
            }
            Ok(head_len + b.len() as u64)
        }
        Body::File { file, offset, len } if *len <= SMALL_BODY => {
            pagecache::read_into(file, *offset, *len, out).await.map_err(|e| read_failed(e, 0))?;
            if out.len() > 256 << 10 || !more_pipelined {
                flush(stream, out).await.map_err(|c| ours(c, 0, earlier))?;
            }
            Ok(head_len + len)
        }
        Body::File { file, offset, len } => {
            stream.send(out, true).await.map_err(|c| ours(c, 0, earlier))?;
            stream.send_file(file, *offset, *len).await.map_err(|c| Cut { sent: head_len + c.sent, error: c.error })?;
            Ok(head_len + len)
        }
        Body::Multipart { file, parts, trailer } => {
            // `mine` counts this reply's bytes already sent; `out` holds the rest so far.
            let mut queued = head_len;
            for (part_head, offset, len) in parts {
                out.extend_from_slice(part_head);
                queued += part_head.len() as u64;
                if *len <= SMALL_BODY {
                    pagecache::read_into(file, *offset, *len, out).await.map_err(|e| read_failed(e, mine))?;
                    queued += len;
                } else {
                    stream.send(out, true).await.map_err(|c| ours(c, mine, earlier))?;
                    (mine, queued, earlier) = (mine + queued, 0, 0);
                    stream
                        .send_file(file, *offset, *len)
                        .await
                        .map_err(|c| Cut { sent: mine + c.sent, error: c.error })?;
                    mine += len;
                }
            }
            out.extend_from_slice(trailer);
            flush(stream, out).await.map_err(|c| ours(c, mine, earlier))?;
            Ok(mine + queued + trailer.len() as u64)
        }
    }
}

async fn flush<W: Wire>(stream: &mut W, out: &mut Vec<u8>) -> Result<(), Cut> {
    stream.send(out, false).await
}

fn account(
    shared: &Shared,
    peer: SocketAddr,
    req: &Request,
    reply: &Reply,
    written: &Written,
    started: Instant,
    tls: Option<&'static str>,
) {
    let (sent, body) = (written.sent, written.body());
    shared.metrics.record(reply.project.as_deref(), reply.release.as_deref(), reply.status, sent);
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    let now = now_us / 1_000_000;
    if let Some(t) = &shared.telemetry {
        t.send(telemetry::Record {
            time_us: now_us,
            client: peer.ip(),
            path: req.target.split('?').next().unwrap_or("").to_string(),
            project: reply.project.clone(),
            release: reply.release.clone(),
            status: reply.status,
            bytes_sent: sent,
            duration: started.elapsed(),
            user_agent: req.header("user-agent").unwrap_or("").to_string(),
            tls,
        });
    }
    shared.access_log.log(&Record {
        client: peer.ip(),
        time: now,
        request_line: &req.line,
        status: reply.status,
        body_bytes: body,
        bytes_sent: sent,
        referer: req.header("referer").unwrap_or(""),
        user_agent: req.header("user-agent").unwrap_or(""),
        duration: started.elapsed(),
        tls,
    });
}
