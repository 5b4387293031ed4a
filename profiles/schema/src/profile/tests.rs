use super::*;
use crate::catalog::Catalog;
use crate::diagnostics::Severity;

const GOOD: &str = r#"
[site]
name = "lab"
hostname = "lab.mm.example.net"
sponsor_name = "Example"
sponsor_url = "https://example.net/"
location = { city = "Lab", country = "ZZ" }
test = true

[network]
ipv4 = "192.0.2.10/24"
ipv4_gateway = "192.0.2.1"
ipv6 = "2001:db8::10/64"
ipv6_gateway = "2001:db8::1"
dns = ["192.0.2.53"]

[access]
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt ops@example"]

[mirror]
upstream = "mirror.example.net"
projects = ["alpha"]
"#;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alpha.toml"),
        "title = \"Alpha\"\nmodule = \"alpha\"\npath = \"alpha\"\nsize_gb = 900\naliases = [\"alpha-old\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("beta.toml"),
        "title = \"Beta\"\nmodule = \"beta\"\npath = \"beta\"\nsize_gb = 900\n",
    )
    .unwrap();
    let c = Catalog::load(dir.path()).unwrap();
    (dir, c)
}

fn load_text(name: &str, text: &str) -> Result<LoadedProfile, Vec<Problem>> {
    let (_dir, cat) = catalog();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    load(&path, &cat).map_err(|ProfileError::Invalid(Problems(p))| p)
}

fn keys(problems: &[Problem]) -> Vec<String> {
    problems.iter().filter(|p| p.severity == Severity::Error).map(|p| p.key.clone()).collect()
}

