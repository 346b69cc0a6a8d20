//! The wake-up channel of `sluice-pickup`, `run_dir/pickup.sock` (mode
//! 0666, as Postfix's world-writable `public/pickup` FIFO): the one socket
//! an unprivileged user needs. Connecting is the whole message ("look at
//! `maildrop/` now"); pickup reads nothing from it and answers nothing, so
//! there is no protocol to attack. Pickup also looks every second, so a
//! lost wake-up costs latency, never mail.
//!
//! # Must never
//! Carry anything: the queue manager's control socket is another one.

use std::path::{Path, PathBuf};

/// The socket's file name in `run_dir`.
pub const SOCKET: &str = "pickup.sock";

/// The socket in `run_dir`.
pub fn socket(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET)
}

/// Wakes pickup, if it runs. Never waits: the connect does not block (a
/// full backlog fails at once, and pickup's next look finds the file).
pub fn wake(run_dir: &Path) {
    let _ = mio::net::UnixStream::connect(socket(run_dir));
}
