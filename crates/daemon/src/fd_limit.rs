//! The file descriptor limit of a server process: raised as far as the
//! system allows, and the connection cap fitted under it, leaving room for
//! the files a commit holds open.
//!
//! # Must never
//! Let a configured connection cap promise more sockets than the process
//! can open: past the limit, accept and the spool's commits fail with
//! EMFILE for everyone.

/// Descriptors kept for everything that is not a client connection: the
/// commit thread's batch of queue files (up to 256 at once), listeners,
/// the poll, signal and waker descriptors, sockets to other daemons, logs.
pub(crate) const RESERVED: u64 = 256 + 64;
/// Descriptors one connection may hold: its socket and, while it receives
/// a message, the queue file being written.
pub(crate) const PER_CONNECTION: u64 = 2;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit in effect afterwards.
pub fn raise_fd_limit() -> Result<u64, crate::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let sys = |what: &'static str| {
        move |source| crate::Error::Sys {
            what: what.to_owned(),
            source,
        }
    };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(sys("getrlimit"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(sys("setrlimit"))?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The connection cap that fits `fd_limit`: `wanted` when it fits,
/// `Ok(lower)` when it must shrink (the caller warns), or `Err` with the
/// smallest limit that would let one connection in.
pub fn fit_connections(wanted: usize, fd_limit: u64) -> Result<usize, u64> {
    let room = fd_limit.saturating_sub(RESERVED) / PER_CONNECTION;
    if room == 0 {
        return Err(RESERVED + PER_CONNECTION);
    }
    Ok(usize::try_from(room).map_or(wanted, |room| wanted.min(room)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_when_it_fits_and_shrinks_when_not() {
        assert_eq!(fit_connections(1000, 1 << 20), Ok(1000));
        assert_eq!(fit_connections(1000, RESERVED + 2000), Ok(1000));
        assert_eq!(fit_connections(1000, 1024), Ok(352));
        assert_eq!(fit_connections(1000, RESERVED + 3), Ok(1));
        assert_eq!(fit_connections(1000, RESERVED + 1), Err(RESERVED + 2));
        assert_eq!(fit_connections(1000, 0), Err(RESERVED + 2));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{getrlimit, Resource};
        let got = raise_fd_limit().expect("raise");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((got, soft), (hard, hard));
    }
}
