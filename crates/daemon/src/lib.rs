//! The daemon skeleton shared by Sluice's long-running programs (in the
//! manner of Postfix's `single_server.c`): the common start-up (command
//! line, configuration, logger) and fatal exit, listening sockets inherited
//! from the master, the switch to the unprivileged user, the file
//! descriptor limit, readiness for systemd.
//!
//! # Must never
//! Keep root after [`drop_privileges`] returns `Ok`, or take ownership of a
//! file descriptor that the systemd socket-passing protocol did not hand to
//! this process.
//!
//! # Security
//! This is the one crate allowed `unsafe`: adopting inherited descriptors
//! and placing descriptors in a child between fork and exec. Each block says
//! why it is sound.
//!
//! # Errors
//! Everything here runs at start-up; errors are returned with the facts
//! (variable, user, descriptor) and the program exits with them.
#![allow(unsafe_code)]

mod fd_limit;
mod master_link;
mod startup;

pub use fd_limit::{fit_connections, raise_fd_limit};
pub use master_link::{die_with_master, strays, Daemon, MASTER_PID_ARG};
pub use startup::{exit, load_config, start, DaemonArgs, StartError, Started};

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{Gid, Uid, User};

/// The first descriptor of the systemd socket-passing protocol.
const LISTEN_FDS_START: RawFd = 3;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `LISTEN_FDS`/`LISTEN_FDNAMES`/`LISTEN_PID` are malformed.
    #[error("bad {var} in environment: {value:?}")]
    Environment {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// Inherited descriptors were already taken once.
    #[error("inherited descriptors were already taken")]
    AlreadyTaken,
    /// The configured user does not exist.
    #[error("user {0:?} (config key `user`) does not exist")]
    NoSuchUser(String),
    /// The master that started this daemon is gone.
    #[error("master pid {master} is gone (parent is now pid {parent})")]
    MasterGone {
        /// The master's pid, from `--master-pid`.
        master: i32,
        /// The current parent.
        parent: i32,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        source: nix::Error,
    },
}

static FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the listening sockets passed by the master (or systemd) with the
/// `LISTEN_FDS` protocol, paired with their `LISTEN_FDNAMES` names. The
/// variables are removed so that no grandchild adopts them too.
pub fn take_listen_fds() -> Result<Vec<(String, OwnedFd)>, Error> {
    if FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::AlreadyTaken);
    }
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let count_str = count.to_string_lossy().into_owned();
    let count: i32 = count_str.parse().map_err(|_| Error::Environment {
        var: "LISTEN_FDS",
        value: count_str.clone(),
    })?;
    if !(0..=1024).contains(&count) {
        return Err(Error::Environment {
            var: "LISTEN_FDS",
            value: count_str,
        });
    }
    if let Some(pid) = std::env::var_os("LISTEN_PID") {
        let pid = pid.to_string_lossy().into_owned();
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            // Meant for another process (systemd's rule): not ours to take.
            return Ok(Vec::new());
        }
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .collect();
    let mut fds = Vec::with_capacity(count as usize);
    for i in 0..count {
        let raw = LISTEN_FDS_START + i;
        if nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(Error::Environment {
                var: "LISTEN_FDS",
                value: format!("{count} (descriptor {raw} is not open)"),
            });
        }
        // SAFETY: the LISTEN_FDS protocol hands descriptors 3..3+count to
        // this process; the check above shows each is open, FDS_TAKEN makes
        // sure this adoption happens once, and nothing else in Sluice opens
        // raw descriptors by number, so each OwnedFd is the only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let name = names.get(i as usize).cloned().unwrap_or_default();
        fds.push((name, fd));
    }
    for var in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"] {
        std::env::remove_var(var);
    }
    Ok(fds)
}

