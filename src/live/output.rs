//! Writing a finished dump to a path the caller named.
//!
//! What is at the path decides how (docs/security.md, "Output paths"):
//! - nothing: a new file, created whole through a temporary file in the same
//!   directory and renamed into place; its mode is the caller's (0644 less
//!   the umask by default, 0600 when the dump holds local variables);
//! - a regular file: replaced the same way, keeping its mode (and, when we
//!   may, its owner), so a 0600 file stays 0600;
//! - a device, a FIFO (`/dev/null`, a named pipe, a terminal): opened and
//!   written through, as shell redirection does; never replaced. A FIFO no
//!   one reads is an error at once, and no write waits past
//!   [`WRITE_THROUGH_TIMEOUT`];
//! - `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`: written to
//!   that descriptor of this process;
//! - a symlink: followed only to a device or FIFO, or to a regular file this
//!   user owns (which is then replaced, the link kept). A dangling link or a
//!   link to another user's file is refused: that is how a planted link in a
//!   shared directory would make a privileged writer clobber a file.

use crate::error::Error;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The longest a write through a FIFO or device may wait for its reader.
pub const WRITE_THROUGH_TIMEOUT: Duration = Duration::from_secs(10);

/// Mode of a new dump file without local variables (less the umask).
pub const NEW_FILE_MODE: u32 = 0o644;
/// Mode of a new dump file that holds local variables.
pub const NEW_FILE_MODE_WITH_LOCALS: u32 = 0o600;

fn io_error(kind: std::io::ErrorKind, message: String) -> std::io::Error {
    std::io::Error::new(kind, message)
}

/// Writes `data` to `path` by the rules of this module's header. `new_mode`
/// is the mode of a file that does not exist yet (the umask applies).
#[cfg(unix)]
pub fn write_path(path: &Path, data: &[u8], new_mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let fail = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(fd) = own_descriptor(path) {
        return write_fd(fd, data);
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(e)),
    };
    let Some(meta) = meta else {
        return write_atomic(path, data, new_mode, None);
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return write_atomic(path, data, meta.mode() & 0o777, Some(&meta));
    }
    if kind.is_dir() {
        return Err(fail(io_error(
            std::io::ErrorKind::InvalidInput,
            "it is a directory".into(),
        )));
    }
    if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        return write_through(path, data, true).map_err(fail);
    }
    if kind.is_symlink() {
        let target = match fs::metadata(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(io_error(
                    std::io::ErrorKind::InvalidInput,
                    "it is a symlink to nothing; refusing to create a file through it".into(),
                )))
            }
            Err(e) => return Err(fail(e)),
        };
        let target_kind = target.file_type();
        if target_kind.is_fifo() || target_kind.is_char_device() || target_kind.is_block_device() {
            return write_through(path, data, false).map_err(fail);
        }
        if target_kind.is_file() {
            let me = crate::live::dumpdir::current_uid();
            if target.uid() != me {
                return Err(fail(io_error(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "it is a symlink to a file of uid {}, not of this user (uid {me}); refusing to follow it",
                        target.uid()
                    ),
                )));
            }
            let real = fs::canonicalize(path).map_err(fail)?;
            return write_atomic(&real, data, target.mode() & 0o777, Some(&target));
        }
        return Err(fail(io_error(
            std::io::ErrorKind::InvalidInput,
            "it is a symlink to neither a file nor a device".into(),
        )));
    }
    Err(fail(io_error(
        std::io::ErrorKind::InvalidInput,
        "it is neither a file, a device nor a FIFO".into(),
    )))
}

#[cfg(not(unix))]
pub fn write_path(path: &Path, data: &[u8], new_mode: u32) -> Result<(), Error> {
    write_atomic(path, data, new_mode, None)
}

