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

/// A send that stopped part-way (the client went away, the file shrank): how many bytes went
/// out before it did, for the access log and the counters, and why it stopped.
#[derive(Debug)]
pub struct Cut {
    pub sent: u64,
    pub error: io::Error,
}

impl Cut {
    fn at(sent: u64, error: io::Error) -> Cut {
        Cut { sent, error }
    }
}

// Connections run on current-thread runtimes and the implementors are concrete, so the futures'
// auto traits are known where they are spawned; no Send bound is needed in the trait.
#[allow(async_fn_in_trait)]
pub trait Wire {
    /// Reads more request bytes into `buf`; 0 at end of stream.
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Sends all of `out` and clears it; `more`: a body follows at once (hold the segment).
    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> Result<(), Cut>;
    /// Sends `len` bytes of `file` from `offset`.
    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> Result<(), Cut>;
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

    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> Result<(), Cut> {
        // MSG_MORE: the head waits for the first sendfile bytes (nginx's tcp_nopush).
        let flags = if more { SendFlags::MORE } else { SendFlags::empty() } | SendFlags::NOSIGNAL;
        let mut pos = 0;
        while pos < out.len() {
            self.writable().await.map_err(|e| Cut::at(pos as u64, e))?;
            let res = self.try_io(Interest::WRITABLE, || Ok(rustix::net::send(&*self, &out[pos..], flags)?));
            match res {
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Cut::at(pos as u64, e)),
            }
        }
        out.clear();
        Ok(())
    }

    /// sendfile(2) in chunks; bytes not in the page cache are first read in on the blocking
    /// pool, so a cold file stalls only its own client.
    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> Result<(), Cut> {
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
            self.writable().await.map_err(|e| Cut::at(off - offset, e))?;
            // The kernel moves `off` on by what it sent.
            let res =
                self.try_io(Interest::WRITABLE, || Ok(rustix::fs::sendfile(&*self, &**file, Some(&mut off), chunk)?));
            match res {
                Ok(0) => return Err(Cut::at(off - offset, pagecache::shrank())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Cut::at(off - offset, e)),
            }
        }
        Ok(())
    }

    fn tls_protocol(&self) -> Option<&'static str> {
        None
    }
}

/// write_all that says how far it got when it fails (the plaintext TLS accepted).
async fn write_counted(stream: &mut TlsStream<TcpStream>, data: &[u8]) -> Result<(), (u64, io::Error)> {
    let mut pos = 0;
    while pos < data.len() {
        match stream.write(&data[pos..]).await {
            Ok(0) => return Err((pos as u64, io::ErrorKind::WriteZero.into())),
            Ok(n) => pos += n,
            Err(e) => return Err((pos as u64, e)),
        }
    }
    Ok(())
}

impl Wire for TlsStream<TcpStream> {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        reserve_for_read(buf);
        self.read_buf(buf).await
    }

    async fn send(&mut self, out: &mut Vec<u8>, more: bool) -> Result<(), Cut> {
        write_counted(self, out).await.map_err(|(n, e)| Cut::at(n, e))?;
        if !more {
            self.flush().await.map_err(|e| Cut::at(out.len() as u64, e))?;
        }
        out.clear();
        Ok(())
    }

    async fn send_file(&mut self, file: &Arc<File>, offset: u64, len: u64) -> Result<(), Cut> {
        let mut buf = Vec::with_capacity(TLS_CHUNK.min(len as usize));
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let want = (end - at).min(TLS_CHUNK as u64);
            let sent = at - offset;
            buf.clear();
            pagecache::read_into(file, at, want, &mut buf).await.map_err(|e| Cut::at(sent, e))?;
            write_counted(self, &buf).await.map_err(|(n, e)| Cut::at(sent + n, e))?;
            at += want;
        }
        self.flush().await.map_err(|e| Cut::at(len, e))?;
        Ok(())
    }

    fn tls_protocol(&self) -> Option<&'static str> {
        match self.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
            Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
            _ => Some("TLS"),
        }
    }
}
