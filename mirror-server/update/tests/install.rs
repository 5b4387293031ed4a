//! mirror-update on the host, with real parts: a GPT disk image made by the image crate, an ESP
//! folder, updates signed by gpg with the demo's test key and served over HTTP by the real
//! mirror-server, a read-only root like the image's (mkfs.erofs and its dm-verity hash tree,
//! checked again with veritysetup after the write). What a box would do to its disk and ESP is
//! checked byte for byte, and so is what it must refuse to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use image::disk::{self, MIB};
use image::version::Version;
use sha2::{Digest, Sha256};
use testkit::fixtures::{bytes, write_file, LabProfile};
use testkit::server::MirrorServer;

const V1: &str = "20261201.100000";
const V2: &str = "20261202.100000";

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A box on disk (GPT image, ESP, state, command line) and an update server.
struct World {
    dir: tempfile::TempDir,
    disk: PathBuf,
    layout: disk::Layout,
    esp: PathBuf,
    served: PathBuf,
    server: Option<MirrorServer>,
    gnupg: PathBuf,
    /// The root image of V2 (file system and hash tree), uncompressed.
    root_fs: Vec<u8>,
    /// Its verity root hash and where the hash tree starts.
    root_hash: String,
    hash_offset: u64,
}

impl World {
    /// Running V1 (blessed) from slot A; the server offers V2 whose root holds `payload`.
    fn new(payload: usize, bwlimit_mbit: u32) -> World {
        let dir = tempfile::Builder::new().prefix("mirror-update-").tempdir_in(testkit::target()).unwrap();
        let d = dir.path();
        let gnupg = d.join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        let secret = testkit::workspace().join("tests/fixtures/demo-updates.secret.asc");
        run(Command::new("gpg").env("GNUPGHOME", &gnupg).args(["--batch", "--quiet", "--import"]).arg(&secret));
        let keyring = d.join("keyring.gpg");
        let public = testkit::workspace().join("profiles/keys/demo-updates.asc");
        run(Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--dearmor", "--output"])
            .arg(&keyring)
            .arg(&public));

        let layout = disk::plan(64 * MIB, 48 * MIB);
        let disk_path = d.join("disk.img");
        let mut f =
            std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&disk_path).unwrap();
        f.set_len(layout.disk_size).unwrap();
        disk::write_gpt(&mut f, &layout, "lab", &v(V1).slot_label()).unwrap();
        drop(f);
        let esp = d.join("esp");
        write_file(&esp.join("EFI/Linux").join(v(V1).entry_name(None)), b"uki of v1");
        write_file(
            &d.join("cmdline"),
            format!("root=PARTLABEL={} rw micromirror.version={V1}\n", v(V1).slot_label()).as_bytes(),
        );

        let (root_fs, root_hash, hash_offset) = root_image(d, payload);
        let served = d.join("served");
        std::fs::create_dir_all(&served).unwrap();
        let server = MirrorServer::start(&served, &[]);
        let port = server.port;
        let w = World {
            dir,
            disk: disk_path,
            layout,
            esp,
            served,
            server: Some(server),
            gnupg,
            root_fs,
            root_hash,
            hash_offset,
        };
        w.publish(&[V2]);
        let profile = LabProfile::with_catalog_projects(&["fixture-rpm"]).extra(&format!(
            "[update]\nurl = \"http://127.0.0.1:{port}/\"\nsigning_key = \"update-key.asc\"\nboot_tries = 2\nbwlimit_mbit = {bwlimit_mbit}\n"
        ));
        std::fs::copy(&public, w.dir.path().join("update-key.asc")).unwrap();
        profile.write(w.dir.path());
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Offers `versions` on the server, each with this world's root filesystem and a UKI that
    /// names it, under one signed SHA256SUMS.
    fn publish(&self, versions: &[&str]) {
        let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_pledged_src_size(Some(self.root_fs.len() as u64)).unwrap();
        enc.include_contentsize(true).unwrap();
        std::io::Write::write_all(&mut enc, &self.root_fs).unwrap();
        let zst = enc.finish().unwrap();
        let mut sums = String::new();
        for version in versions {
            let ver = v(version);
            let uki = format!("uki of {version}").into_bytes();
            write_file(&self.served.join(ver.root_artifact()), &zst);
            write_file(&self.served.join(ver.uki_artifact()), &uki);
            sums.push_str(&format!(
                "{}  {}\n{}  {}\n",
                sha256(&uki),
                ver.uki_artifact(),
                sha256(&zst),
                ver.root_artifact()
            ));
        }
        write_file(&self.served.join("SHA256SUMS"), sums.as_bytes());
        self.sign();
    }

