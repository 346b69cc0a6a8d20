//! `sluice`: the front command of a Sluice instance.
//!
//! # Synopsis
//! `sluice [--config FILE] check [--print]`
//! `sluice [--config FILE] start | stop | reload | status | set-permissions`
//!
//! # Description
//! - `check` validates the configuration (every error names the file, the
//!   line and the key), the spool's directories and their permissions, the
//!   run directory, the daemon programs, the unprivileged user, and the
//!   aliases file and virtual map (each bad line by file and line), and
//!   says what is wrong. `--print` shows the effective configuration, defaults
//!   filled in.
//! - `start` checks, then starts `sluice-master` in the background and waits
//!   until it has bound its sockets. It logs to syslog when the configured
//!   socket exists, else to `run_dir/sluice.log`.
//! - `stop` sends SIGTERM to the master and waits for it to finish.
//! - `reload` sends SIGHUP: the master re-reads the configuration.
//! - `set-permissions` creates the spool's directories and sets their
//!   owners (the configured `user`, when run as root) and modes, as the
//!   master does at start; the package runs it at install, so that
//!   `sendmail` works before the first start.
//! - `status` says whether the master runs and where it listens, and names
//!   any daemon still running after its master died.
//!
//! # Diagnostics
//! Exit status 0 on success; 1 when something is wrong (check failed, start
//! failed, stop timed out); `status` exits 3 when Sluice is not running, and
//! 1 when the master is gone but daemons it started still run, as LSB init
//! scripts do.
//!
//! # Security
//! Meant for root (or the user a demo instance runs as); it only reads the
//! configuration and signals the pid in `run_dir/master.pid` after checking
//! that the pid is a `sluice-master`.
//!
//! # Must never
//! Signal a process that is not the instance's master.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sluice_config::Config;

/// The programs a complete installation has in `daemon_dir`.
const PROGRAMS: [&str; 10] = [
    "sluice-master",
    "sluice-smtpd",
    "sluice-anvil",
    "sluice-qmgr",
    "sluice-pickup",
    "sluice-smtp",
    "sluice-local",
    "sluice-queue",
    "sluice-sendmail",
    "sluice",
];

