//! Go-template-like output formats (`--format '{{.ID}}\t{{.Name}}'`), shared
//! by the commands that print rows: literal text with `\t`, `\n` and `\\`
//! escapes, and `{{.Field}}` placeholders naming a row's JSON keys.
//! `{{.Field.key}}` reaches into an object (an event's attributes, a
//! container's labels). Unknown fields are refused when the template is
//! parsed, before anything is read.

use crate::Error;

/// A parsed template; see the module doc.
#[derive(Debug, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    /// A JSON key, then keys inside it.
    Field(Vec<String>),
}

impl Template {
    /// Parses `text`; its fields' first parts must be among `fields`.
    pub fn parse(text: &str, fields: &[&str]) -> Result<Template, Error> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("{{") {
                let end = after
                    .find("}}")
                    .ok_or_else(|| Error::Usage(format!("--format {text:?}: unclosed {{{{")))?;
                let inner = after[..end].trim();
                let field = inner.strip_prefix('.').ok_or_else(|| {
                    Error::Usage(format!(
                        "--format {text:?}: {{{{{inner}}}}}: expected {{{{.Field}}}} (or use table or json)"
                    ))
                })?;
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                if !fields.contains(&path[0].as_str()) || path.iter().any(String::is_empty) {
                    return Err(Error::Usage(format!(
                        "--format: unknown field {field:?} (fields: {})",
                        fields.join(", ")
                    )));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(path));
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix('\\') {
                match after.chars().next() {
                    Some('t') => literal.push('\t'),
                    Some('n') => literal.push('\n'),
                    Some('\\') => literal.push('\\'),
                    Some(c) => {
                        literal.push('\\');
                        literal.push(c);
                    }
                    None => literal.push('\\'),
                }
                rest = after.char_indices().nth(1).map_or("", |(i, _)| &after[i..]);
            } else {
                let ch = rest.chars().next().unwrap_or_default();
                literal.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Appends `row` rendered (no newline) to `out`. A missing key renders
    /// empty.
    pub fn render(&self, row: &serde_json::Value, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => {
                    let v = path.iter().try_fold(row, |v, k| v.get(k));
                    out.push_str(&value_text(v));
                }
            }
        }
    }
}

/// Strings as they are, arrays joined with `,`, objects as `k=v,…`.
fn value_text(v: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| value_text(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| format!("{k}={}", value_text(Some(x))))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["ID", "Name", "Labels"];

    #[test]
    fn parse_escape_and_refuse_unknown_fields() {
        let t = Template::parse("{{.ID}}\\t{{ .Name }}\\n-", FIELDS).unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Field(vec!["ID".into()]),
                Piece::Text("\t".into()),
                Piece::Field(vec!["Name".into()]),
                Piece::Text("\n-".into()),
            ]
        );
        let row = serde_json::json!({"ID": "abc", "Name": "web"});
        let mut out = String::new();
        t.render(&row, &mut out);
        assert_eq!(out, "abc\tweb\n-");
        let err = Template::parse("{{.Nope}}", FIELDS).unwrap_err();
        assert!(err.to_string().contains("\"Nope\""), "{err}");
        assert!(Template::parse("{{.ID", FIELDS).is_err());
        assert!(Template::parse("{{ID}}", FIELDS).is_err());
        assert!(Template::parse("{{.ID.}}", FIELDS).is_err());
    }

    #[test]
    fn nested_keys_and_value_shapes() {
        let t =
            Template::parse("{{.Labels.k}}|{{.Labels}}|{{.Labels.none}}|{{.ID}}", FIELDS).unwrap();
        let row = serde_json::json!({"ID": [1, "b"], "Labels": {"k": "v", "n": 2}});
        let mut out = String::new();
        t.render(&row, &mut out);
        assert_eq!(out, "v|k=v,n=2||1,b");
    }
}
