//! The byte stream under one connection: plain TCP, where heads go out with send(2) and bodies
//! with sendfile(2), or TLS (rustls), where bodies are read from the file and encrypted in user
//! space. `conn` speaks HTTP over either without knowing which.

use std::fs::File;
use std::io;
use std::sync::Arc;

use rustix::net::SendFlags;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::pagecache;

/// One sendfile call sends at most this much, so other connections get their turn.
const SENDFILE_CHUNK: usize = 4 << 20;
/// TLS bodies are read in chunks of this size (four full TLS records).
const TLS_CHUNK: usize = 64 << 10;

// Connections run on current-thread runtimes and the implementors are concrete, so the futures'
// auto traits are known where they are spawned; no Send bound is needed in the trait.
#[allow(async_fn_in_trait)]
pub trait Wire {
    /// Reads more request bytes into `buf`; 0 at end of stream.
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Sends all of `out` and clears it; `more`: a body follows at once (hold the segment).
    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> io::Result<()>;
    /// Sends `len` bytes of `file` from `offset`.
    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> io::Result<u64>;
    /// The TLS protocol version for the access log, or None for plain HTTP.
    fn tls_protocol(&self) -> Option<&'static str>;
}

fn reserve_for_read(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(4096);
    }
}

impl Wire for TcpStream {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        reserve_for_read(buf);
        self.read_buf(buf).await
    }

    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> io::Result<()> {
        // MSG_MORE: the head waits for the first sendfile bytes (nginx's tcp_nopush).
        let flags = if more { SendFlags::MORE } else { SendFlags::empty() } | SendFlags::NOSIGNAL;
        let mut pos = 0;
        while pos < out.len() {
            self.writable().await?;
            let res = self.try_io(Interest::WRITABLE, || Ok(rustix::net::send(&*self, &out[pos..], flags)?));
            match res {
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        out.clear();
        Ok(())
    }

    /// sendfile(2) in chunks; bytes not in the page cache are first read in on the blocking
    /// pool, so a cold file stalls only its own client.
    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> io::Result<u64> {
        let end = offset + len;
        let mut off = offset;
        // Bytes before `warm_until` are known to be cached. The known stretch slides ahead a
        // chunk at a time, so each byte is checked once and every call may send a full chunk.
        let mut warm_until = offset;
        while off < end {
            if warm_until < end && warm_until - off < SENDFILE_CHUNK as u64 {
                let ahead = ((end - warm_until) as usize).min(SENDFILE_CHUNK);
                pagecache::warm(file, warm_until, ahead).await;
                warm_until += ahead as u64;
            }
            let chunk = ((warm_until - off) as usize).min(SENDFILE_CHUNK);
            self.writable().await?;
            // The kernel moves `off` on by what it sent.
            let res =
                self.try_io(Interest::WRITABLE, || Ok(rustix::fs::sendfile(&*self, &**file, Some(&mut off), chunk)?));
            match res {
                Ok(0) => return Err(pagecache::shrank()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(len)
    }

    fn tls_protocol(&self) -> Option<&'static str> {
        None
    }
}

impl Wire for TlsStream<TcpStream> {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        reserve_for_read(buf);
        self.read_buf(buf).await
    }

    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> io::Result<()> {
        self.write_all(out).await?;
        if !more {
            self.flush().await?;
        }
        out.clear();
        Ok(())
    }

    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> io::Result<u64> {
        let mut buf = Vec::with_capacity(TLS_CHUNK.min(len as usize));
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let want = (end - at).min(TLS_CHUNK as u64);
            buf.clear();
            pagecache::read_into(file, at, want, &mut buf).await?;
            self.write_all(&buf).await?;
            at += want;
        }
        self.flush().await?;
        Ok(len)
    }

    fn tls_protocol(&self) -> Option<&'static str> {
        match self.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
            Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
            _ => Some("TLS"),
        }
    }
}