/// Command line of `sluice`.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Sluice front command")]
struct Args {
    /// Configuration file.
    #[arg(long, global = true, default_value = sluice_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Validate the configuration, the spool and their permissions.
    Check {
        /// Print the effective configuration too.
        #[arg(long)]
        print: bool,
    },
    /// Start sluice-master in the background.
    Start,
    /// Stop the running master and its daemons.
    Stop,
    /// Make the master re-read its configuration.
    Reload,
    /// Say whether Sluice runs, and where it listens.
    Status,
    /// Create the spool's directories and set their owners and modes, as
    /// the master does at start (the package runs this at install).
    SetPermissions,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match sluice_daemon::load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Verb::Check { print } => check(&args.config, &config, print),
        Verb::Start => start(&args.config, &config),
        Verb::Stop => stop(&config),
        Verb::Reload => signal_master(&config, Signal::SIGHUP).map(|pid| {
            println!("sluice: asked sluice-master (pid {pid}) to reload");
        }),
        Verb::Status => return status(&args.config, &config),
        Verb::SetPermissions => set_permissions(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn daemon_dir(config: &Config) -> PathBuf {
    if !config.daemon_dir.as_os_str().is_empty() {
        return config.daemon_dir.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn check(path: &Path, config: &Config, print: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    let running_as_root = sluice_daemon::is_root();
    if running_as_root {
        if let Err(e) = sluice_daemon::lookup_user(&config.user) {
            problems.push(format!("{}: key user: {e}", path.display()));
        }
    }
    let spool = sluice_spool::Spool::new(&config.spool_dir);
    let layout = spool.check_layout();
    if !layout.is_empty() {
        problems.extend(layout);
        problems.push("fix the spool with: sluice set-permissions".to_owned());
    }
    // Bad lines of the aliases file and the virtual map (each names its
    // file and line); the daemons skip them and deliver the rest.
    let recipients = sluice_mailbox::Directory::new(sluice_mailbox::Settings::from_config(config));
    problems.extend(recipients.problems());
    // A missing run_dir is normal before the first start (sluice-master,
    // or systemd's RuntimeDirectory=, creates it); something else there is not.
    if std::fs::symlink_metadata(&config.run_dir).is_ok_and(|m| !m.is_dir()) {
        problems.push(format!(
            "run_dir {}: not a directory",
            config.run_dir.display()
        ));
    }
    let dir = daemon_dir(config);
    for program in PROGRAMS {
        if !dir.join(program).is_file() {
            problems.push(format!(
                "daemon_dir {}: {program} is missing",
                dir.display()
            ));
        }
    }
    if print {
        print!("{}", config.to_ron_pretty());
    }
    if problems.is_empty() {
        println!("sluice: configuration {} OK", path.display());
        Ok(())
    } else {
        for p in &problems {
            eprintln!("sluice: {p}");
        }
        Err(format!("{} problem(s) found", problems.len()))
    }
}

/// Creates the spool layout with the owner the daemons run as (when root).
fn set_permissions(config: &Config) -> Result<(), String> {
    let owner = if sluice_daemon::is_root() {
        Some(sluice_daemon::lookup_user(&config.user).map_err(|e| format!("key user: {e}"))?)
    } else {
        None
    };
    sluice_spool::Spool::new(&config.spool_dir)
        .create_layout(owner)
        .map_err(|e| format!("spool_dir {}: {e}", config.spool_dir.display()))?;
    println!(
        "sluice: spool {} has its directories, owners and modes",
        config.spool_dir.display()
    );
    Ok(())
}

/// The master's pid from `run_dir/master.pid`, if a master holds the
/// instance lock (a dead one, even unreaped, holds nothing) and that pid
/// really is a sluice-master.
fn master_pid(config: &Config) -> Option<Pid> {
    if !lock_held(&config.run_dir.join("master.lock")) {
        return None;
    }
    let text = std::fs::read_to_string(config.run_dir.join("master.pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    // comm is cut at 15 characters: "sluice-master" fits.
    (comm.trim() == "sluice-master").then_some(Pid::from_raw(pid))
}

/// Whether some process holds the exclusive lock a master takes on `path`.
fn lock_held(path: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

fn signal_master(config: &Config, signal: Signal) -> Result<Pid, String> {
    let pid = master_pid(config).ok_or("sluice is not running")?;
    kill(pid, signal).map_err(|e| format!("signalling pid {pid}: {e}"))?;
    Ok(pid)
}

fn status(path: &Path, config: &Config) -> ExitCode {
    match master_pid(config) {
        Some(pid) => {
            let listeners =
                std::fs::read_to_string(config.run_dir.join("listeners")).unwrap_or_default();
            println!("sluice: running, master pid {pid}");
            for line in listeners.lines() {
                println!("sluice: listening: {line}");
            }
            ExitCode::SUCCESS
        }
        None => {
            // Daemons whose master died before they could follow it.
            let config_path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            let strays = sluice_daemon::strays(&config_path, None);
            if strays.is_empty() {
                println!("sluice: not running");
                return ExitCode::from(3);
            }
            println!("sluice: master not running, but daemons of a dead master are:");
            for d in &strays {
                println!(
                    "sluice: {} pid {} (master pid {} is gone)",
                    d.program, d.pid, d.master
                );
            }
            ExitCode::from(1)
        }
    }
}

fn start(path: &Path, config: &Config) -> Result<(), String> {
    if let Some(pid) = master_pid(config) {
        return Err(format!("already running (master pid {pid})"));
    }
    let master = daemon_dir(config).join("sluice-master");
    let mut command = Command::new(&master);
    command
        .arg("--config")
        .arg(std::path::absolute(path).map_err(|e| e.to_string())?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    let log_file = config.run_dir.join("sluice.log");
    if config.log.syslog_socket.exists() {
        command.arg("--syslog").stderr(Stdio::null());
    } else {
        std::fs::create_dir_all(&config.run_dir)
            .map_err(|e| format!("run_dir {}: {e}", config.run_dir.display()))?;
        // run_dir belongs to the daemons' user: never through a symbolic
        // link, and only root's own file.
        let file = sluice_spool::safe_open::open_own(&log_file, 0o600, true)
            .map_err(|e| format!("{}: {e}", log_file.display()))?;
        command.stderr(file);
        println!(
            "sluice: no syslog socket at {}: logging to {}",
            config.log.syslog_socket.display(),
            log_file.display()
        );
    }
    use std::os::unix::process::CommandExt as _;
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", master.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "sluice-master exited at start ({status}); see the log"
            ));
        }
        if master_pid(config).is_some_and(|p| p.as_raw() as u32 == child.id())
            && config.run_dir.join("listeners").exists()
        {
            println!("sluice: started, master pid {}", child.id());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("sluice-master did not become ready within 15 s".to_owned())
}

fn stop(config: &Config) -> Result<(), String> {
    let pid = signal_master(config, Signal::SIGTERM)?;
    let deadline = Instant::now() + config.smtpd.stop_timeout + Duration::from_secs(10);
    while Instant::now() < deadline {
        if kill(pid, None).is_err() || master_pid(config).is_none() {
            println!("sluice: stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("master pid {pid} did not stop in time"))
}
