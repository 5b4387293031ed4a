use super::*;
use crate::survey;

pub(crate) const ALMA9: &str = include_str!("../survey/alma9-swap-last.txt");
pub(crate) const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINF/0EJd2UvLDvb5xrlR4XVgsTWdUiA4ZIhJHG7eCXTl";

fn profile(network: &str) -> Profile {
    let text = format!(
        "[site]\nname = \"fmt2\"\nhostname = \"m.example.net\"\nsponsor_name = \"S\"\nsponsor_url = \"https://example.net/\"\n\
         location = {{ city = \"Fremont\", country = \"US\" }}\nhardware = \"t620\"\n\n\
         [network]\n{network}\n\n\
         [access]\nssh_keys = [\"{KEY} operator\"]\nadmin_prefixes = [\"198.51.100.0/24\"]\n\n\
         [mirror]\nupstream = \"mirror.example.net\"\nprojects = [\"archlinux\"]\n"
    );
    toml_edit::de::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub(crate) const MATCHING: &str =
    "nic = { driver = \"r8169\" }\nipv4 = \"192.0.2.50/24\"\nipv4_gateway = \"192.0.2.1\"\n\
                        ipv6 = \"2001:db8:470:0::50/64\"\nipv6_gateway = \"2001:db8:470::1\"\n\
                        dns = [\"2001:4860:4860::8888\", \"8.8.8.8\"]";

pub(crate) fn plan_for(report: &str, network: &str, login_key: Option<&str>) -> Plan {
    let survey = survey::parse(report).unwrap();
    let profile = profile(network);
    plan(&Inputs {
        survey: &survey,
        profile: &profile,
        profile_path: "profiles/fmt2.toml",
        root_image_bytes: Some(260 << 20),
        esp_needs: Some(100 << 20),
        login_key,
        offline: false,
    })
}

#[test]
fn a_matching_box_maps_swap_to_slot_a_boot_to_slot_b_and_root_to_data_and_nothing_refuses() {
    let p = plan_for(ALMA9, MATCHING, Some(KEY));
    assert!(p.refusals().is_empty(), "{}", render(&p));
    assert_eq!(p.partition(Role::SlotA).unwrap().node, "/dev/sda4", "swap, wherever it lies");
    assert_eq!(p.partition(Role::SlotB).unwrap().node, "/dev/sda2");
    assert_eq!(p.partition(Role::Data).unwrap().node, "/dev/sda3");
    assert_eq!(p.partition(Role::Esp).unwrap().node, "/dev/sda1");
    let table = render(&p);
    assert!(table.contains("root slot A") && table.contains("owner mirror (1.5 TiB used"), "{table}");
}

#[test]
fn an_address_the_box_does_not_have_is_refused_with_the_fix() {
    let network = MATCHING.replace("192.0.2.50/24", "192.0.2.99/24");
    let p = plan_for(ALMA9, &network, Some(KEY));
    let refused: Vec<_> = p.refusals().iter().map(|c| c.name).collect();
    assert_eq!(refused, ["ipv4"], "{}", render(&p));
    let text = render(&p);
    assert!(text.contains("network.ipv4 = \"192.0.2.50/24\" in profiles/fmt2.toml"), "{text}");
}

#[test]
fn a_gateway_a_nic_a_port_or_a_key_that_differ_are_each_refused() {
    let cases =
        [(MATCHING.replace("192.0.2.1\"", "192.0.2.254\""), "gateway4"), (MATCHING.replace("r8169", "igb"), "nic")];
    for (network, name) in &cases {
        let p = plan_for(ALMA9, network, Some(KEY));
        let refused: Vec<_> = p.refusals().iter().map(|c| c.name).collect();
        assert_eq!(refused, [*name], "{}", render(&p));
    }
    let p = plan_for(&ALMA9.replace("port 22", "port 2222"), MATCHING, Some(KEY));
    assert_eq!(p.refusals().iter().map(|c| c.name).collect::<Vec<_>>(), ["ssh port"]);
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey00";
    let p = plan_for(ALMA9, MATCHING, Some(other));
    assert_eq!(p.refusals().iter().map(|c| c.name).collect::<Vec<_>>(), ["login key"]);
    assert!(render(&p).contains("add \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKey"));
}

#[test]
fn secure_boot_an_odd_partition_or_a_small_swap_refuse() {
    let sb = ALMA9.replace("   6   0   0   0   0", "   6   0   0   0   1");
    assert_eq!(plan_for(&sb, MATCHING, Some(KEY)).refusals()[0].name, "secure boot");
    // A fifth partition nobody planned for.
    let odd = ALMA9.replace(
        "            \"uuid\": \"463A0677-8028-864C-AAF4-21B79371EB46\"\n         }",
        "            \"uuid\": \"463A0677-8028-864C-AAF4-21B79371EB46\"\n         },{\n            \"node\": \"/dev/sda5\", \"start\": 3907028992, \"size\": 2048, \"type\": \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"\n         }",
    );
    let p = plan_for(&odd, MATCHING, Some(KEY));
    assert_eq!(p.refusals().iter().map(|c| c.name).collect::<Vec<_>>(), ["partition"], "{}", render(&p));
    // A swap of 200 MiB cannot hold a 260 MiB root.
    let small = ALMA9.replace("\"size\": 4194304,", "\"size\": 409600,");
    let p = plan_for(&small, MATCHING, Some(KEY));
    assert_eq!(p.refusals().iter().map(|c| c.name).collect::<Vec<_>>(), ["slot A"], "{}", render(&p));
}

