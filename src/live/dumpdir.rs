//! The dump directory and the dump files in it.
//!
//! Live dumps (a signal, a watchdog, a raw dump made without the GIL) go to a
//! directory other users cannot tamper with: it must be a real directory (not
//! a symlink), owned by the expected user and writable by nobody else. Each
//! dump is a new file `tbcollect-<pid>-<UTC time>-<seq>.<ext>`, mode 0600,
//! written under a hidden temporary name created exclusively and then linked
//! into place whole, so a reader never sees half a dump and no dump ever
//! replaces another.
//!
//! Everything works relative to one descriptor of the directory, opened
//! without following a symlink, so swapping the directory for a symlink
//! between the check and the write gains an attacker nothing. Pure Rust with
//! no interpreter: the raw-dump path uses it from a thread that never holds
//! the GIL.

use crate::error::Error;
use crate::model::civil_from_days;
use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every dump file: only the owner reads a dump (it can show secrets
/// in file names, thread names, locals).
pub const FILE_MODE: u32 = 0o600;
/// Mode the directory is created with.
pub const DIR_MODE: u32 = 0o700;

/// Numbers the dumps of this process in the order they were made; shared by
/// every writer (full dumps, raw dumps, watchdog reports).
pub(crate) static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// How many names are tried before giving up (only reached when something
/// keeps creating files with our names).
const NAME_ATTEMPTS: u32 = 1000;

/// The effective uid of this process: the owner its files get.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `tbcollect-<pid>-<YYYYmmddTHHMMSSZ>-<seq>.<ext>`: sortable by time, then
/// by sequence, and free of characters any shell or filesystem minds.
pub fn dump_file_name(pid: u32, unix_micros: i64, seq: u64, extension: &str) -> String {
    let mut name = String::new();
    write_dump_file_name(&mut name, pid, unix_micros, seq, extension).expect("a String takes it");
    name
}

/// [`dump_file_name`] into any writer, without allocating: the abort handler
/// names its dump from inside a signal handler.
pub fn write_dump_file_name(
    out: &mut impl std::fmt::Write,
    pid: u32,
    unix_micros: i64,
    seq: u64,
    extension: &str,
) -> std::fmt::Result {
    let secs = unix_micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    write!(
        out,
        "tbcollect-{pid}-{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z-{seq:04}.{extension}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::DumpDirectory {
        path: path.to_path_buf(),
        reason: "the path contains a NUL byte".into(),
    })
}

/// A checked dump directory, held open by descriptor.
#[derive(Debug)]
pub struct DumpDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl DumpDir {
    /// Opens (and with `create`, first creates, mode 0700) the directory and
    /// checks it is safe: not a symlink, a directory, owned by `owner`, not
    /// writable by group or others; with `create` also that we can write it.
    pub fn open(path: &Path, create: bool, owner: u32) -> Result<DumpDir, Error> {
        let refuse = |reason: String| Error::DumpDirectory {
            path: path.to_path_buf(),
            reason,
        };
        if create {
            create_private_dir(path).map_err(|e| refuse(format!("cannot be created: {e}")))?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse("is a symlink; refusing to follow it".into()))
            }
            Ok(meta) if !meta.is_dir() => return Err(refuse("is not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse("does not exist".into()))
            }
            Err(e) => return Err(refuse(format!("cannot be read: {e}"))),
        }
        let cpath = c_path(path)?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let raw = unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(refuse(match e.raw_os_error() {
                Some(libc::ELOOP) => "is a symlink; refusing to follow it".into(),
                _ => format!("cannot be opened: {e}"),
            }));
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The checks go to the opened directory itself, not to the path,
        // which could have been swapped since.
        let meta = fs::File::from(fd.try_clone().map_err(|e| refuse(e.to_string()))?)
            .metadata()
            .map_err(|e| refuse(format!("cannot be read: {e}")))?;
        if meta.uid() != owner {
            return Err(refuse(format!(
                "is owned by uid {}, not by uid {owner}; refusing it",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "is writable by group or others (mode {:04o}); refusing it",
                meta.mode() & 0o7777
            )));
        }
        // A writer finds out now, not at the first signal, that it cannot
        // write here.
        // SAFETY: a valid directory descriptor and C string.
        if create
            // SAFETY: `fd` is a valid directory descriptor and the path a C string.
            && unsafe {
                libc::faccessat(
                    fd.as_raw_fd(),
                    c".".as_ptr(),
                    libc::W_OK | libc::X_OK,
                    libc::AT_EACCESS,
                )
            } != 0
        {
            return Err(refuse(format!(
                "is not writable: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(DumpDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` as a new dump file and returns its path.
    pub fn write_new(&self, extension: &str, data: &[u8]) -> Result<PathBuf, Error> {
        let mut temp = self.create_temp()?;
        temp.write_all(data)?;
        temp.publish(extension)
    }

    /// A new, empty, hidden temporary file (mode 0600) for a dump that is
    /// written piece by piece; [`TempDump::publish`] puts it in place.
    pub fn create_temp(&self) -> Result<TempDump<'_>, Error> {
        let pid = std::process::id();
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let name = CString::new(format!(".tbcollect-{pid}-{seq}.tmp")).expect("no NUL");
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            let raw = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    FILE_MODE as libc::c_uint,
                )
            };
            if raw >= 0 {
                return Ok(TempDump {
                    dir: self,
                    seq,
                    // SAFETY: just opened, owned by the TempDump.
                    fd: unsafe { OwnedFd::from_raw_fd(raw) },
                    name,
                    published: false,
                });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(self.write_error(&name, e));
            }
            last = Some(e);
        }
        Err(self.write_error(
            c".tbcollect.tmp",
            last.unwrap_or_else(|| io::Error::other("no free name")),
        ))
    }

