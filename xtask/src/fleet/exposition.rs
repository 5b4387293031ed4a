//! Reading Prometheus' text exposition (what a box's /metrics answers): samples by name and
//! labels. Hand-written: the few lines `fleet status` needs do not justify a client crate, and
//! the format (name{labels} value) is simple; comments and malformed lines are skipped.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
        None => (head, BTreeMap::new()),
    };
    Some(Sample { name: name.to_string(), labels, value })
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels_and_without() {
        let text = "# HELP x y\n# TYPE x gauge\nx 1\ny{project=\"a\\\"b\",class=\"2xx\"} 3.5\nbroken{ 1\n";
        let s = parse(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x", 1.0));
        assert_eq!(s[1].labels["project"], "a\"b");
        assert_eq!(s[1].labels["class"], "2xx");
    }
}