/// This process's own descriptor that a path names (`/dev/stdout`,
/// `/dev/fd/3`, `/proc/self/fd/3`): opening those anew would start at the
/// beginning of a file stdout appends to, or replace it.
#[cfg(unix)]
fn own_descriptor(path: &Path) -> Option<i32> {
    let text = path.to_str()?;
    match text {
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    let number = text
        .strip_prefix("/dev/fd/")
        .or_else(|| text.strip_prefix("/proc/self/fd/"))?;
    number.parse::<i32>().ok().filter(|fd| *fd >= 0)
}

/// Opens a FIFO or device without waiting and writes `data` through it.
#[cfg(unix)]
fn write_through(path: &Path, data: &[u8], no_follow: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                io_error(
                    std::io::ErrorKind::BrokenPipe,
                    "it is a FIFO no process is reading".into(),
                )
            } else {
                e
            }
        })?;
    // What was looked at may have been swapped for a regular file since.
    let kind = file.metadata()?.file_type();
    if !(kind.is_fifo() || kind.is_char_device() || kind.is_block_device()) {
        return Err(io_error(
            std::io::ErrorKind::InvalidInput,
            "it changed from a device or FIFO while being opened".into(),
        ));
    }
    use std::os::unix::io::AsRawFd;
    write_nonblocking(file.as_raw_fd(), data, WRITE_THROUGH_TIMEOUT)
}

/// Writes all of `data` to a non-blocking descriptor, waiting for room at
/// most `timeout` in all.
#[cfg(unix)]
fn write_nonblocking(fd: i32, mut data: &[u8], timeout: Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !data.is_empty() {
        // SAFETY: `fd` is open for the duration of the call and `data` is a
        // valid buffer of `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io_error(
                        std::io::ErrorKind::TimedOut,
                        format!("its reader took no data for {} s", timeout.as_secs()),
                    ));
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = left.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd, for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Writes `data` to `path` through a temporary file in the same directory
/// that is renamed into place when complete, so a reader never sees half a
/// dump and a failed write leaves nothing behind. With `existing` (the file
/// being replaced), the new one gets its mode exactly and, when this process
/// may, its owner; else `mode` less the umask.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    existing: Option<&fs::Metadata>,
) -> Result<(), Error> {
    let fail = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        fail(io_error(
            std::io::ErrorKind::InvalidInput,
            "path names no file".into(),
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
        // A replacement starts private and gets the old mode once written:
        // the umask must not widen or narrow it.
        options.mode(if existing.is_some() { 0o600 } else { mode });
    }
    let mut file = options.open(&tmp).map_err(fail)?;
    let mut written = file.write_all(data);
    #[cfg(unix)]
    if let (Ok(()), Some(old)) = (&written, existing) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use std::os::unix::io::AsRawFd;
        // Root replacing another user's file gives it back to that user;
        // anyone else cannot, and the file is then theirs (as with `cp`).
        // SAFETY: the descriptor is open for the duration of the call.
        let _ = unsafe { libc::fchown(file.as_raw_fd(), old.uid(), old.gid()) };
        written = file.set_permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = (mode, existing);
    let written = written.and_then(|()| file.sync_all());
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
    // SAFETY: the File is never dropped (ManuallyDrop), so it only borrows
    // the caller's descriptor; a closed one makes write fail with EBADF.
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
        write_path(&path, b"one", 0o600).unwrap();
        write_path(&path, b"two", 0o644).unwrap();
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
            write_path(Path::new("/nonexistent-tbcollect/dump.txt"), b"x", 0o644).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write dump to /nonexistent-tbcollect/dump.txt: "),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn replacing_a_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let path = dir.join("dump.txt");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_path(&path, b"new", NEW_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn fifo_without_reader_fails_at_once_and_stays_a_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("fifo");
        let path = dir.join("pipe");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = write_path(&path, b"x", NEW_FILE_MODE).unwrap_err();
        assert!(err.to_string().contains("no process is reading"), "{err}");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlink_is_refused() {
        let dir = scratch("dangling");
        let path = dir.join("link");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).unwrap();
        let err = write_path(&path, b"x", NEW_FILE_MODE).unwrap_err();
        assert!(err.to_string().contains("symlink to nothing"), "{err}");
        assert!(!dir.join("elsewhere").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn own_descriptors_are_named_not_reopened() {
        for (path, fd) in [
            ("/dev/stdout", Some(1)),
            ("/dev/stderr", Some(2)),
            ("/dev/fd/7", Some(7)),
            ("/proc/self/fd/12", Some(12)),
            ("/dev/fd/x", None),
            ("/proc/1/fd/1", None),
            ("/tmp/dev/stdout", None),
        ] {
            assert_eq!(own_descriptor(Path::new(path)), fd, "{path}");
        }
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
