//! Real peers for the benchmarks that are not the peer being measured: an rsync daemon as the
//! upstream (the tests have theirs in the test kit, which xtask does not depend on).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

pub struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An rsync daemon on 127.0.0.1 serving one module; returns it and its port.
pub fn rsync_daemon(work: &Path, module: &str, path: &Path) -> Result<(Peer, u16)> {
    rsync_daemon_logged(work, module, path).map(|(peer, port, _)| (peer, port))
}

/// An rsync daemon on 127.0.0.1 serving one module, logging each connection (its bytes sent)
/// into the returned file; several may share `work`.
pub fn rsync_daemon_logged(work: &Path, module: &str, path: &Path) -> Result<(Peer, u16, PathBuf)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (conf, log) = (work.join(format!("rsyncd-{port}.conf")), work.join(format!("rsyncd-{port}.log")));
    fs_err::write(
        &conf,
        format!(
            "port = {port}\naddress = 127.0.0.1\nuse chroot = no\nnumeric ids = yes\npid file = {}\nlog file = {}\n\
             [{module}]\n  path = {}\n  read only = yes\n",
            work.join(format!("rsyncd-{port}.pid")).display(),
            log.display(),
            path.display()
        ),
    )?;
    let child = Command::new("rsync")
        .arg("--daemon")
        .arg("--no-detach")
        .arg(format!("--config={}", conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("rsync daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((Peer(child), port, log))
}
