//! mirror-server with the real clients that use mirrors: curl (ranges, resume, conditionals),
//! wget -c, apt-get update/download against a Debian-style repository and dnf against a signed
//! createrepo_c repository. Every file must arrive byte for byte.

use std::path::Path;
use std::process::Command;

use testkit::fixtures::bytes;
use testkit::run;
use testkit::server::MirrorServer;

fn curl(args: &[&str]) -> Vec<u8> {
    run(Command::new("curl").args(["-sS", "--max-time", "30"]).args(args)).stdout
}

#[test]
fn curl_ranges_resume_and_conditional_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    std::fs::create_dir_all(root.join("iso")).unwrap();
    let data = bytes(3 << 20, 11);
    std::fs::write(root.join("iso/disk.iso"), &data).unwrap();
    let s = MirrorServer::start(&root, &[]);
    let url = s.url("/iso/disk.iso");

    assert_eq!(curl(&[&url]), data);
    assert_eq!(curl(&["-r", "100-199", &url]), &data[100..200]);
    assert_eq!(curl(&["-r", "-10", &url]), &data[data.len() - 10..]);
    let multi = curl(&["-r", "0-9,20-29", "-i", &url]);
    let text = String::from_utf8_lossy(&multi);
    assert!(
        text.contains("206 Partial Content") && text.contains("multipart/byteranges; boundary="),
        "{}",
        &text[..400.min(text.len())]
    );
    assert!(multi.windows(10).any(|w| w == &data[20..30]));

    let head = String::from_utf8_lossy(&curl(&["-i", "-r", "5000000-", &url])).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 416") && head.contains(&format!("Content-Range: bytes */{}", data.len())),
        "{head}"
    );

    // Resume: a partial file completed with -C -.
    let partial = dir.path().join("disk.iso");
    std::fs::write(&partial, &data[..1_000_000]).unwrap();
    run(Command::new("curl").args(["-sS", "-C", "-", "-o"]).arg(&partial).arg(&url));
    assert_eq!(std::fs::read(&partial).unwrap(), data);

    // Conditionals: -z uses the file's time; If-None-Match the ETag.
    let code = |args: &[&str]| {
        String::from_utf8_lossy(&curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args, &[url.as_str()]].concat()))
            .into_owned()
    };
    let mtime = std::fs::metadata(root.join("iso/disk.iso")).unwrap().modified().unwrap();
    std::fs::File::options().write(true).open(&partial).unwrap().set_modified(mtime).unwrap();
    assert_eq!(code(&["-z", partial.to_str().unwrap()]), "304");
    let headers = String::from_utf8_lossy(&curl(&["-sI", &url])).into_owned();
    let etag = headers.lines().find_map(|l| l.strip_prefix("ETag: ")).unwrap().trim().to_string();
    assert_eq!(code(&["-H", &format!("If-None-Match: {etag}")]), "304");
    assert_eq!(code(&["-H", "If-None-Match: \"other\""]), "200");
    assert_eq!(code(&["-H", "If-Range: \"stale\"", "-r", "0-9"]), "200");
    assert_eq!(code(&["-H", &format!("If-Range: {etag}"), "-r", "0-9"]), "206");
}

#[test]
fn wget_continues_a_partial_download() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    std::fs::create_dir_all(&root).unwrap();
    let data = bytes(2 << 20, 5);
    std::fs::write(root.join("big.img"), &data).unwrap();
    let s = MirrorServer::start(&root, &[]);
    let out = dir.path().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("big.img"), &data[..12345]).unwrap();
    run(Command::new("wget").arg("-q").arg("-c").arg(s.url("/big.img")).current_dir(&out));
    assert_eq!(std::fs::read(out.join("big.img")).unwrap(), data);
}

#[test]
fn files_rsync_replaces_or_deletes_are_served_new_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let (root, upstream) = (dir.path().join("mirror"), dir.path().join("upstream"));
    std::fs::create_dir_all(root.join("fedora/repodata")).unwrap();
    std::fs::create_dir_all(upstream.join("repodata")).unwrap();
    let s = MirrorServer::start(&root, &[]);
    let url = s.url("/fedora/repodata/repomd.xml");
    let sync = || {
        run(Command::new("rsync")
            .args(["-rlt", "--ignore-times", "--delete", "--delay-updates"])
            .arg(format!("{}/", upstream.display()))
            .arg(root.join("fedora")));
    };
    // Same length and the same mtime every round, so only the bytes tell versions apart
    // (the ETag cannot): a server answering from a stale open file fails here.
    let stamp = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for round in 0..20u64 {
        let version = bytes(5000, round);
        let f = upstream.join("repodata/repomd.xml");
        std::fs::write(&f, &version).unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(stamp).unwrap();
        sync();
        assert_eq!(std::fs::read(root.join("fedora/repodata/repomd.xml")).unwrap(), version, "rsync put it in place");
        assert_eq!(curl(&[&url]), version, "round {round}: the file rsync just put in place");
        assert_eq!(curl(&[&url]), version, "round {round}: asked again");
    }
    // Without any further request, the replaced versions are closed (their space freed).
    let deleted_open = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid().as_raw_nonzero()))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy().ends_with(" (deleted)"))
            .count()
    };
    let replaced = upstream.join("repodata/repomd.xml");
    std::fs::write(&replaced, b"one more version").unwrap();
    sync();
    let start = std::time::Instant::now();
    while deleted_open() > 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "mirror-server keeps replaced files open");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::remove_file(&replaced).unwrap();
    sync();
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(String::from_utf8_lossy(&code), "404", "a file rsync deleted is gone at once");
}

