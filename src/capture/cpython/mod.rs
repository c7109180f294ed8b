//! What the capture knows of CPython's internals, one place per version.
//!
//! 3.13 and later publish their own offsets for debuggers: `_PyRuntime`
//! begins with `_Py_DebugOffsets` (3.13+), and the `_asyncio` extension
//! carries `Py_AsyncioModuleDebugOffsets` in its `.AsyncioDebug` section
//! (3.14+). Where they exist they are preferred over compiled-in layouts;
//! the per-version files say where to find what in them.

pub mod published;
pub mod v3_14;
pub mod v3_15;

/// The CPython versions this build of tbcollect knows how to read.
pub const KNOWN: std::ops::RangeInclusive<(u8, u8)> = (3, 9)..=(3, 15);

/// Test hook: `TBCOLLECT_TEST_PRETEND_PYTHON=3.99` makes the capture take
/// the running interpreter for that version, so that the "unknown version"
/// path can be tested on a real interpreter.
pub const PRETEND_ENV: &str = "TBCOLLECT_TEST_PRETEND_PYTHON";

/// The running interpreter's (major, minor), or the pretended one.
pub fn running_version(actual: (u8, u8)) -> (u8, u8) {
    std::env::var(PRETEND_ENV)
        .ok()
        .and_then(|v| parse_version(&v))
        .unwrap_or(actual)
}

fn parse_version(text: &str) -> Option<(u8, u8)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Why the interpreter's task registries cannot be read, if they cannot:
/// a version newer (or older) than this build knows, or a free-threaded
/// build, where other threads mutate the task lists without a GIL to stop them.
pub fn unreadable(version: (u8, u8), free_threaded: bool) -> Option<String> {
    if free_threaded {
        return Some(format!(
            "free-threaded CPython {}.{} (Py_GIL_DISABLED) is not supported: \
             its task lists change under other threads while they are read",
            version.0, version.1
        ));
    }
    if !KNOWN.contains(&version) {
        return Some(format!(
            "CPython {}.{} is not one this tbcollect knows ({}.{} to {}.{}); \
             its task layout is unknown",
            version.0,
            version.1,
            KNOWN.start().0,
            KNOWN.start().1,
            KNOWN.end().0,
            KNOWN.end().1
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_free_threaded_versions_are_unreadable() {
        assert_eq!(unreadable((3, 14), false), None);
        assert_eq!(unreadable((3, 9), false), None);
        let newer = unreadable((3, 99), false).unwrap();
        assert!(
            newer.contains("CPython 3.99") && newer.contains("3.9 to 3.15"),
            "{newer}"
        );
        assert!(unreadable((3, 8), false).is_some());
        assert!(unreadable((3, 14), true)
            .unwrap()
            .contains("Py_GIL_DISABLED"));
    }

    #[test]
    fn versions_parse_as_major_dot_minor() {
        assert_eq!(parse_version("3.99"), Some((3, 99)));
        assert_eq!(parse_version(" 3.14\n"), Some((3, 14)));
        assert_eq!(parse_version("3"), None);
        assert_eq!(parse_version("x.y"), None);
    }
}
