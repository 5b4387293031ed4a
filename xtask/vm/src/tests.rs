use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;

fn lab_network() -> Network {
    Network {
        ipv4_net: "192.0.2.0/24".into(),
        ipv4_host: "192.0.2.1".into(),
        guest: "192.0.2.10".into(),
        ipv6: Some(("2001:db8::".into(), 64, "2001:db8::1".into())),
        dns: Some("192.0.2.3".into()),
    }
}

#[test]
fn the_netdev_forwards_each_port_to_the_guest_and_keeps_the_network_restricted() {
    let s = lab_network().netdev(20000, &["tcp:192.0.2.2:873-tcp:127.0.0.1:8873".into()]);
    assert!(s.starts_with("user,id=wan,restrict=on,net=192.0.2.0/24,host=192.0.2.1,"), "{s}");
    assert!(s.contains(",ipv6-prefix=2001:db8::,ipv6-prefixlen=64,ipv6-host=2001:db8::1"), "{s}");
    assert!(s.contains(",dns=192.0.2.3"), "{s}");
    for (guest, host) in [(22, 20022), (80, 20080), (443, 20443), (873, 20873)] {
        assert!(s.contains(&format!(",hostfwd=tcp:127.0.0.1:{host}-192.0.2.10:{guest}")), "{s}");
    }
    assert!(s.ends_with(",guestfwd=tcp:192.0.2.2:873-tcp:127.0.0.1:8873"), "{s}");
}

/// Whether a process with this id is alive (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A VM on an empty disk: OVMF finds nothing to boot and waits, as long as QEMU runs.
fn firmware_only(dir: &Path) -> Vm {
    let disk = dir.join("empty.img");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let mut config = Config::new(&disk, lab_network(), Serial::File(dir.join("serial.log")));
    config.memory_mib = 128;
    Vm::start(&config).unwrap()
}

#[test]
fn a_dropped_vm_leaves_no_qemu_behind() {
    let dir = tempfile::tempdir().unwrap();
    let vm = firmware_only(dir.path());
    let pid = vm.pid();
    wait_until(Duration::from_secs(30), "QEMU running", || alive(pid));
    assert!(vm.running(), "QEMU ended by itself: {}", vm.console_tail(20));
    drop(vm);
    assert!(!alive(pid), "QEMU {pid} still runs after its Vm was dropped");
}

/// The environment variable that makes the test below, run again as a child, the VM's owner.
const HOLD: &str = "VM_TEST_HOLD_IN";

#[test]
fn a_killed_owner_takes_its_qemu_with_it() {
    if let Some(dir) = std::env::var_os(HOLD) {
        // The child: start a VM, say its pid, and wait to be killed (bounded all the same).
        let dir = PathBuf::from(dir);
        let vm = firmware_only(&dir);
        std::fs::write(dir.join("pid"), vm.pid().to_string()).unwrap();
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::a_killed_owner_takes_its_qemu_with_it", "--test-threads=1"])
        .env(HOLD, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    wait_until(Duration::from_secs(60), "the owner to start QEMU", || pid_file.exists());
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    wait_until(Duration::from_secs(30), "QEMU running", || alive(pid));
    owner.kill().unwrap();
    owner.wait().unwrap();
    wait_until(Duration::from_secs(30), "QEMU gone after its owner was killed", || !alive(pid));
}

/// A disk whose only content is a FAT volume with the UEFI shell's `startup.nsh`: OVMF finds
/// nothing to boot, falls to its built-in shell, and the shell runs `script`.
fn shell_script_disk(dir: &Path, script: &str) -> PathBuf {
    let mut files = [image::esp::EspFile { path: "startup.nsh", data: script.as_bytes() }];
    let volume = image::esp::build_esp(64 << 20, 0x1234_5678, &mut files).unwrap();
    let disk = dir.join("shell.img");
    std::fs::write(&disk, volume).unwrap();
    disk
}

#[test]
fn a_guest_reset_is_a_power_cycle_and_a_power_off_ends_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    // The firmware's own reset (ResetSystem, as the shell's `reset` calls it) on the first start;
    // the file it leaves makes the second start power off instead.
    let script = "echo -off\r\nif exist fs0:\\cycled then\r\n  reset -s\r\nendif\r\n\
                  echo cycled > fs0:\\cycled\r\necho VM-TEST resetting\r\nreset\r\n";
    let disk = shell_script_disk(dir.path(), script);
    let mut config = Config::new(&disk, lab_network(), Serial::File(dir.path().join("serial.log")));
    config.memory_mib = 128;
    config.reboot = true;
    let vm = Vm::start(&config).unwrap();
    let first = vm.pid();
    wait_until(Duration::from_secs(300), "the guest's reset to power-cycle the VM", || vm.power_cycles() == 1);
    assert_ne!(vm.pid(), first, "a power cycle starts a fresh QEMU");
    let status = vm.wait().unwrap();
    assert!(status.success(), "the guest's power-off ends the VM cleanly: {status}");
    let console = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert_eq!(console.matches("VM-TEST resetting").count(), 1, "one reset, then a power-off:\n{console}");
    assert!(console.contains("power cycle 1: a fresh QEMU cold-starts the disk"), "{console}");
}
