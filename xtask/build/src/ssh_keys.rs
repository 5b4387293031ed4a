//! SSH keys a profile names by URL (`access.ssh_key_urls`, e.g. a GitHub `.keys` address):
//! fetched once per build with curl, checked line by line, pinned into the image beside the
//! profile's own keys and listed in the manifest with their digest. Each fetch refreshes a copy
//! in the request's key cache (target/ssh-keys/ for `cargo xtask image`), which serves an offline rebuild (said so); with neither the URL nor a
//! copy the build stops before any slow stage, naming the site, the key and the URL.

use std::path::Path;

use anyhow::{bail, Result};
use schema::profile::LoadedProfile;
use sha2::{Digest, Sha256};

use crate::cmd::{self, cmd};

/// The keys one URL gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub url: String,
    pub keys: Vec<String>,
    pub sha256: String,
    /// Taken from the key cache because the URL could not be reached.
    pub from_cache: bool,
}

/// Every URL of the profile, in order; an error names the site, the key and the URL.
pub fn fetch_all(site: &LoadedProfile, cache: &Path) -> Result<Vec<Fetched>> {
    let name = &site.profile.site.name;
    let mut out = Vec::new();
    for (i, url) in site.profile.access.ssh_key_urls.iter().enumerate() {
        match fetch(url, cache) {
            Ok(f) => {
                if f.from_cache {
                    eprintln!("warning: site {name}: {url} is not reachable; using the copy fetched before ({} keys)", f.keys.len());
                }
                out.push(f);
            }
            Err(e) => bail!(
                "site {name}: access.ssh_key_urls[{i}] {url}: {e:#}\n  fix: check the URL, or build once where it is reachable (the keys are kept in {})",
                cache.display()
            ),
        }
    }
    Ok(out)
}

fn fetch(url: &str, cache: &Path) -> Result<Fetched> {
    let copy = cache.join(format!("{:x}.keys", Sha256::digest(url.as_bytes())));
    let sh = cmd::shell()?;
    let fetched =
        cmd::run(cmd!(sh, "curl --fail --silent --show-error --location --max-time 20 --proto =https,http {url}"));
    let (text, from_cache) = match fetched {
        Ok(text) => {
            let keys = parse(&text)?;
            fs_err::create_dir_all(cache)?;
            // A temporary file of its own: builds side by side may refresh the same copy.
            let mut tmp = tempfile::NamedTempFile::new_in(cache)?;
            std::io::Write::write_all(&mut tmp, (keys.join("\n") + "\n").as_bytes())?;
            tmp.persist(&copy)?;
            (text, false)
        }
        Err(e) => match fs_err::read_to_string(&copy) {
            Ok(text) => (text, true),
            Err(_) => bail!("cannot fetch it and no copy was kept: {e:#}"),
        },
    };
    let keys = parse(&text)?;
    Ok(Fetched {
        url: url.to_string(),
        sha256: format!("{:x}", Sha256::digest(keys.join("\n").as_bytes())),
        keys,
        from_cache,
    })
}

/// One OpenSSH public key per non-empty line; anything else (an HTML error page) is refused.
fn parse(text: &str) -> Result<Vec<String>> {
    let keys: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if keys.is_empty() {
        bail!("it lists no key");
    }
    if let Some(bad) = keys.iter().find(|k| !schema::profile::is_public_key(k)) {
        bail!("it holds a line that is not an OpenSSH public key: {:.60}", bad);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt ops@example";

    /// Serves `body` with `status` to each connection until dropped.
    fn serve(status: &'static str, body: &'static str) -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            // Two requests at most per test: the thread ends by itself.
            for stream in listener.incoming().take(1) {
                let mut s = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ =
                    write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        (port, handle)
    }

    #[test]
    fn keys_by_url_are_fetched_kept_and_served_offline_from_the_copy() {
        let cache = tempfile::tempdir().unwrap();
        let (port, h) = serve(
            "200 OK",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt ops@example\n\n",
        );
        let url = format!("http://127.0.0.1:{port}/ops.keys");
        let first = fetch(&url, cache.path()).unwrap();
        h.join().unwrap();
        assert_eq!((first.keys.clone(), first.from_cache), (vec![KEY.to_string()], false));
        // The server is gone: the copy serves, and says so.
        let again = fetch(&url, cache.path()).unwrap();
        assert!(again.from_cache && again.keys == first.keys && again.sha256 == first.sha256);
    }

    #[test]
    fn an_unreachable_url_without_a_copy_or_a_page_that_is_no_key_list_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = fetch(&format!("http://127.0.0.1:{port}/x.keys"), cache.path()).unwrap_err();
        assert!(format!("{e:#}").contains("no copy was kept"), "{e:#}");
        let (port, h) = serve("200 OK", "<html>Not Found</html>");
        let e = fetch(&format!("http://127.0.0.1:{port}/x.keys"), cache.path()).unwrap_err();
        h.join().unwrap();
        assert!(format!("{e:#}").contains("not an OpenSSH public key"), "{e:#}");
    }
}
