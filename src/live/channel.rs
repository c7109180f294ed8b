//! The request channel: how `tbcollect dump PID` asks a process for a dump
//! without sending it a signal.
//!
//! A signal can mean something else by the time it arrives (gunicorn, celery
//! and uWSGI give SIGQUIT, SIGUSR1 and SIGUSR2 meanings of their own, and any
//! `signal.signal()` call replaces our handler), so the command line talks to
//! a Unix socket no other code in the process knows about:
//!
//! - an abstract socket `tbcollect/<pid>/<random hex>` (no file to leave
//!   behind; the random part means no other process can take the name first);
//! - advertised by a memfd named `tbcollect-channel:<socket name>`, which
//!   `tbcollect dump` finds in `/proc/PID/fd` (readable by the process's user
//!   and root only, the same people the channel answers);
//! - served by the watcher thread, which never holds the GIL; each peer is
//!   checked with `SO_PEERCRED` (this process's user, or root) before a byte
//!   of its request is read;
//! - one request a connection, one line: `tbcollect/1 dump format=json
//!   timeout=10` (without `format=`, the format of its dump files); the answer is one line, `ok <format> full|raw <length>`
//!   followed by that many bytes, or `err <code> <message>`.
//!
//! Pure Rust, no interpreter: `signals` drives it from the watcher. Linux
//! only (abstract sockets, `SO_PEERCRED`, memfd names in `/proc`): elsewhere
//! [`Listener::bind`] fails with [`unavailable`], the installation says so
//! in one line and dumps on the signal work as usual.

#[cfg(any(target_os = "linux", target_os = "android"))]
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The first word of every request and of nothing else.
pub const PROTOCOL: &str = "tbcollect/1";
/// How the advertisement's memfd name starts (in `/proc/PID/fd/N` it reads
/// `/memfd:tbcollect-channel:tbcollect/PID/HEX (deleted)`).
pub const CHANNEL_BEACON_PREFIX: &str = "tbcollect-channel:";
/// A request is one short line; anything longer is not ours.
pub const MAX_REQUEST: usize = 512;
/// How long a peer may take to send its request.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to read the answer.
pub const ANSWER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests are served at most this often (a loop asking for dumps costs the
/// process one capture a second at most).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a request may ask to wait for its dump.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The formats a request may ask for (the renderers' names).
pub const FORMATS: &[&str] = &["text", "json", "collapsed", "svg"];

/// A request for a dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// None: the format the process writes its dump files in.
    pub format: Option<String>,
    /// How long the asker waits: the channel gives up on the full dump then.
    pub timeout: Duration,
}

/// Parses one request line. The error is the message sent back.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some(PROTOCOL) {
        return Err(format!("not a {PROTOCOL} request"));
    }
    if words.next() != Some("dump") {
        return Err("unknown request (the only one is 'dump')".into());
    }
    let mut request = Request {
        format: None,
        timeout: Duration::from_secs(10),
    };
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {:?}", clip(word)))?;
        match key {
            "format" => {
                if !FORMATS.contains(&value) {
                    return Err(format!(
                        "unknown format {:?} (expected one of: {})",
                        clip(value),
                        FORMATS.join(", ")
                    ));
                }
                request.format = Some(value.into());
            }
            "timeout" => {
                let seconds: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        format!("timeout must be a positive number, got {:?}", clip(value))
                    })?;
                request.timeout = Duration::from_secs_f64(seconds).min(MAX_TIMEOUT);
            }
            _ => return Err(format!("unknown option {:?}", clip(key))),
        }
    }
    Ok(request)
}

/// Why there is no channel on this platform.
pub fn unavailable() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the request channel needs Linux (abstract Unix sockets, SO_PEERCRED)",
    )
}

/// At most 40 characters of something a peer sent, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Who may ask: this process's user, and root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// The credentials the kernel recorded for the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn peer_of(_fd: RawFd) -> io::Result<Peer> {
    Err(unavailable())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_of(fd: RawFd) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len describe a buffer of the size SO_PEERCRED fills.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// 16 random hex digits for the socket's name.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the rest of our buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_timeout(fd: RawFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a timeval of the size the option expects.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The listening socket. Its descriptor can be closed from outside (a forked
/// child must let go of its parent's name, whose watcher it does not have).
pub struct Listener {
    fd: AtomicI32,
    name: String,
}

