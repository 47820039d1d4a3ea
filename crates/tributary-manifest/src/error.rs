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

/// Turns a TOML/serde error message into a message and a fix.
pub(crate) fn explain_parse_error(message: &str) -> (String, String) {
    let message = message.trim().to_owned();
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
}
