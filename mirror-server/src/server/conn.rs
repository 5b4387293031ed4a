//! One client connection: read request heads under timeouts, answer them in order (pipelining),
//! keep the connection alive when both sides want it, and send file bodies with sendfile(2)
//! (zero-copy). Small bodies are copied into the same write as the head: one syscall.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::accesslog::Record;
use super::http::{self, Method, Parsed, Request};
use super::respond::{self, Body, Reply};
use super::Shared;

/// Bodies up to this size are read into memory and written with the head.
const SMALL_BODY: u64 = 64 * 1024;
/// One sendfile call sends at most this much, so other connections get their turn.
const SENDFILE_CHUNK: usize = 4 << 20;

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
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
                    let mut reply = if allowed { respond::handle(&shared, &req) } else { respond::error(&shared, 429) };
                    let keep = req.keep_alive() && !reply.close && !*shutdown.borrow();
                    reply.close = !keep;
                    let sent = match write_reply(&stream, &mut out, &req, &reply, !inbuf.is_empty()).await {
                        Ok(n) => n,
                        Err(_) => return,
                    };
                    account(&shared, peer, &req, &reply, sent, started);
                    if !keep {
                        let _ = flush(&stream, &mut out).await;
                        return;
                    }
                }
                Parsed::Partial => break,
                Parsed::Error(e) => {
                    let mut reply = respond::error(&shared, e.status());
                    reply.close = true;
                    let fake = bad_request_stub(&inbuf);
                    if write_reply(&stream, &mut out, &fake, &reply, false).await.is_ok() {
                        let _ = flush(&stream, &mut out).await;
                    }
                    account(&shared, peer, &fake, &reply, reply.length, Instant::now());
                    return;
                }
            }
        }
        if flush(&stream, &mut out).await.is_err() {
            return;
        }
        let limit = if inbuf.is_empty() { shared.limits.idle_timeout } else { shared.limits.header_timeout };
        let read = tokio::select! {
            r = timeout(limit, read_more(&mut stream, &mut inbuf)) => r,
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
                    let _ = write_reply(&stream, &mut out, &fake, &reply, false).await;
                    let _ = flush(&stream, &mut out).await;
                }
                return;
            }
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(4096);
    }
    stream.read_buf(buf).await
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
    use std::io::Write;
    let version = if req.minor_version == 0 { "HTTP/1.0" } else { "HTTP/1.1" };
    let _ = write!(
        out,
        "{version} {} {}\r\nServer: mirror-server\r\nDate: {}\r\n",
        reply.status,
        http::reason(reply.status),
        super::cond::now_http_date()
    );
    for (name, value) in &reply.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if reply.status != 304 {
        let _ = write!(out, "Content-Length: {}\r\n", reply.length);
    }
    let conn = if reply.close { "close" } else { "keep-alive" };
    let _ = write!(out, "Connection: {conn}\r\n\r\n");
}

/// Queues or sends one reply; returns the bytes it puts on the wire (head + body).
async fn write_reply(
    stream: &TcpStream,
    out: &mut Vec<u8>,
    req: &Request,
    reply: &Reply,
    more_pipelined: bool,
) -> io::Result<u64> {
    let before = out.len();
    head_bytes(out, req, reply);
    let head_len = (out.len() - before) as u64;
    if req.method == Method::Head || reply.status == 304 {
        return Ok(head_len);
    }
    match &reply.body {
        Body::Empty => Ok(head_len),
        Body::Bytes(b) => {
            out.extend_from_slice(b);
            if out.len() > 256 << 10 || !more_pipelined {
                flush(stream, out).await?;
            }
            Ok(head_len + b.len() as u64)
        }
        Body::File { file, offset, len } if *len <= SMALL_BODY => {
            read_into(file, *offset, *len, out).await?;
            if out.len() > 256 << 10 || !more_pipelined {
                flush(stream, out).await?;
            }
            Ok(head_len + len)
        }
        Body::File { file, offset, len } => {
            flush_more(stream, out).await?;
            let sent = send_file(stream, file, *offset, *len).await?;
            Ok(head_len + sent)
        }
        Body::Multipart { file, parts, trailer } => {
            let mut total = head_len;
            for (part_head, offset, len) in parts {
                out.extend_from_slice(part_head);
                total += part_head.len() as u64;
                if *len <= SMALL_BODY {
                    read_into(file, *offset, *len, out).await?;
                    total += len;
                } else {
                    flush_more(stream, out).await?;
                    total += send_file(stream, file, *offset, *len).await?;
                }
            }
            out.extend_from_slice(trailer);
            flush(stream, out).await?;
            Ok(total + trailer.len() as u64)
        }
    }
}