#[test]
fn resolvers_that_differ_are_a_note_not_a_refusal() {
    let network = MATCHING.replace("\"8.8.8.8\"", "\"9.9.9.9\"");
    let p = plan_for(ALMA9, &network, Some(KEY));
    assert!(p.refusals().is_empty());
    assert!(matches!(p.checks.iter().find(|c| c.name == "dns").unwrap().verdict, Verdict::Note(_)));
}

#[test]
fn before_the_image_is_built_the_slots_are_a_note_not_a_refusal() {
    let survey = survey::parse(ALMA9).unwrap();
    let profile = profile(MATCHING);
    let p = plan(&Inputs {
        survey: &survey,
        profile: &profile,
        profile_path: "profiles/fmt2.toml",
        root_image_bytes: None,
        esp_needs: None,
        login_key: Some(KEY),
        offline: false,
    });
    assert!(p.refusals().is_empty(), "{}", render(&p));
    for name in ["slot A", "slot B", "esp"] {
        let c = p.checks.iter().find(|c| c.name == name).unwrap();
        assert!(matches!(&c.verdict, Verdict::Note(n) if n.contains("cargo xtask image")), "{c:?}");
    }
}

#[test]
fn seen_by_the_usb_installer_only_the_nic_of_the_network_is_compared() {
    // The old system is not running: the survey finds no addresses (the installer's own
    // network is down); a wrong address in the profile cannot be seen, a wrong NIC still is.
    let report = ALMA9.replace("192.0.2.50", "192.0.2.77");
    let survey = survey::parse(&report).unwrap();
    let offline = |network: &str| {
        let profile = profile(network);
        plan(&Inputs {
            survey: &survey,
            profile: &profile,
            profile_path: "the installer's profile",
            root_image_bytes: Some(260 << 20),
            esp_needs: Some(100 << 20),
            login_key: None,
            offline: true,
        })
    };
    let p = offline(MATCHING);
    assert!(p.refusals().is_empty(), "{}", render(&p));
    assert!(p.checks.iter().any(|c| c.name == "network" && matches!(c.verdict, Verdict::Note(_))), "{}", render(&p));
    assert!(!p.checks.iter().any(|c| c.name == "login key" || c.name == "ipv4"), "{}", render(&p));
    let wrong_nic = offline(&MATCHING.replace("r8169", "e1000e"));
    let refused: Vec<_> = wrong_nic.refusals().iter().map(|c| c.name).collect();
    assert_eq!(refused, ["nic"], "{}", render(&wrong_nic));
}
