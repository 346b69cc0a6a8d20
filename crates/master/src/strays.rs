//! Daemons of an earlier master: found by their command line, killed at
//! start so that the new daemons can bind the same sockets.
//!
//! # Must never
//! Kill a process that is not a daemon started for this configuration by
//! another master, or wait without bound.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long to wait for killed strays to be gone.
const WAIT: Duration = Duration::from_secs(2);

/// Kills (SIGKILL) every daemon started for `config` by a master other than
/// this process, and waits up to [`WAIT`] for them to die. Returns how many
/// there were.
pub(crate) fn kill_strays(config: &Path) -> usize {
    let me = Pid::this();
    let strays = sluice_daemon::strays(config, Some(me));
    for daemon in &strays {
        log::warn!(
            "killing {} pid {} left by an earlier master (pid {})",
            daemon.program,
            daemon.pid,
            daemon.master
        );
        let _ = kill(daemon.pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && strays.iter().any(|d| alive(d.pid)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    strays.len()
}

/// Whether `pid` still runs (a zombie holds no sockets: it counts as gone).
fn alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
