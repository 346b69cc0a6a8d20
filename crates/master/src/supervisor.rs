//! The supervisor: listening sockets, the table of daemon slots, restart
//! back-off, reload and stop.
//!
//! # Must never
//! Restart a daemon in a tight loop, or leave a daemon running when the
//! master exits.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::{Events, Interest, Poll, Token};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_config::Config;

/// A daemon that has run this long before dying is restarted at once.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// First back-off for a daemon that died young; it doubles up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Extra time after `stop_timeout` before what is left is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);
const SIGNALS: Token = Token(0);

/// One place for one daemon process.
#[derive(Debug)]
struct Slot {
    /// Service name, also the `LISTEN_FDNAMES` name of its sockets.
    service: &'static str,
    /// Executable name in `daemon_dir`.
    program: &'static str,
    pid: Option<Pid>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Slot {
    fn new(service: &'static str, program: &'static str, now: Instant) -> Self {
        Slot {
            service,
            program,
            pid: None,
            started: now,
            backoff: FIRST_BACKOFF,
            restart_at: Some(now),
        }
    }
}

/// The daemons a configuration asks for: the connection counter (when a
/// per-client limit is on), the SMTP servers, one queue manager, one
/// maildrop pickup, the SMTP delivery agents and the local delivery agents.
fn slots_for(config: &Config, now: Instant) -> Vec<Slot> {
    let counting =
        config.smtpd.client_connection_limit > 0 || config.smtpd.client_connection_rate_limit > 0;
    let anvil = counting.then(|| Slot::new("anvil", "sluice-anvil", now));
    let smtpd = (0..config.smtpd.processes).map(|_| Slot::new("smtpd", "sluice-smtpd", now));
    let qmgr = std::iter::once(Slot::new("qmgr", "sluice-qmgr", now));
    let pickup = std::iter::once(Slot::new("pickup", "sluice-pickup", now));
    let smtp = (0..config.queue.smtp_agents).map(|_| Slot::new("smtp", "sluice-smtp", now));
    let local = (0..config.queue.local_agents).map(|_| Slot::new("local", "sluice-local", now));
    anvil
        .into_iter()
        .chain(smtpd)
        .chain(qmgr)
        .chain(pickup)
        .chain(smtp)
        .chain(local)
        .collect()
}

/// The running master.
pub(crate) struct Supervisor {
    config_path: PathBuf,
    config: Config,
    syslog: bool,
    daemon_dir: PathBuf,
    listeners: Vec<(SocketAddr, TcpListener)>,
    slots: Vec<Slot>,
    /// Daemons of a previous configuration, finishing their sessions.
    retiring: BTreeSet<Pid>,
    poll: Poll,
    signals: Signals,
    _lock: Flock<File>,
}

impl Supervisor {
    /// Prepares directories and sockets and starts every daemon.
    pub(crate) fn start(
        config_path: PathBuf,
        config: Config,
        syslog: bool,
    ) -> anyhow::Result<Self> {
        let daemon_dir = resolve_daemon_dir(&config)?;
        let owner = if sluice_daemon::is_root() {
            Some(sluice_daemon::lookup_user(&config.user)?)
        } else {
            None
        };
        // The lock first: a second master must touch nothing of the
        // running instance (not even the leftovers in spool/tmp, which
        // may be its smtpd's commits in flight).
        create_run_dir(&config.run_dir, owner)?;
        let lock = lock_instance(&config.run_dir)?;
        let spool = sluice_spool::Spool::new(&config.spool_dir);
        spool
            .create_layout(owner)
            .with_context(|| format!("spool_dir {}", config.spool_dir.display()))?;
        let leftovers = spool.clean_tmp()?;
        if leftovers > 0 {
            log::info!(
                "removed {leftovers} unfinished file(s) from {}",
                spool.dir(sluice_spool::Area::Tmp).display()
            );
        }
        // With the lock held, no other master serves this configuration:
        // daemons still running for it outlived an earlier one.
        crate::strays::kill_strays(&config_path);
        let listeners = bind_all(&config.smtpd.listen, &mut [])?;
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGCHLD, SIGHUP, SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let now = Instant::now();
        let mut supervisor = Supervisor {
            slots: slots_for(&config, now),
            config_path,
            config,
            syslog,
            daemon_dir,
            listeners,
            retiring: BTreeSet::new(),
            poll,
            signals,
            _lock: lock,
        };
        supervisor.write_run_files()?;
        log::info!(
            "daemon started -- version {}, configuration {}",
            env!("CARGO_PKG_VERSION"),
            supervisor.config_path.display()
        );
        supervisor.start_due(now);
        if let Err(e) = sluice_daemon::notify_ready() {
            log::warn!("cannot notify readiness: {e}");
        }
        Ok(supervisor)
    }

