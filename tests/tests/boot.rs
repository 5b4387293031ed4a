//! The demo image boots under QEMU (OVMF, TCG) through systemd-boot, reaches multi-user with no
//! failed unit and no ordering cycle, passes its health check, makes its state partition and
//! grows its data partition into a 64 GiB disk, serves HTTP, and boots again with the table
//! unchanged.

use std::time::Duration;

use e2e::{disk_copy, field, http_when_ready, partitions, sgdisk_verify, Vm};

const DISK: u64 = 64 << 30;
const BOOT_LIMIT: Duration = Duration::from_secs(300);

fn assert_clean_boot(vm: &mut Vm) -> String {
    let line = vm.wait_for_line("MICROMIRROR-BOOT", BOOT_LIMIT).unwrap();
    println!("{line}");
    let console = vm.console();
    assert_eq!(field(&line, "state"), Some("running"), "{line}\n{}", e2e::tail(&console, 60));
    assert_eq!(field(&line, "failed"), Some("0"), "{line}\n{}", e2e::tail(&console, 60));
    assert_eq!(field(&line, "restarts"), Some("0"), "{line}\n{}", e2e::tail(&console, 60));
    assert_eq!(field(&line, "cycles"), Some("0"), "an ordering cycle dropped a unit: {line}");
    assert_eq!(field(&line, "blessed"), Some("yes"), "the shipped version boots blessed: {line}");
    assert_eq!(field(&line, "other"), Some("empty"), "{line}");
    assert!(console.contains("MICROMIRROR-HEALTH ok"), "{}", e2e::tail(&console, 60));
    line
}

#[test]
fn demo_boots_grows_its_data_partition_serves_http_and_reboots_unchanged() {
    let image = e2e::build_test_image().unwrap();
    let report = sgdisk_verify(&image).unwrap();
    assert!(report.contains("No problems found"), "sgdisk -v on the image:\n{report}");
    let table = partitions(&image).unwrap();
    let labels: Vec<&str> = table.iter().map(|(l, _, _)| l.as_str()).collect();
    assert_eq!(labels.len(), 3, "the image carries the ESP and two root slots: {table:?}");
    assert!(labels[1].starts_with("micromirror_") && labels[2] == "_empty", "{table:?}");
    assert_eq!(table[1].2, table[2].2, "both root slots are the same size");

    let work = tempfile::Builder::new().prefix("boot-").tempdir_in(e2e::target()).unwrap();
    let disk = work.path().join("demo-64g.img");
    disk_copy(&image, &disk, DISK).unwrap();

    // First boot: repart makes the data partition, everything starts, HTTP answers.
    let mut vm = Vm::boot("demo", &disk, &e2e::console_log("boot-1.log"), &[]).unwrap();
    let line = assert_clean_boot(&mut vm);
    let data = field(&line, "data").unwrap_or("none");
    assert!(data.starts_with("/dev/vda5:"), "data partition not mounted at /srv/mirror: {line}");
    let (status, head, _) = http_when_ready(vm.port(80), "/", Duration::from_secs(60)).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Server: mirror-server"), "{head}");
    vm.stop();

    let after_first = partitions(&disk).unwrap();
    assert_eq!(after_first.len(), 5, "{after_first:?}");
    assert_eq!((after_first[3].0.as_str(), after_first[3].2 * 512), ("mm-state", 4 << 30), "{after_first:?}");
    let (label, start, size) = &after_first[4];
    assert_eq!(label, "mirror-data");
    let end_bytes = (start + size) * 512;
    assert!(
        end_bytes > DISK - (2 << 20),
        "data partition should reach the end of the disk: ends at {end_bytes} of {DISK}"
    );
    let report = sgdisk_verify(&disk).unwrap();
    assert!(report.contains("No problems found"), "sgdisk -v after first boot:\n{report}");

    // Second boot of the same disk: clean, and repart leaves the table alone.
    let mut vm = Vm::boot("demo", &disk, &e2e::console_log("boot-2.log"), &[]).unwrap();
    let line = assert_clean_boot(&mut vm);
    assert!(field(&line, "data").unwrap_or("").starts_with("/dev/vda5:"), "{line}");
    let (status, _, _) = http_when_ready(vm.port(80), "/", Duration::from_secs(60)).unwrap();
    assert_eq!(status, 200);
    vm.stop();
    assert_eq!(partitions(&disk).unwrap(), after_first, "the second boot changed the partition table");
}