    fn sign(&self) {
        run(Command::new("gpg")
            .env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--yes", "--quiet", "--detach-sign", "--output"])
            .arg(self.served.join("SHA256SUMS.gpg"))
            .arg(self.served.join("SHA256SUMS")));
    }

    /// Runs mirror-update on this world's box.
    fn updater(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn command(&self) -> Command {
        let p = |n: &str| self.path(n);
        let mut c = Command::new(env!("CARGO_BIN_EXE_mirror-update"));
        c.arg("--config").arg(p("site.toml")).arg("--disk").arg(&self.disk).arg("--esp").arg(&self.esp);
        c.arg("--state").arg(p("state")).arg("--cmdline").arg(p("cmdline")).arg("--keyring").arg(p("keyring.gpg"));
        c.arg("--no-reboot");
        c
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.esp.join("EFI/Linux"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn labels(&self) -> Vec<String> {
        let table = gpt::GptConfig::new().writable(false).open(&self.disk).unwrap();
        table.partitions().values().map(|p| p.name.clone()).collect()
    }

    fn disk_hash(&self) -> String {
        sha256(&std::fs::read(&self.disk).unwrap())
    }

    fn slot_b(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; self.root_fs.len()];
        std::fs::File::open(&self.disk).unwrap().read_exact_at(&mut buf, self.layout.spare_offset).unwrap();
        buf
    }

    fn status(&self) -> serde_json::Value {
        let out = self.updater(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A small read-only root like the image's: an EROFS holding an empty /etc/machine-id and
/// `payload` random bytes, its dm-verity hash tree after it; with its root hash and hash offset.
fn root_image(dir: &Path, payload: usize) -> (Vec<u8>, String, u64) {
    let tree = dir.join("tree");
    write_file(&tree.join("etc/machine-id"), b"");
    write_file(&tree.join("usr/lib/payload"), &bytes(payload, 9));
    let image = dir.join("root.slot");
    run(Command::new("mkfs.erofs").args(["--quiet", "-zlz4hc"]).arg(&image).arg(&tree));
    let offset = std::fs::metadata(&image).unwrap().len();
    let out =
        run(Command::new("veritysetup").arg("format").arg(format!("--hash-offset={offset}")).arg(&image).arg(&image));
    let said = text(&out);
    let hash = said
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no root hash in {said}"));
    (std::fs::read(&image).unwrap(), hash, offset)
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(out.status.success(), "{c:?}:\n{}", text(&out));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_signed_update_goes_into_the_free_slot_byte_for_byte_and_its_entry_comes_last() {
    let w = World::new(2 << 20, 1000);
    let out = w.updater(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.labels(), ["esp", &v(V1).slot_label(), &v(V2).slot_label()]);
    assert_eq!(w.entries(), [v(V1).entry_name(None), v(V2).entry_name(Some(2))]);
    let uki = std::fs::read(w.esp.join("EFI/Linux").join(v(V2).entry_name(Some(2)))).unwrap();
    assert_eq!(uki, format!("uki of {V2}").as_bytes());
    // The slot holds exactly the signed image (nothing of the box's own is written into a
    // verified root), and its hash tree still verifies every block against the root hash.
    let written = w.slot_b();
    assert!(written == w.root_fs, "the slot holds the signed root image byte for byte");
    let copy = w.path("slot-b.copy");
    std::fs::write(&copy, &written).unwrap();
    let verify = Command::new("veritysetup")
        .arg("verify")
        .arg(format!("--hash-offset={}", w.hash_offset))
        .arg(&copy)
        .arg(&copy)
        .arg(&w.root_hash)
        .output()
        .unwrap();
    assert!(verify.status.success(), "veritysetup verify on the written slot:\n{}", text(&verify));
    let st = w.status();
    assert_eq!((st["other_slot"].as_str(), st["other_version"].as_str()), (Some("pending"), Some(V2)));
    assert_eq!(st["newest_available"].as_str(), Some(V2));
    assert!(st["last_check"].as_i64().is_some() && st["last_error"].is_null(), "{st}");
    let fields = text(&w.updater(&["status", "--fields"]));
    assert!(fields.contains(&format!("image={V1} blessed=yes other=pending:{V2}")), "{fields}");
    // A second check finds nothing new to write: the pending version waits for its reboot.
    let before = w.disk_hash();
    let again = w.updater(&["check"]);
    assert!(again.status.success() && text(&again).contains("Pending"), "{}", text(&again));
    assert_eq!(w.disk_hash(), before);
}

#[test]
fn a_bad_signature_or_a_payload_that_does_not_match_is_refused_before_anything_is_written() {
    let w = World::new(1 << 20, 1000);
    let (disk, entries) = (w.disk_hash(), w.entries());
    let sig = w.served.join("SHA256SUMS.gpg");
    let mut bad = std::fs::read(&sig).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::fs::write(&sig, &bad).unwrap();
    let out = w.updater(&["check"]);
    assert!(!out.status.success() && text(&out).contains("not a valid signature"), "{}", text(&out));
    assert_eq!((w.disk_hash(), w.entries()), (disk.clone(), entries.clone()), "nothing written");
    let st = w.status();
    assert!(st["last_error"].as_str().unwrap_or("").contains("signature"), "{st}");

    // Signed again, but the root image on the server is not the one SHA256SUMS names.
    w.sign();
    let root = w.served.join(v(V2).root_artifact());
    let mut data = std::fs::read(&root).unwrap();
    data[100] ^= 1;
    std::fs::write(&root, &data).unwrap();
    let out = w.updater(&["check"]);
    assert!(!out.status.success() && text(&out).contains("does not match SHA256SUMS"), "{}", text(&out));
    assert_eq!((w.disk_hash(), w.entries()), (disk, entries), "nothing written");
    let downloads: Vec<_> = std::fs::read_dir(w.path("state/downloads")).unwrap().collect();
    assert_eq!(downloads.len(), 1, "only the (verified) UKI is kept: {downloads:?}");
}

#[test]
fn a_download_cut_half_way_resumes_where_it_stopped() {
    // 6 MiB of incompressible payload at 16 Mbit/s: about three seconds to cut into.
    let mut w = World::new(6 << 20, 16);
    let root = w.served.join(v(V2).root_artifact());
    let size = std::fs::metadata(&root).unwrap().len();
    let child = w.command().arg("check").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let partial = w.path("state/downloads").join(format!("{}.partial", sha256(&std::fs::read(&root).unwrap())));
    testkit::wait_for(Duration::from_secs(60), "a third of the download", || {
        (std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) > size / 3).then_some(())
    });
    let port = w.server.as_ref().map(|s| s.port).unwrap();
    drop(w.server.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the cut check fails: {}", text(&out));
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > size / 3 && kept < size, "the partial download is kept: {kept} of {size}");

    let server = MirrorServer::start_on(&w.served, port, &[]);
    let out = w.updater(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("resume_at={kept}")), "{}", text(&out));
    // The second server sent only what was missing.
    let log = testkit::file_with(&server.log, &v(V2).root_artifact(), Duration::from_secs(10));
    let sent: u64 = log
        .lines()
        .filter(|l| l.contains(&v(V2).root_artifact()))
        .filter_map(|l| l.split('"').nth(2)?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(sent, size - kept, "bytes sent after the cut:\n{log}");
    assert_eq!(w.slot_b()[..1024], w.root_fs[..1024]);
}

#[test]
fn a_failed_version_is_forgotten_from_the_esp_and_never_installed_again() {
    let w = World::new(1 << 20, 1000);
    // V2 was installed, booted twice, failed both times: the box came back to V1.
    assert!(w.updater(&["check"]).status.success());
    let d = w.esp.join("EFI/Linux");
    std::fs::rename(d.join(v(V2).entry_name(Some(2))), d.join(format!("micromirror_{V2}+0-2.efi"))).unwrap();
    let before = w.disk_hash();
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("failed here before"), "{}", text(&out));
    assert_eq!(w.entries(), [v(V1).entry_name(None)], "the failed entry is gone");
    assert_eq!(w.disk_hash(), before);
    let st = w.status();
    assert_eq!(st["failed_versions"], serde_json::json!([V2]));
    assert_eq!(st["other_slot"].as_str(), Some("failed"));
    let out = w.updater(&["install", "--version", V2]);
    assert!(!out.status.success() && text(&out).contains("failed its health check"), "{}", text(&out));
    // Another process saves the status it loaded before the failure was found (the boot report
    // and the daemon look at once after a rollback): the failure is still remembered.
    let status_file = w.path("state/status.json");
    let mut stale: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&status_file).unwrap()).unwrap();
    stale["failed_versions"] = serde_json::json!([]);
    std::fs::write(&status_file, stale.to_string()).unwrap();
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("failed here before"), "{}", text(&out));
    assert_eq!(w.disk_hash(), before, "the failed version was not installed again");
}

/// V2 installed, booted, and out of tries (the box is back on V1), with the health verdicts
/// `mirror-update health` recorded on the state partition: V2's 10 minutes ago, then V1's a
/// minute ago. Returns the world and now.
fn after_a_failed_trial(v2_failed: &[&str], v1_failed: &[&str]) -> (World, i64) {
    let w = World::new(1 << 20, 1000);
    assert!(w.updater(&["check"]).status.success());
    let d = w.esp.join("EFI/Linux");
    std::fs::rename(d.join(v(V2).entry_name(Some(2))), d.join(format!("micromirror_{V2}+0-2.efi"))).unwrap();
    let now = jiff::Timestamp::now().as_second();
    for (version, at, failed) in [(V2, now - 600, v2_failed), (V1, now - 60, v1_failed)] {
        let json = serde_json::json!({ "at": at, "failed": failed });
        write_file(&w.path(&format!("state/trials/{version}.json")), json.to_string().as_bytes());
    }
    (w, now)
}

#[test]
fn a_trial_failed_while_the_surroundings_failed_too_is_retried_later_instead_of_failed() {
    // V2 found no link; back on V1, V1's own health check found none either.
    let (w, now) = after_a_failed_trial(&["link", "addresses"], &["link", "addresses", "units"]);
    let out = w.updater(&["check"]);
    let said = text(&out);
    assert!(out.status.success() && said.contains("surroundings") && said.contains("tried again after"), "{said}");
    assert_eq!(w.entries(), [v(V1).entry_name(None)], "its entry is gone until the retry");
    let st = w.status();
    assert_eq!(
        (st["failed_versions"].clone(), st["deferred_versions"].clone()),
        (serde_json::json!([]), serde_json::json!([V2])),
        "{st}"
    );
    assert_eq!(st["other_slot"].as_str(), Some("empty"), "{st}");
    // A day later the deferral is over: installed again by itself.
    let deferred = w.path("state/deferred-versions.json");
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&deferred).unwrap()).unwrap();
    record[V2]["until"] = serde_json::json!(now - 1);
    std::fs::write(&deferred, record.to_string()).unwrap();
    let out = w.updater(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.entries().contains(&v(V2).entry_name(Some(2))), "{:?}", w.entries());
}

