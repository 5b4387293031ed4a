use super::*;

const ALMA9: &str = include_str!("alma9-swap-last.txt");

#[test]
fn a_fleet_box_s_report_is_read_whatever_the_order_of_its_partitions() {
    let s = parse(ALMA9).unwrap();
    assert_eq!((s.disk.as_str(), s.partition_table.as_str(), s.sector_size), ("/dev/sda", "gpt", 512));
    let mounts: Vec<_> = s.partitions.iter().map(|p| p.mountpoint.as_deref().unwrap_or("-")).collect();
    assert_eq!(mounts, ["/boot/efi", "/boot", "/", "[SWAP]"]);
    assert_eq!(s.partitions[3].fstype.as_deref(), Some("swap"));
    assert_eq!(s.partitions[3].bytes(512), 2 << 30);
    assert_eq!(s.active_swap, ["/dev/sda4"]);
    assert!(s.uefi);
    assert_eq!(s.secure_boot, Some(false));
    assert_eq!(s.memory_bytes, 7_863_412 * 1024);
    assert_eq!((s.data_used, s.data_owner.as_deref()), (Some(1_612_345_678_848), Some("mirror")));
    let nic = &s.nics[0];
    assert_eq!((nic.name.as_str(), nic.mac.as_str(), nic.driver.as_str()), ("enp1s0", "00:68:eb:aa:bb:cc", "r8169"));
    assert_eq!(nic.pci_path, "pci-0000:01:00.0");
    assert_eq!(nic.addresses, ["192.0.2.50/24", "2001:db8:470::50/64"], "global addresses only");
    assert_eq!(s.gateway4.as_deref(), Some("192.0.2.1"));
    assert_eq!(s.gateway6.as_deref(), Some("2001:db8:470::1"));
    assert_eq!(s.dns, ["2001:4860:4860::8888", "8.8.8.8"]);
    assert_eq!(s.ssh_port, Some(22));
    assert_eq!(s.os, "AlmaLinux 9.5 (Teal Serval)");
    assert_eq!(s.authorized_keys.len(), 1);
}

#[test]
fn a_report_cut_short_is_an_error_naming_what_is_missing() {
    let cut = &ALMA9[..ALMA9.find("=== nics").unwrap()];
    let e = parse(cut).unwrap_err().to_string();
    assert!(e.contains("`end`"), "{e}");
    let garbled = ALMA9.replace("\"partitiontable\"", "partitiontable");
    let e = parse(&garbled).unwrap_err().to_string();
    assert!(e.contains("`sfdisk`"), "{e}");
}

#[test]
fn secure_boot_on_and_a_firmware_that_does_not_say_are_told_apart() {
    let on = ALMA9.replace("   6   0   0   0   0", "   6   0   0   0   1");
    assert_eq!(parse(&on).unwrap().secure_boot, Some(true));
    let silent = ALMA9.replace("   6   0   0   0   0", "absent");
    assert_eq!(parse(&silent).unwrap().secure_boot, None);
}
