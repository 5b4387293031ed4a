//! `cargo xtask flash`: writes only what the image holds, zeroes the rest of its span (old data
//! on the target must not show through), verifies by reading back, and refuses unsafe targets.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;

#[test]
fn flash_writes_and_verifies_and_refuses_unsafe_targets() {
    let image = e2e::build_image("demo").unwrap();
    let image_len = std::fs::metadata(&image).unwrap().len();
    let dir = tempfile::tempdir().unwrap();

    // A "disk" full of old data where the image has holes.
    let disk = dir.path().join("disk.img");
    let mut f = std::fs::File::create(&disk).unwrap();
    f.set_len(image_len + (512 << 20)).unwrap();
    for mib in [0u64, 300, 1000, 2000] {
        f.seek(SeekFrom::Start(mib << 20)).unwrap();
        f.write_all(&vec![0xA5u8; 4 << 20]).unwrap();
    }
    drop(f);
    let out = e2e::xtask(&["flash", "--site", "demo", "--device", disk.to_str().unwrap(), "--yes"]).unwrap();
    assert!(out.contains("matches"), "{out}");
    let mut a = std::fs::File::open(&image).unwrap();
    let mut b = std::fs::File::open(&disk).unwrap();
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for mib in 0..image_len >> 20 {
        a.read_exact(&mut x).unwrap();
        b.read_exact(&mut y).unwrap();
        assert!(x == y, "MiB {mib} differs after flashing");
    }

    // Refusals: the disk this system runs from, and a disk smaller than the image.
    let root = Command::new("findmnt").args(["-no", "SOURCE", "/"]).output().unwrap();
    let root_dev = String::from_utf8_lossy(&root.stdout).trim().to_string();
    if root_dev.starts_with("/dev/") {
        let err = e2e::xtask(&["flash", "--site", "demo", "--device", &root_dev, "--yes"]).unwrap_err().to_string();
        assert!(err.contains("refusing") || err.contains("mounted") || err.contains("partition"), "{err}");
    }
    let small = dir.path().join("small.img");
    std::fs::File::create(&small).unwrap().set_len(image_len / 2).unwrap();
    let err =
        e2e::xtask(&["flash", "--site", "demo", "--device", small.to_str().unwrap(), "--yes"]).unwrap_err().to_string();
    assert!(err.contains("the image needs"), "{err}");
    // Without --yes and without a terminal nothing is written.
    let err = e2e::xtask(&["flash", "--site", "demo", "--device", disk.to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("pass --yes"), "{err}");
}