#[test]
fn a_trial_the_previous_version_passes_is_failed_for_good() {
    let (w, _) = after_a_failed_trial(&["server"], &[]);
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("failed here before"), "{}", text(&out));
    assert_eq!(w.status()["failed_versions"], serde_json::json!([V2]));
}

#[test]
fn nothing_is_written_while_the_running_version_is_on_trial_and_downgrades_need_asking() {
    let w = World::new(1 << 20, 1000);
    let d = w.esp.join("EFI/Linux");
    std::fs::rename(d.join(v(V1).entry_name(None)), d.join(format!("micromirror_{V1}+1-1.efi"))).unwrap();
    let before = w.disk_hash();
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("proving itself"), "{}", text(&out));
    assert_eq!(w.disk_hash(), before);
    // A failed health check on trial reboots (here: says it would); blessed, it stays.
    let out = w.updater(&["rollback"]);
    assert!(text(&out).contains("MICROMIRROR-ROLLBACK none"), "no other version to boot: {}", text(&out));
    write_file(&d.join("micromirror_20261130.100000.efi"), b"uki of v0");
    let out = w.updater(&["rollback"]);
    assert!(
        text(&out).contains("MICROMIRROR-ROLLBACK rebooting") && text(&out).contains("would reboot"),
        "{}",
        text(&out)
    );

    std::fs::rename(d.join(format!("micromirror_{V1}+1-1.efi")), d.join(v(V1).entry_name(None))).unwrap();
    let out = w.updater(&["rollback"]);
    assert!(text(&out).contains("nothing to go back to"), "{}", text(&out));
    // The server also offers an older version: taken only when asked, and then the running
    // version is marked failed so that the older one boots next.
    let older = "20261101.100000";
    w.publish(&[older, V2]);
    let out = w.updater(&["install", "--version", older]);
    assert!(!out.status.success() && text(&out).contains("--allow-downgrade"), "{}", text(&out));
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains(V2), "the newest, not the older: {}", text(&out));
    let out = w.updater(&["install", "--version", older, "--allow-downgrade"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.entries().contains(&format!("micromirror_{V1}+0-1.efi")), "{:?}", w.entries());
    assert!(w.entries().contains(&v(older).entry_name(Some(2))), "{:?}", w.entries());
    assert_eq!(w.labels()[2], v(older).slot_label());
}

