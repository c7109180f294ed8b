//! Writing a finished dump: whole or not at all.

use crate::error::Error;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` through a temporary file in the same directory
/// that is renamed into place when complete, so a reader never sees half a
/// dump and a failed write leaves nothing behind. `mode` applies on Unix
/// (subject to the umask when the file is created).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let fail = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path names no file",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(fail)?;
    let written = file.write_all(data).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// Writes all of `data` to an open file descriptor the caller owns.
#[cfg(unix)]
pub fn write_fd(fd: i32, data: &[u8]) -> Result<(), Error> {
    use std::mem::ManuallyDrop;
    use std::os::unix::io::FromRawFd;
    if fd < 0 {
        return Err(Error::InvalidOption {
            name: "file",
            reason: format!("{fd} is not a file descriptor"),
        });
    }
    // The descriptor stays the caller's: never close it.
    let mut file = ManuallyDrop::new(unsafe { fs::File::from_raw_fd(fd) });
    file.write_all(data)
        .and_then(|()| file.flush())
        .map_err(|source| Error::WriteFd { fd, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tbcollect-output-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_whole_file_and_leaves_no_temporary() {
        let dir = scratch("ok");
        let path = dir.join("dump.txt");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err =
            write_atomic(Path::new("/nonexistent-tbcollect/dump.txt"), b"x", 0o644).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write dump to /nonexistent-tbcollect/dump.txt: "),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn bad_descriptor_is_a_clear_error() {
        let err = write_fd(987_654, b"x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write dump to file descriptor 987654: "),
            "{err}"
        );
        assert!(write_fd(-1, b"x").is_err());
    }
}
