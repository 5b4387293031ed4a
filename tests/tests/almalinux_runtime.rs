//! The AlmaLinux image's runtime configuration, loaded by the real programs this machine has
//! (AlmaLinux's repositories are out of reach, so its image never boots here): the
//! NetworkManager keyfiles `cargo xtask render` writes (`build::overlay::render_site`) are loaded by Debian's NetworkManager
//! (1.42, as AlmaLinux 9's) in a network namespace of its own, with a private D-Bus, on a veth
//! named wan0; the rendered chrony.conf is parsed by chronyd. The bond's keyfiles are loaded and
//! read back (this kernel has no bonding driver to activate them).

use std::path::Path;
use std::process::Command;

fn render(site: &str, out: &Path) {
    let mut loaded = build::load::load(&e2e::workspace().join("profiles"), site).unwrap();
    loaded.profile.base.distro = schema::profile::Distro::Almalinux9;
    build::overlay::render_site(&loaded, out).unwrap();
}

/// Runs `script` in a new network and mount namespace after starting a D-Bus system bus and
/// NetworkManager on the keyfiles in `conns`; returns what the script printed.
fn with_network_manager(conns: &Path, script: &str) -> String {
    let work = conns.parent().unwrap();
    let conf = work.join("nm.conf");
    std::fs::write(
        &conf,
        format!("[main]\nplugins=keyfile\nno-auto-default=*\ndns=none\n[keyfile]\npath={}\n", conns.display()),
    )
    .unwrap();
    let log = work.join("nm.log");
    let setup = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
mount -t sysfs sysfs /sys
mkdir -p /run/dbus /run/NetworkManager /run/udev/data
mount -t tmpfs tmpfs /var/lib/NetworkManager
ip link set lo up
ip link add wan0 address 52:54:00:aa:00:01 type veth peer name peer0 address 52:54:00:aa:00:02
ip link set peer0 up
# No udevd here: mark the links initialised as udev would, so NetworkManager manages them.
for dev in wan0 peer0; do printf 'I:1\n' > /run/udev/data/n$(cat /sys/class/net/$dev/ifindex); done
dbus-daemon --system --fork --nopidfile
NetworkManager --no-daemon --debug --config={conf} > {log} 2>&1 &
nm=$!
trap 'kill $nm' EXIT
for i in $(seq 1 100); do nmcli -t general >/dev/null 2>&1 && break; sleep 0.1; done
nmcli device set wan0 managed yes
{script}
"#,
        conf = conf.display(),
        log = log.display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "sh", "-c", &setup])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let nm_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{text}\nNetworkManager said:\n{nm_log}");
    text
}

fn keyfiles(rendered: &Path, work: &Path) -> std::path::PathBuf {
    let conns = work.join("conns");
    std::fs::create_dir_all(&conns).unwrap();
    for entry in std::fs::read_dir(rendered.join("etc/NetworkManager/system-connections")).unwrap() {
        let path = entry.unwrap().path();
        let dest = conns.join(path.file_name().unwrap());
        std::fs::copy(&path, &dest).unwrap();
        // NetworkManager ignores keyfiles others can read.
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    conns
}

#[test]
fn network_manager_brings_wan0_up_with_the_profile_s_addresses_routes_and_dns() {
    let dir = tempfile::tempdir().unwrap();
    render("demo", &dir.path().join("rendered"));
    let conns = keyfiles(&dir.path().join("rendered"), dir.path());
    let out = with_network_manager(
        &conns,
        r#"for i in $(seq 1 100); do ip -o addr show wan0 | grep -q 192.0.2.10/24 && break; sleep 0.1; done
echo "ADDR $(ip -o addr show wan0 | awk '{print $4}' | tr '\n' ' ')"
echo "ROUTE4 $(ip route show default)"
for i in $(seq 1 100); do ip -6 route show default | grep -q via && break; sleep 0.1; done
echo "ROUTE6 $(ip -6 route show default)"
echo "DNS $(nmcli -g IP4.DNS device show wan0)"
echo "STATE $(nmcli -g GENERAL.STATE device show wan0)""#,
    );
    let line =
        |tag: &str| out.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("no {tag}: {out}")).to_string();
    assert!(line("ADDR").contains("192.0.2.10/24") && line("ADDR").contains("2001:db8:0:1::10/64"), "{out}");
    assert!(line("ROUTE4").contains("default via 192.0.2.1 dev wan0"), "{out}");
    assert!(line("ROUTE6").contains("default via 2001:db8:0:1::1 dev wan0"), "{out}");
    assert!(line("DNS").contains("192.0.2.3"), "{out}");
    assert!(line("STATE").contains("connected"), "{out}");
}

#[test]
fn network_manager_reads_the_lacp_bond_and_its_two_members_as_written() {
    let dir = tempfile::tempdir().unwrap();
    render("lab-lacp", &dir.path().join("rendered"));
    let conns = keyfiles(&dir.path().join("rendered"), dir.path());
    let out = with_network_manager(
        &conns,
        r#"echo "BOND $(nmcli -g connection.type,bond.options,ipv4.addresses,ipv4.gateway connection show wan0 | tr '\n' '|')"
for m in wan0-member0 wan0-member1; do echo "MEMBER $m $(nmcli -g connection.master,connection.slave-type,802-3-ethernet.mac-address connection show $m | tr '\n' '|')"; done"#,
    );
    let bond = out.lines().find(|l| l.starts_with("BOND")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        bond.contains("bond") && bond.contains("mode=802.3ad") && bond.contains("xmit_hash_policy=layer3+4"),
        "{out}"
    );
    assert!(bond.contains("198.51.100.20/31") && bond.contains("198.51.100.21"), "{out}");
    for (m, mac) in [("wan0-member0", "52:54:00:AA:00:01"), ("wan0-member1", "52:54:00:AA:00:02")] {
        let line = out.lines().find(|l| l.starts_with(&format!("MEMBER {m}"))).unwrap_or_else(|| panic!("{out}"));
        // nmcli -g escapes the colons of a MAC address.
        assert!(line.contains("wan0|bond|") && line.replace('\\', "").to_uppercase().contains(mac), "{out}");
    }
}

#[test]
fn chronyd_parses_the_rendered_chrony_conf() {
    let dir = tempfile::tempdir().unwrap();
    render("demo", &dir.path().join("rendered"));
    let conf = dir.path().join("rendered/etc/chrony.conf");
    let out = Command::new("chronyd").arg("-p").arg("-f").arg(&conf).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("makestep 1.0 3") && text.contains("pool 2.almalinux.pool.ntp.org iburst"), "{text}");
}