#[test]
fn a_second_updater_waits_for_the_first_instead_of_writing_into_its_download() {
    // 6 MiB of incompressible payload at 16 Mbit/s: about three seconds for the second to start.
    let w = World::new(6 << 20, 16);
    let root = w.served.join(v(V2).root_artifact());
    let size = std::fs::metadata(&root).unwrap().len();
    let partial = w.path("state/downloads").join(format!("{}.partial", sha256(&std::fs::read(&root).unwrap())));
    let first = w.command().arg("check").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    testkit::wait_for(Duration::from_secs(60), "the first download under way", || {
        (std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) > 0).then_some(())
    });
    let first_pid = first.id();
    let second = w.command().arg("check").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(first.status.success(), "the first check: {}", text(&first));
    assert!(second.status.success(), "the second check: {}", text(&second));
    assert!(
        text(&second).contains(&format!("waiting for pid {first_pid} (check)")),
        "the second says whom it waits for: {}",
        text(&second)
    );
    assert!(!text(&first).contains("does not match") && !text(&second).contains("does not match"));
    assert!(size > 0 && w.slot_b()[..1024] == w.root_fs[..1024], "slot B holds V2's root");
    assert_eq!(w.status()["last_error"], serde_json::Value::Null, "{}", w.status());
}

/// An update server that serves SHA256SUMS, its signature and the UKI from `served` honestly,
/// but answers every request for the root with `root_reply(start of the range asked)`: a head,
/// then `body` bytes of zeros (bounded, so a broken updater cannot fill the disk of the test).
/// Counts the requests for the root.
fn hostile_server(
    served: PathBuf,
    port: u16,
    root_reply: fn(u64) -> String,
    body: u64,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let root_requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = root_requests.clone();
    std::thread::spawn(move || {
        // Bounded: a few dozen requests are all a check makes before it gives up.
        for stream in listener.incoming().take(40).flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push(std::mem::take(&mut line));
            }
            let path = head.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").trim_start_matches('/');
            let start = head
                .iter()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string))
                .and_then(|r| r.split('-').next().and_then(|s| s.trim().parse().ok()))
                .unwrap_or(0);
            let mut out = stream;
            if path.ends_with(".root.zst") {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = out.write_all(root_reply(start).as_bytes());
                let zeros = vec![0u8; 1 << 20];
                let mut sent = 0;
                while sent < body && out.write_all(&zeros).is_ok() {
                    sent += zeros.len() as u64;
                }
            } else if let Ok(data) = std::fs::read(served.join(path)) {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len());
                let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(&data));
            } else {
                let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    root_requests
}