    fn write_error(&self, name: &CStr, source: io::Error) -> Error {
        Error::Write {
            path: self.path.join(std::ffi::OsStr::from_bytes(name.to_bytes())),
            source,
        }
    }
}

/// Creates `path` mode 0700 if it is missing (its parents with the default
/// mode). An existing path is left alone: `DumpDir::open` judges it.
fn create_private_dir(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {
            // The umask may have taken bits away (never added any): make the
            // mode exactly 0700 so the owner can write.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
        }
        // Another process created it first: fine, it gets checked.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The retention rule, on by default: a directory keeps the newest
/// [`DEFAULT_KEEP`] dumps of each process and no dump older than
/// [`DEFAULT_MAX_AGE_DAYS`] days. 0 turns either limit off.
pub const DEFAULT_KEEP: u64 = 50;
pub const DEFAULT_MAX_AGE_DAYS: u64 = 7;
static KEEP: AtomicU64 = AtomicU64::new(DEFAULT_KEEP);
static MAX_AGE_SECS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_AGE_DAYS * 86_400);

/// Sets the retention rule applied after every dump this process writes.
pub fn set_retention(keep: u64, max_age: Option<std::time::Duration>) {
    KEEP.store(keep, Ordering::Relaxed);
    MAX_AGE_SECS.store(max_age.map_or(0, |d| d.as_secs().max(1)), Ordering::Relaxed);
}

/// The retention rule in force: (dumps kept per process, 0 for all; the
/// oldest age kept, None for any).
pub fn retention() -> (u64, Option<std::time::Duration>) {
    let age = MAX_AGE_SECS.load(Ordering::Relaxed);
    (
        KEEP.load(Ordering::Relaxed),
        (age > 0).then(|| std::time::Duration::from_secs(age)),
    )
}

/// (pid, time, sequence) of a finished dump's file name, None for any other name.
fn parse_dump_name(name: &[u8]) -> Option<(u32, [u8; 16], u64)> {
    let name = std::str::from_utf8(name).ok()?;
    let rest = name.strip_prefix("tbcollect-")?;
    let stem = rest
        .strip_suffix(".txt")
        .or_else(|| rest.strip_suffix(".json"))?;
    let mut parts = stem.splitn(3, '-');
    let pid = parts.next()?;
    let time = parts.next()?;
    let seq = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(seq) || time.len() != 16 {
        return None;
    }
    let mut stamp = [0u8; 16];
    stamp.copy_from_slice(time.as_bytes());
    Some((pid.parse().ok()?, stamp, seq.parse().ok()?))
}