/// Starts `command`, handing it `fds` as descriptors 3, 4, ... with
/// `LISTEN_FDS`/`LISTEN_FDNAMES` set (no `LISTEN_PID`: the child's pid is
/// not known before fork, and the reader accepts its absence).
pub fn spawn_with_fds(
    command: &mut Command,
    fds: &[(&str, BorrowedFd<'_>)],
) -> std::io::Result<Child> {
    command.env_remove("LISTEN_PID");
    if fds.is_empty() {
        command
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
        return command.spawn();
    }
    let names: Vec<&str> = fds.iter().map(|(name, _)| *name).collect();
    command.env("LISTEN_FDS", fds.len().to_string());
    command.env("LISTEN_FDNAMES", names.join(":"));
    let sources: Vec<RawFd> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let above = LISTEN_FDS_START + sources.len() as RawFd;
    // SAFETY: the closure runs in the child between fork and exec. It calls
    // only fcntl(F_DUPFD) and dup2, which are async-signal-safe system calls,
    // touches no locks and allocates nothing (`sources` was built before
    // fork). Sources are first moved above the target range so that a
    // source numbered inside 3..3+n is not overwritten before it is copied.
    unsafe {
        command.pre_exec(move || {
            let mut high = [0 as RawFd; 64];
            if sources.len() > high.len() {
                return Err(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
            }
            for (i, &src) in sources.iter().enumerate() {
                high[i] = nix::fcntl::fcntl(src, nix::fcntl::FcntlArg::F_DUPFD(above))?;
            }
            for (i, &fd) in high.iter().take(sources.len()).enumerate() {
                nix::unistd::dup2(fd, LISTEN_FDS_START + i as RawFd)?;
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Looks up the configured unprivileged user: `(uid, gid)`.
pub fn lookup_user(name: &str) -> Result<(u32, u32), Error> {
    let user = User::from_name(name)
        .map_err(|source| Error::Sys {
            what: format!("looking up user {name:?}"),
            source,
        })?
        .ok_or_else(|| Error::NoSuchUser(name.to_owned()))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Whether this process runs as root (and so must drop privileges).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Becomes `user` for good when running as root (supplementary groups, gid,
/// uid, in that order); does nothing otherwise.
pub fn drop_privileges(user: &str) -> Result<(), Error> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = lookup_user(user)?;
    let sys = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Sys { what, source }
    };
    nix::unistd::setgroups(&[Gid::from_raw(gid)]).map_err(sys("setgroups"))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(sys("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(sys("setuid"))?;
    if uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::Sys {
            what: "dropping root: setuid(0) still succeeds".to_owned(),
            source: nix::Error::EPERM,
        });
    }
    // The new user cleared the parent-death signal.
    die_with_master()
}

/// Binds a daemon's Unix socket in `run_dir` afresh (a stale one from a
/// previous run is removed) with `mode`, non-blocking, for a mio loop.
pub fn bind_socket(path: &Path, mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The host name for configs that leave `hostname` empty: the name in
/// `/etc/mailname` when that file holds one (Debian's mail name, which its
/// MTA packages share), else the system's host name.
pub fn system_hostname() -> String {
    mail_name(Path::new("/etc/mailname")).unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// The first line of a mailname file, if it is a plausible host name
/// (letters, digits, `-` and `.`, at most 253 bytes); else `None`.
fn mail_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let name = text.lines().next()?.trim();
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plausible.then(|| name.to_owned())
}

/// Tells systemd (or a test) that the service is ready: sends `READY=1`
/// to `$NOTIFY_SOCKET` when set (a path, or `@name` for the abstract
/// namespace). Failure to notify is returned, never fatal by itself.
pub fn notify_ready() -> std::io::Result<()> {
    notify("READY=1")
}

/// Tells systemd the configuration is being re-read; [`notify_ready`]
/// follows when the reload is done (or abandoned).
pub fn notify_reloading() -> std::io::Result<()> {
    notify("RELOADING=1")
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() -> std::io::Result<()> {
    notify("STOPPING=1")
}

fn notify(state: &str) -> std::io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), Path::new(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn passed_descriptors_arrive_at_three_with_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = std::fs::File::create(dir.path().join("a")).expect("a");
        let b = std::fs::File::create(dir.path().join("b")).expect("b");
        // The child lists its fds 3 and 4 and the two variables.
        let mut command = Command::new("/bin/sh");
        command
            .args([
                "-c",
                "echo $LISTEN_FDS $LISTEN_FDNAMES; readlink /proc/self/fd/3 /proc/self/fd/4",
            ])
            .stdout(std::process::Stdio::piped());
        let child = spawn_with_fds(&mut command, &[("first", a.as_fd()), ("second", b.as_fd())]);
        let out = child.and_then(|c| c.wait_with_output()).expect("child ran");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2 first:second");
        assert!(lines[1].ends_with("/a"), "{text}");
        assert!(lines[2].ends_with("/b"), "{text}");
    }

    #[test]
    fn mail_name_is_the_first_line_when_it_is_a_host_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mailname");
        std::fs::write(&path, "mx1.example.org\nignored\n").expect("write");
        assert_eq!(mail_name(&path).as_deref(), Some("mx1.example.org"));
        for bad in ["", "\n", "two words\n", "a;rm -rf /\n"] {
            std::fs::write(&path, bad).expect("write");
            assert_eq!(mail_name(&path), None, "{bad:?}");
        }
        assert_eq!(mail_name(&dir.path().join("missing")), None);
    }

    #[test]
    fn notify_sends_ready_to_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify_ready().expect("notify");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
