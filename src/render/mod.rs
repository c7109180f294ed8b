//! Renderers: each turns a [`Snapshot`](crate::model::Snapshot) into bytes and
//! knows nothing of PyO3, so `cargo test` checks them on literal snapshots.

pub mod collapsed;
pub mod diff;
pub mod escape;
pub mod json;
pub mod summary;
pub mod svg;
pub mod text;
pub mod tree;

use crate::error::Error;
use crate::model::Snapshot;
use std::str::FromStr;

/// Every output format, parsed from its name in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// Folded stacks (`frame;frame count`), the input of flamegraph tools.
    Collapsed,
    /// A flamegraph picture of every stack.
    Svg,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &["text", "json", "collapsed", "svg"];

    /// The file extension a dump in this format gets.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "json",
            Format::Collapsed => "folded",
            Format::Svg => "svg",
        }
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self, Error> {
        match name {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "collapsed" => Ok(Format::Collapsed),
            "svg" => Ok(Format::Svg),
            other => Err(Error::UnknownFormat {
                given: other.to_string(),
                expected: Format::NAMES,
            }),
        }
    }
}

/// Options every renderer may look at; each ignores what it has no use for.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub text: text::TextOptions,
    pub json: json::JsonOptions,
}

pub fn render(snapshot: &Snapshot, format: Format, options: &RenderOptions) -> String {
    match format {
        Format::Text => text::render_to_string(snapshot, &options.text),
        Format::Json => json::render_to_string(snapshot, &options.json),
        Format::Collapsed => collapsed::render_to_string(snapshot),
        Format::Svg => svg::render_to_string(snapshot),
    }
}

/// Equal texts: the same bytes in memory (one address comparison, the usual
/// case for texts one shared allocation holds: file names, function names,
/// static state words), or equal bytes.
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    (a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())) || a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for name in Format::NAMES {
            assert!(name.parse::<Format>().is_ok());
        }
        let err = "yaml".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown format 'yaml' (expected one of: text, json, collapsed, svg)"
        );
    }
}