    /// Supervises until SIGTERM/SIGINT, then stops everything.
    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(8);
        loop {
            let now = Instant::now();
            let timeout = self
                .slots
                .iter()
                .filter_map(|s| s.restart_at)
                .min()
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let pending: Vec<i32> = self.signals.pending().collect();
            for signal in pending {
                match signal {
                    SIGHUP => self.reload(),
                    SIGTERM | SIGINT => {
                        log::info!("terminating on signal {signal}");
                        return self.stop();
                    }
                    _ => {}
                }
            }
            self.reap(Instant::now());
            self.start_due(Instant::now());
        }
    }

    fn spawn(&self, slot: &Slot) -> std::io::Result<Pid> {
        let program = self.daemon_dir.join(slot.program);
        let mut command = Command::new(&program);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg(sluice_daemon::MASTER_PID_ARG)
            .arg(std::process::id().to_string());
        if self.syslog {
            command.arg("--syslog");
        }
        command.stdin(Stdio::null());
        let fds: Vec<(&str, _)> = self
            .listeners
            .iter()
            .filter(|_| slot.service == "smtpd")
            .map(|(_, l)| (slot.service, l.as_fd()))
            .collect();
        let child = sluice_daemon::spawn_with_fds(&mut command, &fds)?;
        Ok(Pid::from_raw(child.id() as i32))
    }