impl DumpDir {
    /// Removes the dumps the retention rule no longer keeps: of process
    /// `pid`, all but the newest `keep` (0: all kept); of any process, those
    /// last modified more than `max_age` before `now`. Only regular files
    /// with a dump's name are touched, relative to the checked descriptor.
    /// Returns how many were removed.
    pub fn prune(
        &self,
        pid: u32,
        keep: u64,
        max_age: Option<std::time::Duration>,
        now: std::time::SystemTime,
    ) -> io::Result<usize> {
        if keep == 0 && max_age.is_none() {
            return Ok(0);
        }
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let cutoff = max_age.map(|age| now - age.as_secs() as i64);
        let dirfd = self.fd.as_raw_fd();
        let mut ours: Vec<([u8; 16], u64, CString)> = Vec::new();
        let mut removed = 0;
        for name in self.entries()? {
            let Some((owner, stamp, seq)) = parse_dump_name(name.to_bytes()) else {
                continue;
            };
            let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
            // SAFETY: valid descriptor and name; `st` is filled on success.
            if unsafe {
                libc::fstatat(
                    dirfd,
                    name.as_ptr(),
                    st.as_mut_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            } != 0
            {
                continue;
            }
            // SAFETY: fstatat succeeded.
            let st = unsafe { st.assume_init() };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            // time_t is 32 bits on some targets.
            #[allow(clippy::useless_conversion)]
            let mtime = i64::from(st.st_mtime);
            if cutoff.is_some_and(|c| mtime < c) {
                // SAFETY: as above; removes the name in this directory only.
                if unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) } == 0 {
                    removed += 1;
                }
                continue;
            }
            if owner == pid {
                ours.push((stamp, seq, name));
            }
        }
        if keep > 0 && ours.len() as u64 > keep {
            ours.sort();
            let excess = ours.len() - keep as usize;
            for (_, _, name) in &ours[..excess] {
                // SAFETY: as above.
                if unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) } == 0 {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The names in the directory, read through its descriptor.
    fn entries(&self) -> io::Result<Vec<CString>> {
        // SAFETY: duplicates our descriptor; fdopendir takes the copy.
        let copy = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` is ours; on success the DIR owns it.
        let dir = unsafe { libc::fdopendir(copy) };
        if dir.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so the copy is still ours to close.
            unsafe { libc::close(copy) };
            return Err(e);
        }
        // A duplicate shares the offset of the original: start from the top.
        // SAFETY: a valid DIR.
        unsafe { libc::rewinddir(dir) };
        let mut names = Vec::new();
        loop {
            // SAFETY: a valid DIR; the entry is copied before the next call.
            let entry = unsafe { libc::readdir(dir) };
            if entry.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            names.push(name.to_owned());
        }
        // SAFETY: closes the DIR and the copy it owns.
        unsafe { libc::closedir(dir) };
        Ok(names)
    }
}

/// A dump being written under a hidden name; removed again unless published.
#[derive(Debug)]
pub struct TempDump<'a> {
    dir: &'a DumpDir,
    /// The sequence number reserved with the temporary name; the final name
    /// gets it too unless that name is taken.
    seq: u64,
    fd: OwnedFd,
    name: CString,
    published: bool,
}

impl TempDump<'_> {
    /// The open descriptor of the temporary file (for writers outside Rust,
    /// such as faulthandler).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        use std::io::Write;
        let mut file = std::mem::ManuallyDrop::new(
            // SAFETY: borrows our descriptor; ManuallyDrop keeps it open.
            unsafe { fs::File::from_raw_fd(self.fd.as_raw_fd()) },
        );
        file.write_all(data)
            .map_err(|e| self.dir.write_error(&self.name, e))
    }

    /// Syncs the file and links it into place under a new dump name (never
    /// replacing an existing file); returns the final path.
    /// Then applies the retention rule ([`set_retention`]) to the directory.
    pub fn publish(self, extension: &str) -> Result<PathBuf, Error> {
        let dir = self.dir;
        let path = self.link_into_place(extension)?;
        let (keep, max_age) = retention();
        // Best effort: a dump that is written is never undone by a failed clean-up.
        let _ = dir.prune(
            std::process::id(),
            keep,
            max_age,
            std::time::SystemTime::now(),
        );
        Ok(path)
    }

    fn link_into_place(mut self, extension: &str) -> Result<PathBuf, Error> {
        // SAFETY: our own open descriptor.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(self.dir.write_error(&self.name, io::Error::last_os_error()));
        }
        let dirfd = self.dir.fd.as_raw_fd();
        let pid = std::process::id();
        let mut seq = self.seq;
        for _ in 0..NAME_ATTEMPTS {
            let name = dump_file_name(pid, now_micros(), seq, extension);
            let cname = CString::new(name.clone()).expect("no NUL");
            // SAFETY: valid descriptors and NUL-terminated names. linkat
            // fails with EEXIST instead of replacing a file of that name.
            let linked =
                unsafe { libc::linkat(dirfd, self.name.as_ptr(), dirfd, cname.as_ptr(), 0) };
            let result = if linked == 0 {
                Ok(())
            } else {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EEXIST) => {
                        seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Filesystems without hard links: rename instead (the
                    // pid, time and sequence already make the name unique).
                    Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::EMLINK) => {
                        // SAFETY: as above.
                        if unsafe {
                            libc::renameat(dirfd, self.name.as_ptr(), dirfd, cname.as_ptr())
                        } == 0
                        {
                            self.published = true;
                            return Ok(self.dir.path.join(name));
                        }
                        Err(io::Error::last_os_error())
                    }
                    _ => Err(e),
                }
            };
            return match result {
                Ok(()) => {
                    self.published = true;
                    // SAFETY: as above; the dump is in place under its name.
                    unsafe { libc::unlinkat(dirfd, self.name.as_ptr(), 0) };
                    Ok(self.dir.path.join(name))
                }
                Err(e) => Err(self.dir.write_error(&cname, e)),
            };
        }
        Err(self.dir.write_error(
            &self.name,
            io::Error::new(io::ErrorKind::AlreadyExists, "no free dump name"),
        ))
    }
}

impl Drop for TempDump<'_> {
    fn drop(&mut self) {
        if !self.published {
            // SAFETY: valid descriptor and name; a failed write leaves nothing.
            unsafe { libc::unlinkat(self.dir.fd.as_raw_fd(), self.name.as_ptr(), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tbcollect-dumpdir-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_sort_by_time_then_sequence() {
        assert_eq!(
            dump_file_name(42, 1_795_307_911_500_000, 7, "txt"),
            "tbcollect-42-20261122T003831Z-0007.txt"
        );
        assert_eq!(
            dump_file_name(1, 0, 12345, "json"),
            "tbcollect-1-19700101T000000Z-12345.json"
        );
    }

    #[test]
    fn creates_private_directory_and_whole_files() {
        let dir = scratch("create").join("dumps");
        let dd = DumpDir::open(&dir, true, current_uid()).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let a = dd.write_new("txt", b"one\n").unwrap();
        let b = dd.write_new("txt", b"two\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"one\n");
        assert_eq!(
            fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left behind: {names:?}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn prune_keeps_the_newest_of_a_process_and_drops_old_files() {
        let dir = scratch("prune");
        let dd = DumpDir::open(&dir, true, current_uid()).unwrap();
        let names = [
            "tbcollect-7-20260101T000000Z-0001.txt",
            "tbcollect-7-20260101T000000Z-0002.json",
            "tbcollect-7-20260102T000000Z-0003.txt",
            "tbcollect-8-20260101T000000Z-0001.txt",
            "notes.txt",
            ".tbcollect-7-4.tmp",
        ];
        for name in names {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let now = std::time::SystemTime::now();
        assert_eq!(dd.prune(7, 2, None, now).unwrap(), 1);
        assert!(!dir.join(names[0]).exists(), "the oldest of pid 7 goes");
        for kept in &names[1..] {
            assert!(dir.join(kept).exists(), "{kept}");
        }
        // A day from now, files a day old are past a 1-second age limit;
        // only dump names are touched.
        let later = now + std::time::Duration::from_secs(86_400);
        let age = Some(std::time::Duration::from_secs(1));
        assert_eq!(dd.prune(7, 0, age, later).unwrap(), 3);
        assert!(dir.join("notes.txt").exists());
        assert!(dir.join(".tbcollect-7-4.tmp").exists());
        assert_eq!(
            dd.prune(7, 0, None, later).unwrap(),
            0,
            "no limits, nothing removed"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dump_names_parse_back() {
        let name = dump_file_name(42, 1_795_307_911_500_000, 7, "txt");
        let (pid, stamp, seq) = parse_dump_name(name.as_bytes()).unwrap();
        assert_eq!((pid, &stamp, seq), (42, b"20261122T003831Z", 7));
        for other in [
            "tbcollect-x-20261122T003831Z-0007.txt",
            "tbcollect-42-2026-0007.txt",
            "tbcollect-42-20261122T003831Z-0007.svg",
            ".tbcollect-42-7.tmp",
        ] {
            assert!(parse_dump_name(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn unpublished_temp_is_removed() {
        let dir = scratch("temp");
        let dd = DumpDir::open(&dir, true, current_uid()).unwrap();
        {
            let mut t = dd.create_temp().unwrap();
            t.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_symlink_open_and_foreign_directories() {
        let base = scratch("refuse");
        fs::create_dir_all(&base).unwrap();
        let real = base.join("real");
        DumpDir::open(&real, true, current_uid()).unwrap();

        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = DumpDir::open(&link, true, current_uid()).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");

        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = DumpDir::open(&open, true, current_uid()).unwrap_err();
        assert!(
            err.to_string()
                .contains("writable by group or others (mode 0777)"),
            "{err}"
        );

        let err = DumpDir::open(&real, false, current_uid() + 1).unwrap_err();
        assert!(err.to_string().contains("is owned by uid"), "{err}");

        let file = base.join("file");
        fs::write(&file, b"x").unwrap();
        let err = DumpDir::open(&file, true, current_uid()).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");

        let err = DumpDir::open(&base.join("missing"), false, current_uid()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        fs::remove_dir_all(base).unwrap();
    }
}
