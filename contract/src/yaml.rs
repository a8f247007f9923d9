//! Block-style YAML of a JSON value, as `DIR/manifests/` files and the
//! Falco rules file are written. Every one-line string is double-quoted
//! (JSON's escapes are YAML's); a multi-line one (a Corefile, a rules
//! file) is a literal block, so a user reads it as it is. Written here
//! rather than with a YAML crate: the serde YAML writers leave strings
//! such as `yes`, `on` or `0755` plain, which Kubernetes' YAML 1.1 reader
//! takes for booleans and numbers (a namespace may well be called `on`).

use serde_json::Value;

/// `v` as YAML, each line indented by `indent` spaces, appended to `out`.
pub fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", key(k)));
                nested(v, indent + 2, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // the first key on the dash's line, the rest under it
                        let mut first = String::new();
                        write(item, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(first.trim_start());
                    }
                    _ => nested(item, indent + 2, out),
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// A value after `key:` or `-`: inline when a one-line scalar or empty, a
/// literal block or the lines below otherwise.
fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write(v, indent, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write(v, indent, out);
        }
        Value::String(s) => match literal(s) {
            Some((indicator, body)) => {
                out.push(' ');
                out.push_str(indicator);
                out.push('\n');
                let pad = " ".repeat(indent);
                for line in body.split('\n') {
                    if !line.is_empty() {
                        out.push_str(&pad);
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            }
            None => one_line(v, out),
        },
        _ => one_line(v, out),
    }
}

fn one_line(v: &Value, out: &mut String) {
    out.push(' ');
    out.push_str(&inline(v));
    out.push('\n');
}

/// The chomping indicator and the lines of `s` as a literal block, when
/// one holds it exactly: several lines, at most one final newline (`|`
/// keeps one, `|-` none), a first line that does not start with a space
/// (that would need an indentation indicator), and no character YAML
/// would take for a line break or refuse in a block (`\r`, NEL, LS, PS,
/// other controls but the tab).
fn literal(s: &str) -> Option<(&'static str, &str)> {
    let (indicator, body) = match s.strip_suffix('\n') {
        Some(b) if b.ends_with('\n') => return None,
        Some(b) => ("|", b),
        None => ("|-", s),
    };
    let fits = body.contains('\n')
        && !body.starts_with([' ', '\t'])
        && !body.chars().any(|c| {
            matches!(c, '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
                || (c.is_control() && c != '\n' && c != '\t')
        })
        // a line of only spaces would read back as an empty one
        && !body.split('\n').any(|l| !l.is_empty() && l.trim().is_empty());
    fits.then_some((indicator, body))
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Keys plain when they are plainly strings (`apiVersion`,
/// `app.kubernetes.io/name`), quoted otherwise.
fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> String {
        let mut t = String::new();
        write(v, 0, &mut t);
        let back: Value = serde_norway::from_str(&t).unwrap();
        assert_eq!(&back, v, "{t}");
        t
    }

    #[test]
    fn odd_keys_and_values_survive() {
        round_trip(&serde_json::json!({
            "a: b": "x\ny \"q\"", "yes": [], "n": {}, "list": [[1, 2], {"k": null}, true, 1.5],
        }));
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_that_read_back_exactly() {
        let t = round_trip(&serde_json::json!({
            "Corefile": ".:53 {\n    errors\n\n    # a comment: kept\n}\n",
            "no-newline": "a\n  b",
            "list": ["- x\n- y\n", "one"],
        }));
        assert!(
            t.contains("Corefile: |\n  .:53 {\n      errors\n\n      # a comment"),
            "{t}"
        );
        assert!(t.contains("no-newline: |-\n"), "{t}");
        // what a literal block cannot hold exactly stays quoted
        for odd in [
            " leading space\nx",
            "two newlines\n\n",
            "crlf\r\nx",
            "blank-ish\n  \nx",
            "tab\x07\nx",
            "\n",
        ] {
            let t = round_trip(&serde_json::json!({ "k": odd }));
            assert!(t.starts_with("k: \""), "{odd:?}: {t}");
        }
    }
}
