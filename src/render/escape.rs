//! Text that came from the target (names, file and function names, source
//! lines, values, and everything in a loaded dump) made safe to print: it
//! can neither start a new line nor talk to the terminal.
//!
//! Escaped: every C0 control (`\n`, `\r`, `\t` by name, the rest as `\x1b`),
//! DEL, the C1 controls (U+0080-U+009F: a UTF-8 terminal takes U+009B as
//! CSI), the Unicode line and paragraph separators, and the bidirectional
//! overrides and isolates that reorder what a reader sees ("Trojan Source").
//! A backslash is left as it is, so escaping escaped text changes nothing and
//! a text may pass through here more than once on its way out.

use std::borrow::Cow;
use std::fmt::Write;

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character above escaped; borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    // Most texts are plain ASCII names: one pass over the bytes settles them.
    let suspect = |b: &u8| *b < 0x20 || *b == 0x7f || *b == 0xc2 || *b == 0xe2;
    if !text.as_bytes().iter().any(suspect) || !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `"text"`, escaped, with a double quote inside shown as `\"` so the quotes
/// around a name are always the ones the renderer put there.
pub fn quoted(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len() + 2);
    out.push('"');
    for c in escaped.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        for text in ["MainThread", "/srv/app.py", "Task-1 × 3", "naïve — ok", ""] {
            assert!(matches!(escape(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn controls_escapes_and_separators_are_escaped() {
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\x1b[2J\x07"), "\\x1b[2J\\x07");
        assert_eq!(escape("\u{9b}31m\x7f"), "\\x9b31m\\x7f");
        assert_eq!(escape("x\u{2028}y\u{202e}z"), "x\\u2028y\\u202ez");
        assert!(!escape("\x00\x01\x1f\u{85}\u{2066}")
            .chars()
            .any(needs_escape));
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = escape("C:\\dir\n\x1b]0;title\x07");
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn quoted_keeps_its_quotes() {
        assert_eq!(quoted("worker"), "\"worker\"");
        assert_eq!(quoted("a\" (ident 1)\nb"), "\"a\\\" (ident 1)\\nb\"");
    }
}