impl Listener {
    /// Binds `tbcollect/<pid>/<random>` in the abstract namespace.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn bind(_pid: u32) -> io::Result<Listener> {
        Err(unavailable())
    }

    /// Binds `tbcollect/<pid>/<random>` in the abstract namespace.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn bind(pid: u32) -> io::Result<Listener> {
        let name = format!("tbcollect/{pid}/{}", random_hex()?);
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just made and own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_un is valid; the name fits (checked).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = name.as_bytes();
        if bytes.len() + 1 > addr.sun_path.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
        }
        // Abstract: a leading NUL, and the length says where the name ends.
        for (slot, b) in addr.sun_path[1..].iter_mut().zip(bytes) {
            *slot = *b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len()) as libc::socklen_t;
        // SAFETY: addr is a sockaddr_un of at least len bytes.
        if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a bound socket of ours.
        if unsafe { libc::listen(fd, 8) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = owned.into_raw_fd();
        Ok(Listener {
            fd: AtomicI32::new(fd),
            name,
        })
    }

    /// The abstract name, without the leading NUL.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.load(Ordering::Acquire)
    }

    /// The next waiting connection, if any (never blocks). The connection is
    /// blocking, with timeouts on both directions.
    pub fn accept(&self) -> io::Result<Option<Conn>> {
        let fd = self.raw_fd();
        if fd < 0 {
            return Ok(None);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return Err(unavailable());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        self.accept_from(fd)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn accept_from(&self, fd: RawFd) -> io::Result<Option<Conn>> {
        // SAFETY: accepts on our listening socket; no address wanted.
        let c = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if c < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                // The peer went away before we took it: nothing to answer.
                _ if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: a descriptor accept4 just made.
        let conn = Conn {
            // SAFETY: `c` is a descriptor `accept4` just made, owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(c) },
        };
        set_timeout(c, libc::SO_RCVTIMEO, REQUEST_READ_TIMEOUT)?;
        set_timeout(c, libc::SO_SNDTIMEO, ANSWER_WRITE_TIMEOUT)?;
        Ok(Some(conn))
    }

    /// Closes the socket (idempotent); the name is free once no process holds it.
    pub fn close(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: our descriptor, closed once (swapped out above).
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// One accepted connection.
pub struct Conn {
    fd: OwnedFd,
}

impl Conn {
    pub fn peer(&self) -> io::Result<Peer> {
        peer_of(self.fd.as_raw_fd())
    }

    /// Reads the request line (up to [`MAX_REQUEST`] bytes, within
    /// [`REQUEST_READ_TIMEOUT`]).
    pub fn read_request(&mut self) -> Result<Request, String> {
        let mut buf = Vec::with_capacity(128);
        let mut chunk = [0u8; 128];
        loop {
            let n = match self.fd_file().read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("no request received: {e}")),
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.contains(&b'\n') || buf.len() > MAX_REQUEST {
                break;
            }
        }
        let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
        if end > MAX_REQUEST {
            return Err("request too long".into());
        }
        let line =
            std::str::from_utf8(&buf[..end]).map_err(|_| "request is not UTF-8".to_string())?;
        parse_request(line)
    }

    fn fd_file(&self) -> FdIo {
        FdIo(self.fd.as_raw_fd())
    }

    pub fn send_ok(&self, format: &str, kind: &str, data: &[u8]) -> io::Result<()> {
        let mut io = self.fd_file();
        io.write_all(format!("ok {format} {kind} {}\n", data.len()).as_bytes())?;
        io.write_all(data)
    }

    pub fn send_err(&self, code: &str, message: &str) -> io::Result<()> {
        let line: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.fd_file()
            .write_all(format!("err {code} {line}\n").as_bytes())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
// No connection is ever made where there is no channel.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// Reads and writes a borrowed descriptor (MSG_NOSIGNAL: a peer that hung up
/// must not raise SIGPIPE in the process we look at).
struct FdIo(RawFd);

impl Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads into our buffer from an open descriptor.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: sends from our buffer on an open socket.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), SEND_FLAGS) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The advertisement: an empty memfd named `tbcollect-channel:<name>`, held
/// open as long as the channel is served. Linux only.
pub struct Beacon {
    fd: AtomicI32,
}

impl Beacon {
    pub const fn new() -> Beacon {
        Beacon {
            fd: AtomicI32::new(-1),
        }
    }

    pub fn open(&self, socket_name: &str) {
        self.close();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        self.open_memfd(socket_name);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = socket_name;
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn open_memfd(&self, socket_name: &str) {
        let Ok(name) = CString::new(format!("{CHANNEL_BEACON_PREFIX}{socket_name}")) else {
            return;
        };
        // SAFETY: a valid C string; the descriptor is owned through self.fd.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd >= 0 {
            self.fd.store(fd, Ordering::Release);
        }
    }

    pub fn close(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
        }
    }
}

impl Default for Beacon {
    fn default() -> Self {
        Beacon::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    use std::os::linux::net::SocketAddrExt;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    use std::os::unix::net::{SocketAddr, UnixStream};

    #[test]
    fn requests_parse_with_defaults_and_refuse_the_rest() {
        let r = parse_request("tbcollect/1 dump").unwrap();
        assert_eq!(r.format, None);
        assert_eq!(r.timeout, Duration::from_secs(10));
        let r = parse_request("tbcollect/1 dump format=svg timeout=2.5").unwrap();
        assert_eq!(
            (r.format.as_deref(), r.timeout),
            (Some("svg"), Duration::from_millis(2500))
        );
        assert_eq!(
            parse_request("tbcollect/1 dump timeout=1e9")
                .unwrap()
                .timeout,
            MAX_TIMEOUT
        );
        for bad in [
            "",
            "GET / HTTP/1.1",
            "tbcollect/1 exec",
            "tbcollect/1 dump format=pdf",
            "tbcollect/1 dump timeout=-1",
            "tbcollect/1 dump timeout=nan",
            "tbcollect/1 dump locals",
            "tbcollect/1 dump path=/etc/passwd",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_the_same_user_and_root_may_ask() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(65534, 1000));
        assert!(!peer_allowed(1000, 0));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn connect(name: &str) -> UnixStream {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixStream::connect_addr(&addr).unwrap()
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn accept_one(listener: &Listener) -> Conn {
        loop {
            if let Some(conn) = listener.accept().unwrap() {
                return conn;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_request_and_its_answer_over_a_real_socket() {
        let listener = Listener::bind(std::process::id()).unwrap();
        assert!(listener
            .name()
            .starts_with(&format!("tbcollect/{}/", std::process::id())));
        let mut client = connect(listener.name());
        client
            .write_all(b"tbcollect/1 dump format=json timeout=3\n")
            .unwrap();
        let mut conn = accept_one(&listener);
        let peer = conn.peer().unwrap();
        assert_eq!(peer.pid as u32, std::process::id());
        // SAFETY: no preconditions.
        assert_eq!(peer.uid, unsafe { libc::geteuid() });
        let request = conn.read_request().unwrap();
        assert_eq!(request.format.as_deref(), Some("json"));
        conn.send_ok("json", "full", b"{}\n").unwrap();
        drop(conn);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ok json full 3\n{}\n");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_bad_request_gets_one_error_line_without_control_characters() {
        let listener = Listener::bind(std::process::id()).unwrap();
        let mut client = connect(listener.name());
        client
            .write_all(b"tbcollect/1 dump format=\x1b[2J\n")
            .unwrap();
        let mut conn = accept_one(&listener);
        let message = conn.read_request().unwrap_err();
        conn.send_err("usage", &message).unwrap();
        drop(conn);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("err usage unknown format"), "{answer}");
        assert_eq!(answer.matches('\n').count(), 1);
        assert!(!answer.contains('\x1b'));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn an_endless_request_is_cut_off() {
        let listener = Listener::bind(std::process::id()).unwrap();
        let mut client = connect(listener.name());
        client.write_all(&[b'x'; MAX_REQUEST * 2]).unwrap();
        let mut conn = accept_one(&listener);
        assert!(conn.read_request().is_err());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_closed_listener_frees_its_name() {
        let listener = Listener::bind(std::process::id()).unwrap();
        let name = listener.name().to_string();
        listener.close();
        assert!(listener.accept().unwrap().is_none());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        assert!(UnixStream::connect_addr(&addr).is_err());
    }

    #[test]
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn elsewhere_there_is_no_channel_and_binding_says_so() {
        let e = Listener::bind(std::process::id()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("needs Linux"), "{e}");
    }
}