#[test]
fn a_hostile_update_server_cannot_make_a_download_bigger_than_its_slot() {
    // The server claims a root of a petabyte and streams zeros: the box refuses at the first
    // reply, before writing a byte.
    let mut w = World::new(1 << 20, 1000);
    let port = w.server.take().map(|s| s.port).unwrap();
    let petabyte = |start: u64| {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/1000000000000000\r\nContent-Length: 999999999999999\r\nConnection: close\r\n\r\n",
            start + (8 << 20) - 1
        )
    };
    hostile_server(w.served.clone(), port, petabyte, 256 << 20);
    let started = std::time::Instant::now();
    let out = w.updater(&["check"]);
    let said = text(&out);
    println!("the hostile server's check, {:?}:\n{said}", started.elapsed());
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("more than root slot") && said.contains("refused"), "{said}");
    let written: u64 = std::fs::read_dir(w.path("state/downloads"))
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    assert!(written <= w.layout.root_size, "{written} bytes written for a {}-byte slot", w.layout.root_size);
    println!("bytes written by the refused download: {written}");
    assert!(w.labels().contains(&image::disk::EMPTY_SLOT_LABEL.to_string()), "the free slot stays free");
}

#[test]
fn a_reply_longer_than_the_range_asked_is_cut_at_the_range() {
    // Each 206 claims the range asked and a plausible total, then sends far more than the
    // range: only the range is kept, and the rest never lands in the file.
    let mut w = World::new(1 << 20, 1000);
    let port = w.server.take().map(|s| s.port).unwrap();
    let honest_head = |start: u64| {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            start + (8 << 20) - 1,
            24u64 << 20
        )
    };
    let root_requests = hostile_server(w.served.clone(), port, honest_head, 64 << 20);
    let out = w.updater(&["check"]);
    let said = text(&out);
    assert!(!out.status.success(), "zeros are not the signed root: {said}");
    assert!(said.contains("does not match SHA256SUMS"), "{said}");
    let partials: Vec<u64> = std::fs::read_dir(w.path("state/downloads"))
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).collect())
        .unwrap_or_default();
    // The whole 24 MiB was fetched as three ranges of 8 MiB (one reply of 64 MiB would have
    // seemed to hold it all).
    assert_eq!(root_requests.load(std::sync::atomic::Ordering::SeqCst), 3, "one request per 8 MiB range");
    assert!(partials.iter().all(|&n| n <= 24 << 20), "{partials:?}");
}

