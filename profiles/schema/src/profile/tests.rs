use super::*;
use crate::catalog::Catalog;
use crate::diagnostics::Severity;

const GOOD: &str = r#"
[site]
name = "lab"
hostname = "lab.mm.example.net"
sponsor_name = "Example"
sponsor_url = "https://example.net/"
location = "Lab"
test = true

[network]
ipv4 = "192.0.2.10/24"
ipv4_gateway = "192.0.2.1"
ipv6 = "2001:db8::10/64"
ipv6_gateway = "2001:db8::1"
dns = ["192.0.2.53"]

[access]
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpsKeyForTestsOnly ops@example"]

[mirror]
upstream = "mirror.example.net"
projects = ["alpha"]
"#;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alpha.toml"),
        "title = \"Alpha\"\nmodule = \"alpha\"\npath = \"alpha\"\nsize_gb = 900\n",
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
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn every_problem_is_reported_at_once_with_lines() {
    let bad = GOOD
        .replace("ipv4_gateway = \"192.0.2.1\"", "ipv4_gateway = \"198.51.100.1\"")
        .replace("ipv6 = \"2001:db8::10/64\"", "ipv6 = \"2001:db8::zz/64\"")
        .replace("projects = [\"alpha\"]", "projects = [\"alpha\", \"gamma\", \"alpha\"]\ncolour = \"blue\"")
        .replace(
            "ssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpsKeyForTestsOnly ops@example\"]",
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
    let real = GOOD.replace("test = true", "test = false");
    let loaded = load_text("lab", &real).unwrap();
    let warned: Vec<_> = loaded.warnings.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(warned, vec!["network.ipv4", "network.ipv6"]);
    assert!(load_text("lab", GOOD).unwrap().warnings.is_empty());
}

#[test]
fn name_must_match_file_and_types_are_checked() {
    let problems = load_text("other", GOOD).unwrap_err();
    assert!(keys(&problems).contains(&"site.name".to_string()));
    let problems = load_text("lab", &GOOD.replace("test = true", "test = \"yes\"")).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("invalid type"), "{}", problems[0]);
    assert_eq!(problems[0].line, Some(8));
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