fn make_deb_repo(repo: &Path) {
    let pkg = repo.join("build/hello-mm");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/hello-mm")).unwrap();
    std::fs::write(pkg.join("DEBIAN/control"), "Package: hello-mm\nVersion: 1.0\nArchitecture: all\nMaintainer: Test <t@example.net>\nDescription: micro mirror test package\n").unwrap();
    std::fs::write(pkg.join("usr/share/hello-mm/README"), bytes(50_000, 9)).unwrap();
    let pool = repo.join("debian");
    std::fs::create_dir_all(&pool).unwrap();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&pkg)
        .arg(pool.join("hello-mm_1.0_all.deb")));
    let packages = run(Command::new("dpkg-scanpackages").args(["-m", "."]).current_dir(&pool)).stdout;
    std::fs::write(pool.join("Packages"), &packages).unwrap();
    run(Command::new("gzip").args(["-k", "-9", "Packages"]).current_dir(&pool));
    let release = run(Command::new("apt-ftparchive").arg("release").arg(".").current_dir(&pool)).stdout;
    std::fs::write(pool.join("Release"), release).unwrap();
}

#[test]
fn apt_updates_and_downloads_from_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    make_deb_repo(&root);
    let s = MirrorServer::start(&root, &[]);
    let apt = dir.path().join("apt");
    for d in ["state/lists/partial", "cache/archives/partial", "etc"] {
        std::fs::create_dir_all(apt.join(d)).unwrap();
    }
    std::fs::write(apt.join("etc/sources.list"), format!("deb [trusted=yes] {} ./\n", s.url("/debian/"))).unwrap();
    let opts = |c: &mut Command| {
        c.arg("-o").arg(format!("Dir::Etc::SourceList={}", apt.join("etc/sources.list").display()));
        c.args([
            "-o",
            "Dir::Etc::SourceParts=/nonexistent",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Acquire::Languages=none",
        ]);
        c.arg("-o").arg(format!("Dir::State={}", apt.join("state").display()));
        c.arg("-o").arg(format!("Dir::Cache={}", apt.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    let out = run(update.arg("update"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Err:") && text.contains("Packages"), "{text}");
    let mut download = Command::new("apt-get");
    opts(&mut download);
    run(download.args(["download", "hello-mm"]).current_dir(dir.path()));
    assert_eq!(
        std::fs::read(dir.path().join("hello-mm_1.0_all.deb")).unwrap(),
        std::fs::read(root.join("debian/hello-mm_1.0_all.deb")).unwrap()
    );
}

#[test]
fn dnf_installs_a_signed_package_from_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("mirror/rpms");
    let script = testkit::workspace().join("tests/fixtures/make-rpm-repo.sh");
    run(Command::new("sh").arg(&script).arg(&repo).arg("--sign").arg("mm-hello"));
    let s = MirrorServer::start(&dir.path().join("mirror"), &[]);
    let installroot = dir.path().join("root");
    let reposdir = dir.path().join("repos");
    std::fs::create_dir_all(&reposdir).unwrap();
    let url = s.url("/rpms");
    std::fs::write(
        reposdir.join("mm.repo"),
        format!("[mm]\nname=mm\nbaseurl={url}\ngpgcheck=1\ngpgkey={url}/RPM-GPG-KEY-test\n"),
    )
    .unwrap();
    run(Command::new("dnf")
        .args(["-y", "-q", "--releasever=9", "--setopt=install_weak_deps=0"])
        .arg(format!("--installroot={}", installroot.display()))
        .arg(format!("--setopt=reposdir={}", reposdir.display()))
        .arg(format!("--setopt=cachedir={}", dir.path().join("cache").display()))
        .args(["install", "mm-hello"]));
    assert_eq!(std::fs::read_to_string(installroot.join("usr/share/mm-test/mm-hello")).unwrap(), "mm-hello\n");
    let log = testkit::file_with(&s.log, "repomd.xml HTTP/1.1\" 200", std::time::Duration::from_secs(3));
    assert!(log.contains("repomd.xml HTTP/1.1\" 200"), "{log}");
}