    fn start_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let due = matches!(self.slots[i].restart_at, Some(at) if at <= now);
            if !due {
                continue;
            }
            match self.spawn(&self.slots[i]) {
                Ok(pid) => {
                    let slot = &mut self.slots[i];
                    slot.pid = Some(pid);
                    slot.started = now;
                    slot.restart_at = None;
                }
                Err(e) => {
                    let slot = &mut self.slots[i];
                    log::warn!(
                        "cannot start {}: {e} -- throttling",
                        self.daemon_dir.join(slot.program).display()
                    );
                    slot.restart_at = Some(now + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Collects dead children; schedules restarts for those still wanted.
    fn reap(&mut self, now: Instant) {
        loop {
            let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit status {code}")),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, format!("killed by signal {}", signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if self.retiring.remove(&pid) {
                continue;
            }
            let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue;
            };
            slot.pid = None;
            let program = self.daemon_dir.join(slot.program);
            if how == "exit status 0" {
                log::info!("process {} pid {pid} {how}", program.display());
            } else {
                log::warn!("process {} pid {pid} {how}", program.display());
            }
            if now.duration_since(slot.started) >= STABLE_AFTER {
                slot.backoff = FIRST_BACKOFF;
                slot.restart_at = Some(now);
            } else {
                log::warn!(
                    "{}: died young -- throttling, restart in {} ms",
                    program.display(),
                    slot.backoff.as_millis()
                );
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn reload(&mut self) {
        let _ = sluice_daemon::notify_reloading();
        self.reload_config();
        if let Err(e) = sluice_daemon::notify_ready() {
            log::warn!("cannot notify readiness: {e}");
        }
    }

    /// Re-reads the configuration; keeps the running one if it is bad.
    fn reload_config(&mut self) {
        let config = match sluice_daemon::load_config(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        if config.run_dir != self.config.run_dir || config.user != self.config.user {
            log::warn!("run_dir and user changes take effect only after a restart");
        }
        let listeners = match bind_all(&config.smtpd.listen, &mut self.listeners) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("reload failed, keeping the running configuration: {e:#}");
                return;
            }
        };
        let owner = if sluice_daemon::is_root() {
            sluice_daemon::lookup_user(&self.config.user).ok()
        } else {
            None
        };
        if let Err(e) = sluice_spool::Spool::new(&config.spool_dir).create_layout(owner) {
            log::warn!(
                "reload failed, keeping the running configuration: spool_dir {}: {e}",
                config.spool_dir.display()
            );
            return;
        }
        self.listeners = listeners;
        self.config = config;
        if let Err(e) = self.write_run_files() {
            log::warn!("cannot write run files: {e:#}");
        }
        let now = Instant::now();
        for slot in std::mem::replace(&mut self.slots, slots_for(&self.config, now)) {
            if let Some(pid) = slot.pid {
                let _ = kill(pid, Signal::SIGTERM);
                self.retiring.insert(pid);
            }
        }
        log::info!(
            "reload -- version {}, configuration {}",
            env!("CARGO_PKG_VERSION"),
            self.config_path.display()
        );
        self.start_due(now);
    }

    /// SIGTERM to every daemon; waits up to `stop_timeout` (plus a little)
    /// for them to finish their sessions, then SIGKILL.
    fn stop(&mut self) -> anyhow::Result<()> {
        let _ = sluice_daemon::notify_stopping();
        let mut alive: BTreeSet<Pid> = self.retiring.clone();
        alive.extend(self.slots.iter().filter_map(|s| s.pid));
        for pid in &alive {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + self.config.smtpd.stop_timeout + KILL_GRACE;
        while !alive.is_empty() && Instant::now() < deadline {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                    alive.remove(&pid);
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        for pid in &alive {
            log::warn!("pid {pid} did not stop in time: killing it");
            let _ = kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, None);
        }
        let _ = std::fs::remove_file(self.config.run_dir.join("listeners"));
        let _ = std::fs::remove_file(self.config.run_dir.join("master.pid"));
        log::info!("stopped");
        Ok(())
    }

    /// `run_dir/master.pid` and `run_dir/listeners`, each replaced whole.
    fn write_run_files(&self) -> anyhow::Result<()> {
        let mut listeners = String::new();
        for (_, l) in &self.listeners {
            listeners.push_str(&format!("smtpd {}\n", l.local_addr()?));
        }
        replace_file(&self.config.run_dir.join("listeners"), listeners.as_bytes())?;
        replace_file(
            &self.config.run_dir.join("master.pid"),
            format!("{}\n", std::process::id()).as_bytes(),
        )?;
        Ok(())
    }
}

/// Writes a small run file so that readers never see half of it. `run_dir`
/// belongs to the daemons' user, so the temporary file is made anew
/// (`O_EXCL`, never through a symbolic link), and the rename replaces the
/// name, never a file a link points to.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| tmp.display().to_string()),
    }
    let mut file = sluice_spool::safe_open::create_new(&tmp, 0o644)
        .with_context(|| tmp.display().to_string())?;
    file.write_all(bytes)?;
    // Run files are not mail: the spool's durable path is not needed here,
    // only an atomic replacement.
    #[allow(clippy::disallowed_methods)]
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

fn resolve_daemon_dir(config: &Config) -> anyhow::Result<PathBuf> {
    if !config.daemon_dir.as_os_str().is_empty() {
        return Ok(config.daemon_dir.clone());
    }
    let exe = std::env::current_exe().context("locating sluice-master")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn create_run_dir(dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("run_dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("run_dir {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("run_dir {}", dir.display()))?;
    }
    Ok(())
}

/// One master per run_dir: an exclusive lock held until exit.
fn lock_instance(run_dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = run_dir.join("master.lock");
    // Never through a symbolic link, and only the master's own file.
    let file = sluice_spool::safe_open::open_own(&path, 0o600, false)
        .with_context(|| path.display().to_string())?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("another sluice-master holds {} ({e})", path.display()))
}

/// Binds every configured address, reusing sockets already bound to the
/// same configured address (on reload). Fails whole if one cannot be bound.
fn bind_all(
    wanted: &[SocketAddr],
    existing: &mut [(SocketAddr, TcpListener)],
) -> anyhow::Result<Vec<(SocketAddr, TcpListener)>> {
    let mut out = Vec::with_capacity(wanted.len());
    for addr in wanted {
        let reused = existing
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, l)| l.try_clone())
            .transpose()?;
        let listener = match reused {
            Some(l) => l,
            None => bind(*addr).with_context(|| format!("smtpd.listen {addr}"))?,
        };
        out.push((*addr, listener));
    }
    Ok(out)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "[::]:25" next to "0.0.0.0:25" must not claim the IPv4 port too.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