#[test]
fn a_keyring_named_without_a_folder_is_the_file_in_the_current_folder() {
    let w = World::new(1 << 20, 1000);
    let p = |n: &str| w.path(n);
    // As an operator types it in the folder holding the keyring: `--keyring keyring.gpg`.
    let out = Command::new(env!("CARGO_BIN_EXE_mirror-update"))
        .current_dir(w.dir.path())
        .arg("--config")
        .arg(p("site.toml"))
        .arg("--disk")
        .arg(&w.disk)
        .arg("--esp")
        .arg(&w.esp)
        .arg("--state")
        .arg(p("state"))
        .arg("--cmdline")
        .arg(p("cmdline"))
        .args(["--keyring", "keyring.gpg"])
        .args(["--no-reboot", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("No public key"), "{}", text(&out));
}

#[test]
fn an_installed_version_boots_without_the_server_unless_the_list_withdraws_it() {
    let mut w = World::new(1 << 20, 1000);
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("Pending"), "{}", text(&out));
    // The server goes away (down, moved, its certificate expired): V2, installed and verified,
    // still boots in the window; the status says why the server was not asked.
    let port = w.server.take().map(|s| s.port).unwrap();
    let out = w.updater(&["check"]);
    assert!(out.status.success(), "the pending version waits for no server: {}", text(&out));
    assert!(text(&out).contains(&format!("Pending(Version(\"{V2}\"))")), "{}", text(&out));
    let error = w.status()["last_error"].as_str().unwrap_or("").to_string();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "the status names the server it could not ask: {error}");

    // Back, with a signed list that no longer names V2: withdrawn before its reboot.
    let _server = MirrorServer::start_on(&w.served, port, &[]);
    std::fs::remove_file(w.served.join(v(V2).root_artifact())).unwrap();
    std::fs::write(w.served.join("SHA256SUMS"), b"").unwrap();
    w.sign();
    let out = w.updater(&["check"]);
    assert!(out.status.success() && text(&out).contains("withdrawn"), "{}", text(&out));
    assert!(!w.entries().iter().any(|e| e.contains(V2)), "V2's entry is gone: {:?}", w.entries());
    assert!(w.labels().contains(&image::disk::EMPTY_SLOT_LABEL.to_string()), "{:?}", w.labels());
}

#[test]
fn a_status_that_cannot_read_the_esp_says_so_instead_of_guessing() {
    let w = World::new(1 << 20, 1000);
    assert!(w.updater(&["status"]).status.success());
    std::fs::rename(&w.esp, w.path("esp-away")).unwrap();
    let out = w.updater(&["status"]);
    assert!(!out.status.success(), "a status without the ESP is no status: {}", text(&out));
    assert!(text(&out).contains("cannot read this box's boot entries"), "{}", text(&out));
    assert!(!text(&out).contains("on trial"), "{}", text(&out));
}