#[test]
fn good_profile_loads_with_defaults() {
    let loaded = load_text("lab", GOOD).unwrap();
    assert_eq!(loaded.profile.base.distro, Distro::Almalinux9);
    assert_eq!(loaded.profile.access.admin_user, "mirror");
    assert_eq!(loaded.profile.mirror.bwlimit_mbit, 200);
    assert_eq!(loaded.projects.len(), 1);
    // Without [update] the site builds; the one warning says it will never update itself.
    let warned: Vec<_> = loaded.warnings.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(warned, vec!["update"], "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].message.contains("never update itself"));
}

#[test]
fn every_problem_is_reported_at_once_with_lines() {
    let bad = GOOD
        .replace("ipv4_gateway = \"192.0.2.1\"", "ipv4_gateway = \"198.51.100.1\"")
        .replace("ipv6 = \"2001:db8::10/64\"", "ipv6 = \"2001:db8::zz/64\"")
        .replace("projects = [\"alpha\"]", "projects = [\"alpha\", \"gamma\", \"alpha\"]\ncolour = \"blue\"")
        .replace(
            "ssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt ops@example\"]",
            "ssh_keys = []",
        );
    let problems = load_text("lab", &bad).unwrap_err();
    let k = keys(&problems);
    for expected in [
        "network.ipv4_gateway",
        "network.ipv6",
        "mirror.projects[1]",
        "mirror.projects[2]",
        "mirror.colour",
        "access.ssh_keys",
    ] {
        assert!(k.contains(&expected.to_string()), "missing {expected} in {k:?}");
    }
    let gw = problems.iter().find(|p| p.key == "network.ipv4_gateway").unwrap();
    assert_eq!(gw.line, Some(12));
    assert!(gw.to_string().contains("lab.toml:12: network.ipv4_gateway"), "{gw}");
    let unknown = problems.iter().find(|p| p.key == "mirror.colour").unwrap();
    assert_eq!(unknown.line, Some(23));
}

#[test]
fn projects_larger_than_the_disk_are_refused() {
    let text =
        GOOD.replace("test = true", "test = true\ndisk_gb = 1000").replace("[\"alpha\"]", "[\"alpha\", \"beta\"]");
    let problems = load_text("lab", &text).unwrap_err();
    assert!(problems.iter().any(|p| p.key == "mirror.projects" && p.message.contains("1800 GB")), "{problems:?}");
}

#[test]
fn documentation_addresses_warn_on_real_sites_only() {
    let real = GOOD.replace("test = true", "test = false").replace("country = \"ZZ\"", "country = \"US\"");
    let loaded = load_text("lab", &real).unwrap();
    let warned: Vec<_> = loaded.warnings.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(warned, vec!["network.ipv4", "network.ipv6", "access.admin_prefixes", "update"]);
    let lab: Vec<_> = load_text("lab", GOOD).unwrap().warnings.into_iter().map(|p| p.key).collect();
    assert_eq!(lab, vec!["update"]);
}

#[test]
fn name_must_match_file_and_types_are_checked() {
    let problems = load_text("other", GOOD).unwrap_err();
    assert!(keys(&problems).contains(&"site.name".to_string()));
    let problems = load_text("lab", &GOOD.replace("test = true", "test = \"yes\"")).unwrap_err();
    assert!(problems[0].message.contains("invalid type"), "{}", problems[0]);
    assert_eq!((problems[0].line, problems[0].key.as_str()), (Some(8), "site.test"));
    // The rest of the file is still checked (read as if the wrong key were absent).
    assert!(keys(&problems).contains(&"site.location.country".to_string()), "{problems:?}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let problems = load_text("lab", "[site]\nname = \n").unwrap_err();
    assert_eq!(problems[0].line, Some(2));
}

#[test]
fn a_bond_needs_two_mac_addresses_and_no_single_nic() {
    let bonded =
        GOOD.replace("[network]\n", "[network]\nbond = { members = [\"52:54:00:aa:00:01\", \"52:54:00:aa:00:02\"] }\n");
    assert!(load_text("lab", &bonded).is_ok());
    let bad = GOOD.replace("[network]\n", "[network]\nnic = { driver = \"r8169\" }\nbond = { members = [\"52:54:00:aa:00:01\", \"nope\", \"52:54:00:aa:00:03\"] }\n");
    let k = keys(&load_text("lab", &bad).unwrap_err());
    for expected in ["network.bond", "network.bond.members", "network.bond.members[1]"] {
        assert!(k.contains(&expected.to_string()), "missing {expected} in {k:?}");
    }
}

/// A profile with `update` as its [update] section and `key` as the signing key file's content.
fn load_with_update(update: &str, key: &str, real: bool) -> Result<LoadedProfile, Vec<Problem>> {
    let (_dir, cat) = catalog();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/updates.asc"), key).unwrap();
    let text = format!(
        "{}\n[update]\n{update}",
        if real {
            GOOD.replace("test = true", "test = false").replace("country = \"ZZ\"", "country = \"US\"")
        } else {
            GOOD.to_string()
        }
    );
    let path = dir.path().join("lab.toml");
    std::fs::write(&path, text).unwrap();
    load(&path, &cat).map_err(|ProfileError::Invalid(Problems(p))| p)
}

const PUBLIC: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n";

#[test]
fn an_update_section_is_checked_key_by_key() {
    let good = "url = \"https://updates.example.net/micromirror/lab/\"\nsigning_key = \"keys/updates.asc\"\n";
    let loaded = load_with_update(good, PUBLIC, false).unwrap();
    let u = loaded.profile.update.as_ref().unwrap();
    assert_eq!((u.check_interval_minutes, u.boot_tries, u.maintenance_window.as_str()), (360, 3, "02:00-05:00"));
    assert!(loaded.warnings.iter().all(|w| w.key != "update"));
    assert!(loaded.profile.side_files().contains(&"keys/updates.asc"), "the key is installed on the box");

    let bad =
        "url = \"ftp://updates.example.net/lab\"\nsigning_key = \"keys/updates.asc\"\nmaintenance_window = \"2-5\"\n\
               push_topic = \"micromirror/#\"\nboot_tries = 0\ntest_break_server = true\n";
    let problems = load_with_update(bad, PUBLIC, true).unwrap_err();
    let k = keys(&problems);
    for key in [
        "update.url",
        "update.maintenance_window",
        "update.push_topic",
        "update.boot_tries",
        "update.test_break_server",
    ] {
        assert!(k.contains(&key.to_string()), "{key} not refused: {k:?}");
    }
    let secret = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n...\n";
    let problems = load_with_update(good, secret, false).unwrap_err();
    let p = problems.iter().find(|p| p.key == "update.signing_key").expect("a secret key is refused");
    assert!(p.message.contains("secret key"), "{p}");
}

fn check_text(name: &str, text: &str) -> Result<LoadedProfile, Vec<Problem>> {
    let (_dir, cat) = catalog();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    check(&path, &cat).map_err(|ProfileError::Invalid(Problems(p))| p)
}

#[test]
fn placeholders_warn_in_a_check_and_refuse_a_build_naming_site_and_key() {
    let text = GOOD
        .replace("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"TODO: the sponsor's IPv4 address/prefix\"")
        .replace("ipv4_gateway = \"192.0.2.1\"", "ipv4_gateway = \"TODO: its gateway\"")
        .replace("test = true", "test = true\nhardware = \"TODO: t620, t740 or r220\"")
        .replace(
            "[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt ops@example\"]",
            "[\"TODO: an admin's public key\"]",
        );
    let checked = check_text("lab", &text).unwrap_or_else(|p| panic!("{p:?}"));
    let warned: Vec<&str> = checked.warnings.iter().map(|p| p.key.as_str()).collect();
    for key in ["network.ipv4", "network.ipv4_gateway", "site.hardware", "access.ssh_keys[0]"] {
        assert!(warned.contains(&key), "{key} not warned: {warned:?}");
    }
    let w = checked.warnings.iter().find(|p| p.key == "network.ipv4").unwrap();
    assert!(w.message.contains("site lab") && w.message.contains("placeholder"), "{w}");
    assert_eq!(w.line, Some(12), "{w}");
    let refused = load_text("lab", &text).unwrap_err();
    assert!(keys(&refused).contains(&"network.ipv4".to_string()), "{refused:?}");
}

#[test]
fn a_hardware_class_gives_its_disk_and_nic_and_an_unknown_one_lists_the_known() {
    let loaded = load_text("lab", &GOOD.replace("test = true", "test = true\nhardware = \"r220\"")).unwrap();
    assert_eq!(loaded.profile.site.disk_gb(), 8000);
    assert_eq!(loaded.profile.site.link_mbit(), 20000);
    assert_eq!(loaded.profile.network.bond.as_ref().and_then(|b| b.driver.as_deref()), Some("ixgbe"));
    let own = GOOD
        .replace("test = true", "test = true\nhardware = \"t740\"")
        .replace("[network]", "[network]\nnic = { mac = \"00:11:22:33:44:55\" }");
    let loaded = load_text("lab", &own).unwrap();
    assert_eq!(loaded.profile.network.nic.mac.as_deref(), Some("00:11:22:33:44:55"), "the profile's own NIC wins");
    let problems = load_text("lab", &GOOD.replace("test = true", "test = true\nhardware = \"t630\"")).unwrap_err();
    let p = problems.iter().find(|p| p.key == "site.hardware").expect("refused");
    assert!(p.fix.contains("t620, t740, r220"), "{p}");
}

#[test]
fn location_ssh_port_and_daily_time_are_checked() {
    let text = GOOD
        .replace(
            "location = { city = \"Lab\", country = \"ZZ\" }",
            "location = { city = \"Lab\", country = \"ZZ\", latitude = 91.0, longitude = 0.0 }",
        )
        .replace("[access]", "[access]\nssh_port = 443")
        .replace("projects = [\"alpha\"]", "projects = [\"alpha\"]\nsync_at = \"25:00\"");
    let k = keys(&load_text("lab", &text).unwrap_err());
    for key in ["site.location", "access.ssh_port", "mirror.sync_at"] {
        assert!(k.contains(&key.to_string()), "{key}: {k:?}");
    }
    let text = GOOD
        .replace("[access]", "[access]\nssh_port = 7777")
        .replace("projects = [\"alpha\"]", "projects = [\"alpha\"]\nsync_at = \"01:59\"");
    let loaded = load_text("lab", &text).unwrap();
    assert_eq!(loaded.profile.access.ssh_port, 7777);
    assert_eq!(loaded.profile.mirror.daily_time(), Some((1, 59)));
    assert_eq!(loaded.profile.site.location.to_string(), "Lab, ZZ");
}

#[test]
fn a_project_named_once_by_its_name_and_once_by_an_alias_is_the_same_project_twice() {
    let text = GOOD.replace("projects = [\"alpha\"]", "projects = [\"alpha\", \"alpha-old\"]");
    let problems = load_text("lab", &text).unwrap_err();
    let said: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(said.iter().any(|p| p.contains("mirror.projects[1]") && p.contains("the same project twice")), "{said:?}");
    assert!(!said.iter().any(|p| p.contains("both live in")), "one problem, said once: {said:?}");
}

#[test]
fn addresses_that_cannot_work_are_refused() {
    let cases = [
        ("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"192.0.2.0/24\"", "network.ipv4", "the network address"),
        ("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"192.0.2.255/24\"", "network.ipv4", "the broadcast address"),
        ("ipv4_gateway = \"192.0.2.1\"", "ipv4_gateway = \"192.0.2.10\"", "network.ipv4_gateway", "own address"),
        ("ipv6_gateway = \"2001:db8::1\"", "ipv6_gateway = \"2001:db8::10\"", "network.ipv6_gateway", "own address"),
        ("dns = [\"192.0.2.53\"]", "", "network.dns", "without a resolver"),
    ];
    for (good, bad, key, says) in cases {
        let problems = load_text("lab", &GOOD.replace(good, bad)).unwrap_err();
        assert!(
            problems.iter().any(|p| p.key == key && p.message.contains(says)),
            "{bad}: {key} should say `{says}`: {problems:?}"
        );
    }
    // A /31 has no network or broadcast address: both ends are hosts (RFC 3021).
    let p2p = GOOD.replace("ipv4 = \"192.0.2.10/24\"", "ipv4 = \"192.0.2.0/31\"");
    assert!(load_text("lab", &p2p).is_ok(), "{:?}", load_text("lab", &p2p).err());
}

#[test]
fn public_keys_are_read_as_openssh_reads_them() {
    let demo = "AAAAC3NzaC1lZDI1NTE5AAAAIC80L6QDRa2mJeHL1xHe0+ceXYxEHErnHrD0VXCoUWdt";
    for bad in [
        // Not base64 of a key blob (the shape of fmt2's old key).
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtZ8m0xFcixOpsTeamKeyReplaceMeBeforeShip ops".to_string(),
        // An ed25519 blob under another type.
        format!("ssh-rsa {demo} ops"),
        // Cut short.
        format!("ssh-ed25519 {} ops", &demo[..40]),
    ] {
        let text = GOOD.replace(&format!("ssh-ed25519 {demo}"), bad.trim_end_matches(" ops"));
        let problems = load_text("lab", &text).unwrap_err();
        assert!(
            problems.iter().any(|p| p.key == "access.ssh_keys[0]" && p.message.contains("not an OpenSSH public key")),
            "{bad}: {problems:?}"
        );
    }
}

#[test]
fn a_production_site_without_admin_prefixes_is_warned() {
    let real = GOOD.replace("test = true", "test = false").replace("country = \"ZZ\"", "country = \"US\"");
    let loaded = check_text("lab", &real).unwrap();
    assert!(loaded.warnings.iter().any(|w| w.key == "access.admin_prefixes"), "{:?}", loaded.warnings);
    let lab = check_text("lab", GOOD).unwrap();
    assert!(!lab.warnings.iter().any(|w| w.key == "access.admin_prefixes"), "a test site needs none");
}

#[test]
fn an_unknown_time_zone_or_country_is_refused_when_checked() {
    // A real site (ZZ, "unknown", is kept to be refused once).
    let real = GOOD.replace("test = true", "test = false");
    for (from, to, key) in [
        ("test = false", "test = false\ntimezone = \"Mars/Olympus_Mons\"", "site.timezone"),
        ("test = false", "test = false\ntimezone = \"Europe/Atlantis\"", "site.timezone"),
        ("country = \"ZZ\"", "country = \"UK\"", "site.location.country"),
        ("\"Lab\"", "\"Lab\"", "site.location.country"),
    ] {
        let problems = check_text("lab", &real.replace(from, to)).unwrap_err();
        assert!(problems.iter().any(|p| p.key == key), "{to}: {problems:?}");
    }
    let berlin = real.replace("test = false", "test = false\ntimezone = \"Europe/Berlin\"").replace("\"ZZ\"", "\"DE\"");
    assert!(check_text("lab", &berlin).is_ok(), "{:?}", check_text("lab", &berlin).err());
    assert!(check_text("lab", GOOD).is_ok(), "ZZ (unknown) is fine on a test site");
}

#[test]
fn base_packages_are_taken_and_a_bad_name_is_named_by_its_index() {
    let text = GOOD.replace("[network]", "[base]\npackages = [\"htop\", \"tcpdump=4.99\"]\n\n[network]");
    let problems = load_text("lab", &text).unwrap_err();
    assert_eq!(keys(&problems), vec!["base.packages[1]"], "{problems:?}");
    let text = GOOD.replace("[network]", "[base]\npackages = [\"htop\", \"tcpdump\"]\n\n[network]");
    let loaded = load_text("lab", &text).unwrap();
    assert_eq!(loaded.profile.base.packages, vec!["htop", "tcpdump"]);
}