/// Appends `len` bytes of `file` at `offset` to `out` (a page-cache miss blocks only this task's
/// thread briefly; small bodies are metadata-sized and almost always cached).
async fn read_into(file: &Arc<File>, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let start = out.len();
    out.resize(start + len as usize, 0);
    let mut done = 0usize;
    while done < len as usize {
        let n = file.read_at(&mut out[start + done..], offset + done as u64)?;
        if n == 0 {
            // The file shrank under us (rsync replaced it): stop rather than send garbage.
            out.truncate(start + done);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        done += n;
    }
    Ok(())
}

async fn flush(stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    send_all(stream, out, 0).await
}

/// Flushes with MSG_MORE: the head waits for the first sendfile bytes (nginx's tcp_nopush).
async fn flush_more(stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    send_all(stream, out, libc::MSG_MORE).await
}

async fn send_all(stream: &TcpStream, out: &mut Vec<u8>, flags: i32) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let mut pos = 0;
    while pos < out.len() {
        stream.writable().await?;
        let res = stream.try_io(Interest::WRITABLE, || {
            let rest = &out[pos..];
            // SAFETY: `rest` is a valid buffer for its length; fd is our connected socket.
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), flags | libc::MSG_NOSIGNAL) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    out.clear();
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` with sendfile(2). Before each chunk, a chunk not in
/// the page cache is read ahead on the blocking pool, so a cold file stalls only its own client.
async fn send_file(stream: &TcpStream, file: &Arc<File>, offset: u64, len: u64) -> io::Result<u64> {
    let sock = stream.as_raw_fd();
    let fd = file.as_raw_fd();
    let mut off = offset as libc::off_t;
    let end = offset + len;
    while (off as u64) < end {
        let chunk = ((end - off as u64) as usize).min(SENDFILE_CHUNK);
        if !in_page_cache(fd, off as u64) {
            let f = file.clone();
            let at = off;
            let _ = tokio::task::spawn_blocking(move || {
                // SAFETY: readahead only reads the file into the page cache.
                unsafe { libc::readahead(f.as_raw_fd(), at, chunk) };
            })
            .await;
        }
        stream.writable().await?;
        let res = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: valid fds; `off` is updated by the kernel.
            let n = unsafe { libc::sendfile(sock, fd, &mut off, chunk) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// Whether the page at `offset` is cached: a one-byte read that refuses to wait for the disk.
fn in_page_cache(fd: i32, offset: u64) -> bool {
    let mut byte = [0u8; 1];
    let iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: one valid iovec of one byte.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
    n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
}

fn account(shared: &Shared, peer: SocketAddr, req: &Request, reply: &Reply, sent: u64, started: Instant) {
    let body = if req.method == Method::Head || reply.status == 304 { 0 } else { reply.length };
    shared.metrics.record(reply.project.as_deref(), reply.status, sent);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    shared.access_log.log(&Record {
        client: peer.ip(),
        time: now,
        request_line: req.line.clone(),
        status: reply.status,
        body_bytes: body,
        bytes_sent: sent,
        referer: req.header("referer").unwrap_or("").to_string(),
        user_agent: req.header("user-agent").unwrap_or("").to_string(),
        duration: started.elapsed(),
        tls: None,
    });
}
