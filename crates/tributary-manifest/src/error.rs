//! Manifest errors: every one names the file, the line and the fix.

use std::fmt;
use std::ops::Range;

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or `builtin:NAME`).
    pub file: String,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n  help: {}",
            self.file, self.line, self.column, self.message, self.help
        )
    }
}

/// A manifest that could not be loaded, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics against one source text.
pub(crate) struct Reporter<'a> {
    file: &'a str,
    text: &'a str,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            text,
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let (line, column) = match span {
            Some(span) => line_col(self.text, span.start),
            None => (1, 1),
        };
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            help: help.into(),
        });
    }

    pub(crate) fn finish(mut self) -> Result<(), ManifestError> {
        if self.diagnostics.is_empty() {
            Ok(())
        } else {
            self.diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(ManifestError {
                diagnostics: self.diagnostics,
            })
        }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Most parents a child entity may be listed under at once (`concurrency`).
pub(crate) const MAX_CONCURRENCY: u32 = 64;

/// The message for a whole-number key whose value is out of range.
pub(crate) fn whole_number_message(key: &str, got: &str) -> String {
    format!("`{key}` must be a positive whole number, got {got}")
}

/// The fix for a whole-number key, with its upper bound when one is known.
pub(crate) fn whole_number_help(max: Option<u64>) -> String {
    match max {
        Some(max) => format!("use a whole number from 1 to {max}"),
        None => "use a whole number of 1 or more".to_owned(),
    }
}

/// The diagnostic for a file that is not UTF-8: the position of the first
/// invalid byte, lines counted by the `\n` bytes before it.
pub(crate) fn not_utf8(file: &str, bytes: &[u8], err: std::str::Utf8Error) -> Diagnostic {
    let offset = err.valid_up_to();
    let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
    let (line, column) = line_col(valid, offset);
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message: format!(
            "the file is not UTF-8: invalid byte sequence starting with 0x{:02x}",
            bytes[offset]
        ),
        help: "save the file as UTF-8".to_owned(),
    }
}

/// Turns a TOML/serde error into a message and a fix; `span` is where
/// `text` went wrong.
pub(crate) fn explain_parse_error(
    text: &str,
    span: Option<Range<usize>>,
    message: &str,
) -> (String, String) {
    let message = message.trim().to_owned();
    if let Some(explained) = span.and_then(|span| explain_whole_number(text, span.start, &message))
    {
        return explained;
    }
    let help = if message.starts_with("unknown field") {
        "remove the key or correct its spelling to one of the expected keys".to_owned()
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!("add the required key {rest} to this table")
    } else if message.starts_with("unknown variant") {
        "use one of the expected values".to_owned()
    } else if message.starts_with("invalid type") {
        "give the value the expected type (quote strings, no quotes on numbers and booleans)"
            .to_owned()
    } else if message.contains("duplicate key") {
        "each key may appear once per table; remove the repeated one".to_owned()
    } else {
        "fix the TOML syntax at this position (see https://toml.io)".to_owned()
    };
    (message, help)
}

/// A number that does not fit an unsigned key (serde's "invalid value:
/// integer `-5`, expected u32" or "invalid type: floating point `1.5`,
/// expected u32"), explained with the key's name: every unsigned key of
/// the format is a count or a size that must be 1 or more.
fn explain_whole_number(text: &str, offset: usize, message: &str) -> Option<(String, String)> {
    let (found, expected) = message.rsplit_once(", expected ")?;
    let type_max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" | "usize" => u64::MAX,
        _ => return None,
    };
    let got = found
        .strip_prefix("invalid value: integer ")
        .or_else(|| found.strip_prefix("invalid type: floating point "))?
        .strip_prefix('`')?
        .strip_suffix('`')?;
    let key = key_before(text, offset).unwrap_or("value");
    let max = known_max(key, text);
    if got.parse::<u64>().is_ok() {
        // Positive and whole, so too big for the type.
        let max = max.unwrap_or(type_max).min(type_max);
        return Some((
            format!("`{key}` must be a whole number from 1 to {max}, got {got}"),
            whole_number_help(Some(max)),
        ));
    }
    Some((whole_number_message(key, got), whole_number_help(max)))
}

/// The upper bound of a whole-number key, where the manifest or the format
/// sets one: `page_size` up to `max_page_size` (read from `text`, which is
/// valid TOML when serde fails on a value), `concurrency` up to 64.
fn known_max(key: &str, text: &str) -> Option<u64> {
    match key {
        "concurrency" => Some(u64::from(MAX_CONCURRENCY)),
        "page_size" => text
            .parse::<toml::Table>()
            .ok()?
            .get("pagination")?
            .get("max_page_size")?
            .as_integer()
            .and_then(|max| u64::try_from(max).ok())
            .filter(|max| (1..=u64::from(u32::MAX)).contains(max)),
        _ => None,
    }
}

/// The key a value at `offset` is assigned to: `page_size` for the `-5` of
/// `page_size = -5` (also in inline tables and after dotted or quoted keys).
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?.trim_end().strip_suffix('=')?.trim_end();
    let key = if let Some(quoted) = before.strip_suffix('"') {
        &quoted[quoted.rfind('"')? + 1..]
    } else {
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        &before[start..]
    };
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn key_before_finds_bare_dotted_quoted_and_inline_keys() {
        fn at(text: &str) -> Option<&str> {
            key_before(text, text.find("-5").unwrap())
        }
        assert_eq!(at("page_size = -5"), Some("page_size"));
        assert_eq!(at("pagination.page_size=-5"), Some("page_size"));
        assert_eq!(at("\"page_size\" = -5"), Some("page_size"));
        assert_eq!(at("x = { requests = -5 }"), Some("requests"));
        assert_eq!(at("x = [-5]"), None);
    }
}
