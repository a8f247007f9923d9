//! deb822 paragraphs (RFC 822-like control data), as used by Release and
//! Packages files.
//!
//! A paragraph is a run of non-blank lines; paragraphs are separated by one or
//! more blank lines. A field starts at column 0 with `Name:`; a line starting
//! with a space or tab continues the previous field, and a continuation line
//! holding only `.` stands for an empty line. Lines starting with `#` at column
//! 0 are comments. Field names are matched case-insensitively.
//!
//! The parser borrows from the input where it can: a single-line value is a
//! slice of the text, only multi-line values are allocated.

use std::borrow::Cow;

/// A syntax error in deb822 text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Deb822Error {
    #[error("line {line}: continuation line before any field")]
    OrphanContinuation { line: usize },
    #[error("line {line}: expected `Field: value`, found {text:?}")]
    NoColon { line: usize, text: String },
    #[error("line {line}: empty field name")]
    EmptyName { line: usize },
}

/// One `Name: value` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    /// The value: the first line trimmed, then each continuation line on its
    /// own line with its leading space removed (`.` lines become empty).
    pub value: Cow<'a, str>,
    /// 1-based line number of the field's first line.
    pub line: usize,
}

/// One paragraph: its fields in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// 1-based line number of the paragraph's first field.
    pub line: usize,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The first field named `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(|f| f.value.as_ref())
    }
}

/// Iterates over the paragraphs of `text`. Lines may end in `\n` or `\r\n`.
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        lines: text.split('\n').enumerate(),
        failed: false,
    }
}

/// Iterator returned by [`paragraphs`]. Stops after the first error.
pub struct Paragraphs<'a> {
    lines: std::iter::Enumerate<std::str::Split<'a, char>>,
    failed: bool,
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, Deb822Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut para: Option<Paragraph<'a>> = None;
        for (idx, raw) in self.lines.by_ref() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                if para.is_some() {
                    return para.map(Ok);
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(field) = para.as_mut().and_then(|p| p.fields.last_mut()) else {
                    self.failed = true;
                    return Some(Err(Deb822Error::OrphanContinuation { line: line_no }));
                };
                let cont = &line[1..];
                let cont = if cont.trim() == "." {
                    ""
                } else {
                    cont.trim_end()
                };
                let value = field.value.to_mut();
                value.push('\n');
                value.push_str(cont);
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                self.failed = true;
                return Some(Err(Deb822Error::NoColon {
                    line: line_no,
                    text: line.chars().take(80).collect(),
                }));
            };
            let name = name.trim_end();
            if name.is_empty() {
                self.failed = true;
                return Some(Err(Deb822Error::EmptyName { line: line_no }));
            }
            let para = para.get_or_insert_with(|| Paragraph {
                line: line_no,
                fields: Vec::new(),
            });
            para.fields.push(Field {
                name,
                value: Cow::Borrowed(value.trim()),
                line: line_no,
            });
        }
        para.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paragraphs_and_continuations() {
        let text = "A: 1\nB:  two words \n\n\n# comment\nC:\n first\n .\n third\r\nD: x\n";
        let paras: Vec<_> = paragraphs(text).collect::<Result<_, _>>().expect("parse");
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].line, 1);
        assert_eq!(paras[0].get("a"), Some("1"));
        assert_eq!(paras[0].get("B"), Some("two words"));
        assert_eq!(paras[1].line, 6);
        assert_eq!(paras[1].get("C"), Some("\nfirst\n\nthird"));
        assert_eq!(paras[1].field("D").map(|f| f.line), Some(10));
        assert_eq!(paras[1].get("missing"), None);
    }

    #[test]
    fn reports_line_of_syntax_errors() {
        let err = paragraphs("A: 1\nnot a field\n").find_map(Result::err);
        assert_eq!(
            err,
            Some(Deb822Error::NoColon {
                line: 2,
                text: "not a field".into()
            })
        );
        let err = paragraphs(" orphan\n").find_map(Result::err);
        assert_eq!(err, Some(Deb822Error::OrphanContinuation { line: 1 }));
    }

    #[test]
    fn empty_text_has_no_paragraphs() {
        assert_eq!(paragraphs("").count(), 0);
        assert_eq!(paragraphs("\n\n  \n").count(), 0);
    }
}
