//! Where in the pipeline file an error is: toml's message with the line and
//! column of the key at fault. Tagged tables (`type = …`) are buffered by
//! serde, so toml's span covers a whole table; the key is found in it.

fn unknown_key_offset(text: &str, span: std::ops::Range<usize>, msg: &str) -> Option<usize> {
    let key = msg.strip_prefix("unknown field `")?.split('`').next()?;
    // The span may cover only the table's header: search to the next header.
    let region = text.get(span.start..)?;
    let mut offset = span.start;
    for (i, line) in region.split_inclusive('\n').enumerate() {
        if i > 0 && line.trim_start().starts_with('[') {
            break;
        }
        let t = line.trim_start();
        if t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// The offset of the key whose value a type error names (`invalid type:
/// string "fast", expected f64`): tagged tables are buffered by serde, so
/// toml's span covers the whole table, and the message names the value, not
/// the key. The first line of the table assigning that value is the one.
fn bad_value_offset(text: &str, span: std::ops::Range<usize>, msg: &str) -> Option<usize> {
    let rest = msg.strip_prefix("invalid type: ").or_else(|| msg.strip_prefix("invalid value: "))?;
    let candidates: Vec<String> = if let Some(s) = rest.strip_prefix("string \"") {
        let v = &s[..s.find("\", expected")?];
        vec![format!("\"{v}\""), format!("'{v}'")]
    } else {
        let s = &rest[rest.find('`')? + 1..];
        vec![s[..s.find('`')?].to_owned()]
    };
    let region = text.get(span.start..)?;
    let mut offset = span.start;
    for (i, line) in region.split_inclusive('\n').enumerate() {
        if i > 0 && line.trim_start().starts_with('[') {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            // The value, without a trailing comment.
            let value = value.split(" #").next().unwrap_or_default().trim();
            if !key.trim().is_empty() && candidates.iter().any(|c| c == value) {
                return Some(offset + (line.len() - line.trim_start().len()));
            }
        }
        offset += line.len();
    }
    None
}

/// `toml`'s message with the 1-based line and column of its span.
pub(super) fn render_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            // Tagged tables (`type = ...`) are buffered by serde, so toml's span
            // for an unknown key covers the whole table: find the key's own line.
            let start = unknown_key_offset(text, span.clone(), &msg)
                .or_else(|| bad_value_offset(text, span.clone(), &msg))
                .unwrap_or(span.start);
            let before = &text[..start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {col}: {msg} (at `{snippet}`)")
        }
        None => msg,
    }
}
