//! `adopt --fill-profile`: the live box's values written into the `TODO:` placeholders that
//! `profiles import --ansible` leaves (addresses, gateways, resolvers, the admins' keys), with
//! the file's comments and order kept. A key the operator already wrote is never changed.

use schema::profile::PLACEHOLDER;
use toml_edit::{Array, DocumentMut, Item, Value};

use crate::survey::Survey;
use crate::AdoptError;

fn is_placeholder(item: &Item) -> bool {
    match item.as_value() {
        Some(Value::String(s)) => s.value().starts_with(PLACEHOLDER),
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str().is_some_and(|s| s.starts_with(PLACEHOLDER))),
        _ => false,
    }
}

/// The live value for a placeholder key, if the box has one.
fn live_value(key: &str, s: &Survey) -> Option<Value> {
    let first = |v6: bool| s.addresses.iter().find(|(_, a)| a.contains(':') == v6).map(|(_, a)| a.clone());
    let list = |items: &[String]| Value::Array(items.iter().map(|i| i.as_str()).collect::<Array>());
    match key {
        "network.ipv4" => first(false).map(Value::from),
        "network.ipv6" => first(true).map(Value::from),
        "network.ipv4_gateway" => s.gateway4.clone().map(Value::from),
        "network.ipv6_gateway" => s.gateway6.clone().map(Value::from),
        "network.dns" if !s.dns.is_empty() => Some(list(&s.dns)),
        "access.ssh_keys" if !s.authorized_keys.is_empty() => Some(list(&s.authorized_keys)),
        _ => None,
    }
}

const FILLABLE: [&str; 6] =
    ["network.ipv4", "network.ipv4_gateway", "network.ipv6", "network.ipv6_gateway", "network.dns", "access.ssh_keys"];

/// The profile text with its fillable placeholders replaced, and what was written (key, value).
pub fn fill(text: &str, survey: &Survey) -> Result<(String, Vec<(String, String)>), AdoptError> {
    let mut doc: DocumentMut = text.parse().map_err(|e| AdoptError::Profile(format!("not TOML: {e}")))?;
    let mut written = Vec::new();
    for key in FILLABLE {
        let (table, name) = key.split_once('.').unwrap_or(("", key));
        let Some(item) = doc.get_mut(table).and_then(|t| t.get_mut(name)) else { continue };
        if !is_placeholder(item) {
            continue;
        }
        if let Some(value) = live_value(key, survey) {
            written.push((key.to_string(), value.to_string().trim().to_string()));
            *item = Item::Value(value);
        }
    }
    Ok((doc.to_string(), written))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMPORTED: &str = "# Imported from the fleet playbook\n[site]\nname = \"fmt2\"\n\n[network]\n\
        ipv4 = \"TODO: the sponsor's IPv4 address/prefix\"\nipv4_gateway = \"TODO: the IPv4 gateway\"\n\
        ipv6 = \"2001:db8:470::77/64\" # written by hand\nipv6_gateway = \"TODO: the IPv6 gateway\"\n\
        dns = [\"TODO: the resolvers the sponsor gave\"]\n\n[access]\nssh_keys = [\"TODO: an admin's key\"]\n";

    #[test]
    fn placeholders_take_the_live_values_and_written_keys_stay() {
        let survey = crate::survey::parse(include_str!("survey/alma9-swap-last.txt")).unwrap();
        let (text, written) = fill(IMPORTED, &survey).unwrap();
        let keys: Vec<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["network.ipv4", "network.ipv4_gateway", "network.ipv6_gateway", "network.dns", "access.ssh_keys"]
        );
        assert!(text.contains("ipv4 = \"192.0.2.50/24\""), "{text}");
        assert!(text.contains("ipv6 = \"2001:db8:470::77/64\" # written by hand"), "kept: {text}");
        assert!(text.contains("dns = [\"2001:4860:4860::8888\", \"8.8.8.8\"]"), "{text}");
        assert!(text.contains("ssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINF/0EJd2"), "{text}");
        assert!(text.starts_with("# Imported from the fleet playbook"), "comments kept");
        assert!(!text.contains("TODO: the IPv4 gateway"));
    }
}
