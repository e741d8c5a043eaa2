//! A small YAML writer for the manifests: block style, keys sorted (as `serde_json`'s map keeps
//! them), multi-line strings as literal blocks (a ConfigMap's file stays readable), and every
//! string that a YAML 1.1 or 1.2 reader could take for something else quoted.
//!
//! Written here rather than through a serializer so that the bytes of a manifest depend on
//! nothing but the value: `kubectl diff` of two exports shows what changed in the project.

use serde_json::{Map, Value};

/// The value as a YAML document (no leading `---`), ending in a newline.
pub fn render(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        other => {
            out += &scalar(other);
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        pad(out, indent);
        out.push_str(&string(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        // An item's block is written two columns in, then its first line's indentation gives
        // way to the dash: `- key: value` with the item's other keys under `key`.
        let mut block = String::new();
        match item {
            Value::Object(map) if !map.is_empty() => write_map(&mut block, map, indent + 2),
            Value::Array(inner) if !inner.is_empty() => write_seq(&mut block, inner, indent + 2),
            other => {
                pad(&mut block, indent + 2);
                block += &inline(other);
                block.push('\n');
            }
        }
        pad(out, indent);
        out.push_str("- ");
        out.push_str(&block[indent + 2..]);
    }
}

/// What follows `key:`: a space and a scalar, or a nested block on the next lines.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        Value::String(text) if literal_block_fits(text) => {
            out.push_str(if text.ends_with('\n') {
                " |\n"
            } else {
                " |-\n"
            });
            for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// A multi-line string goes into a literal block unless the block could not give it back
/// exactly: leading spaces on its first line (they would set the indentation), more than one
/// trailing newline (clipped), carriage returns or other control characters.
fn literal_block_fits(text: &str) -> bool {
    text.contains('\n')
        && !text.starts_with([' ', '\n'])
        && !text.ends_with("\n\n")
        && !text.chars().any(|c| c.is_control() && c != '\n')
}

/// A scalar inside a sequence: multi-line strings are quoted there, to keep the writer simple.
fn inline(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => scalar(other),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Words YAML 1.1 readers (PyYAML, old Go libraries) take for booleans or null.
const AMBIGUOUS_WORDS: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "nil",
];

/// A string plain when nothing could read it as another type, else double-quoted (a JSON
/// string is a valid YAML double-quoted scalar).
fn string(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@'))
        && !AMBIGUOUS_WORDS.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).expect("a string serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_sequences_and_literals() {
        let value = json!({
            "apiVersion": "v1",
            "data": {"redis.conf": "maxmemory 512mb\n\nappendonly yes\n"},
            "items": [{"name": "a", "port": 5432}, "x", ["nested"]],
            "empty": {},
            "none": [],
        });
        assert_eq!(
            render(&value),
            "apiVersion: v1\n\
             data:\n  redis.conf: |\n    maxmemory 512mb\n\n    appendonly yes\n\
             empty: {}\n\
             items:\n  - name: a\n    port: 5432\n  - x\n  - - nested\n\
             none: []\n"
        );
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        // Strings with what YAML reads specially: indicators, quotes, spaces, line breaks, words
        // of other types, digits.
        let text = prop_oneof![
            "[a-z0-9 :#'\"\\-]{0,12}",
            "[a-z ]{1,8}(\n[a-z ]{0,8}){1,3}\n{0,2}",
            Just("on".to_string()),
            Just("~".to_string()),
            Just("1e3".to_string()),
            Just(" lead".to_string()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn what_is_written_reads_back_the_same(value in value()) {
            let text = render(&value);
            let read: Value = serde_saphyr::from_str(&text)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
            proptest::prop_assert_eq!(read, value, "{}", text);
        }
    }

    #[test]
    fn strings_another_type_could_be_read_from_are_quoted() {
        for (text, written) in [
            ("on", "\"on\""),
            ("Yes", "\"Yes\""),
            ("256MB", "\"256MB\""),
            ("1.1", "\"1.1\""),
            ("-1", "\"-1\""),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("a: b", "\"a: b\""),
            ("#x", "\"#x\""),
            ("'mod'", "\"'mod'\""),
            ("allkeys-lru", "allkeys-lru"),
            ("cnpg.io/cluster", "cnpg.io/cluster"),
        ] {
            assert_eq!(string(text), written, "{text}");
        }
    }
}
