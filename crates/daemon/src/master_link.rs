//! Daemons never outlive their master. The master starts each daemon with
//! `--master-pid PID`; the daemon asks the kernel for SIGKILL when its
//! parent dies (`PR_SET_PDEATHSIG`) and then checks that its parent is still
//! that master, closing the race with a master that died in between. The
//! kernel forgets the request when the process changes its user, so it is
//! made again after every such change ([`die_with_master`]). As a second
//! line, a master at start finds daemons of an earlier instance of the same
//! configuration from their command lines ([`strays`]) and kills them, and
//! `sluice status` reports them.
//!
//! # Must never
//! Let a daemon serve on without its master, or name as a stray a process
//! that is not a Sluice daemon started for the same configuration file.

use std::path::Path;
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::Error;

/// The hidden argument that names a daemon's master.
pub const MASTER_PID_ARG: &str = "--master-pid";

static MASTER: OnceLock<Option<Pid>> = OnceLock::new();

/// Remembers the master named on the command line (once; later calls are
/// ignored) and arms the parent-death signal.
pub(crate) fn link(master: Option<u32>) -> Result<(), Error> {
    let _ = MASTER.set(master.map(|p| Pid::from_raw(p as i32)));
    die_with_master()
}

/// Asks for SIGKILL when the parent dies, then checks that the parent is
/// still the master; an error when it is gone already. Does nothing in a
/// process the master did not start. Call it again after every change of
/// uid or gid: the kernel clears the request on such a change.
pub fn die_with_master() -> Result<(), Error> {
    let Some(Some(master)) = MASTER.get() else {
        return Ok(());
    };
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| Error::Sys {
        what: "prctl(PR_SET_PDEATHSIG)".to_owned(),
        source,
    })?;
    let parent = nix::unistd::getppid();
    if parent != *master {
        return Err(Error::MasterGone {
            master: master.as_raw(),
            parent: parent.as_raw(),
        });
    }
    Ok(())
}

/// A daemon started by a master for some configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its pid.
    pub pid: Pid,
    /// The program (`sluice-smtpd`, ...).
    pub program: String,
    /// The pid of the master that started it.
    pub master: i32,
}

/// Every running daemon that a master started for `config` (an absolute
/// path, as the master passes it), except those whose master is `except`.
/// Read from `/proc/PID/cmdline`, which any user may read.
pub fn strays(config: &Path, except: Option<Pid>) -> Vec<Daemon> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if let Some(daemon) = parse_cmdline(Pid::from_raw(pid), &cmdline, config) {
            if Some(Pid::from_raw(daemon.master)) != except {
                found.push(daemon);
            }
        }
    }
    found
}

/// A daemon, if `cmdline` (NUL-separated) is that of a `sluice-*` program
/// started with `--config CONFIG` and `--master-pid N`.
fn parse_cmdline(pid: Pid, cmdline: &[u8], config: &Path) -> Option<Daemon> {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let program = Path::new(std::str::from_utf8(args.first()?).ok()?).file_name()?;
    let program = program.to_str()?;
    if !program.starts_with("sluice-") {
        return None;
    }
    let value = |name: &str| {
        args.windows(2)
            .find(|w| w[0] == name.as_bytes())
            .map(|w| w[1])
    };
    if value("--config")? != config.as_os_str().as_encoded_bytes() {
        return None;
    }
    let master = std::str::from_utf8(value(MASTER_PID_ARG)?)
        .ok()?
        .parse()
        .ok()?;
    Some(Daemon {
        pid,
        program: program.to_owned(),
        master,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(cmdline: &str) -> Option<Daemon> {
        parse_cmdline(
            Pid::from_raw(7),
            cmdline.replace(' ', "\0").as_bytes(),
            Path::new("/etc/sluice/sluice.ron"),
        )
    }

    #[test]
    fn a_daemon_is_known_by_program_config_and_master() {
        let daemon = parse(
            "/usr/sbin/sluice-smtpd --config /etc/sluice/sluice.ron --syslog --master-pid 42 ",
        );
        assert_eq!(
            daemon,
            Some(Daemon {
                pid: Pid::from_raw(7),
                program: "sluice-smtpd".to_owned(),
                master: 42
            })
        );
    }

    #[test]
    fn other_processes_are_not_daemons() {
        // Another configuration, no master, not a sluice program, an
        // operator's tool with the same configuration.
        assert_eq!(
            parse("/usr/sbin/sluice-smtpd --config /tmp/x.ron --master-pid 42"),
            None
        );
        assert_eq!(
            parse("/usr/sbin/sluice-smtpd --config /etc/sluice/sluice.ron"),
            None
        );
        assert_eq!(
            parse("/bin/sleep --config /etc/sluice/sluice.ron --master-pid 42"),
            None
        );
        assert_eq!(
            parse("/usr/sbin/sluice-queue --config /etc/sluice/sluice.ron list"),
            None
        );
        assert_eq!(parse(""), None);
    }

    #[test]
    fn a_process_not_started_by_a_master_links_to_nothing() {
        // MASTER is unset in the test process: nothing is armed.
        assert!(die_with_master().is_ok());
    }
}
