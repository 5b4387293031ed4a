//! Prometheus text exposition (format 0.0.4), written by hand: every family goes through
//! `family`, which writes its HELP and TYPE lines, and every label value through `sample`,
//! which escapes it, so neither can be forgotten. A test runs Debian's promtool over the
//! server's real output. Pure formatting.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its name, kind and what it measures (units are in the name).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = write!(self.out, "# HELP {name} {}\n# TYPE {name} {kind}\n", escape_help(help));
        self
    }

    /// One sample of the family started last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// HELP text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers as integers, the rest with enough digits; never NaN's spelling variants.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_every_label_is_escaped() {
        let mut e = Exposition::default();
        e.family("micromirror_x_total", Kind::Counter, "Things, with a \\ backslash.\nTwo lines.").sample(
            "micromirror_x_total",
            &[("project", "a\"b\\c\nd"), ("class", "2xx")],
            3.0,
        );
        e.family("micromirror_y", Kind::Gauge, "A ratio.").sample("micromirror_y", &[], 0.25);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP micromirror_x_total Things, with a \\\\ backslash.\\nTwo lines.\n# TYPE micromirror_x_total counter\n\
             micromirror_x_total{project=\"a\\\"b\\\\c\\nd\",class=\"2xx\"} 3\n\
             # HELP micromirror_y A ratio.\n# TYPE micromirror_y gauge\nmicromirror_y 0.25\n"
        );
    }
}
