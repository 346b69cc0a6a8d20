//! The end-to-end harness: starts the real `sluice-master` (and through it
//! the daemons) on loopback with a temporary spool and configuration, finds
//! its processes, talks to it through real SMTP clients, and reads the
//! queue files it wrote.
//!
//! # Must never
//! Leave a process running after a test (a drop guard kills the process
//! group), use a fixed port (the master binds port 0 and writes what it got
//! to `run_dir/listeners`), or synchronise by sleeping a fixed time: every
//! wait polls a condition against a deadline.

pub mod sink;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long any wait in these tests may take before it is a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding the built programs (`target/<profile>`), built
/// once per test binary so that `cargo test` alone tests current code.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test>-<hash>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--quiet"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the programs");
        assert!(status.success(), "cargo build --bins failed");
        dir
    })
}

/// Path of one Sluice program.
pub fn program(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A temporary Sluice instance: its directory, config and spool.
pub struct Instance {
    dir: tempfile::TempDir,
    /// The configuration file.
    pub config_path: PathBuf,
    /// `spool_dir`.
    pub spool_dir: PathBuf,
    /// `run_dir`.
    pub run_dir: PathBuf,
    /// Where master and daemons write their stderr.
    pub log_path: PathBuf,
    master: Option<Child>,
    env: Vec<(String, String)>,
}

impl Instance {
    /// Writes a configuration: `extra` is spliced into the top-level RON
    /// tuple (e.g. `relay_domains: ["relay.test"],`).
    pub fn new(extra: &str) -> Instance {
        Self::with_smtpd(extra, "")
    }

    /// As [`Instance::new`], with `smtpd_extra` spliced into `smtpd: (...)`.
    pub fn with_smtpd(extra: &str, smtpd_extra: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        // Daemons may run as the unprivileged user: let it reach the spool.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tempdir");
        let spool_dir = dir.path().join("spool");
        let run_dir = dir.path().join("run");
        let config_path = dir.path().join("sluice.ron");
        // DNS goes to loopback only: a test that does not bring its own
        // server gets a port where nothing answers (a quick deferral),
        // never the machine's resolver.
        let dns = if extra.contains("dns:") {
            String::new()
        } else {
            format!(
                "dns: ( nameservers: [\"{}\"], timeout: \"1s\" ),",
                silent_udp_port()
            )
        };
        // Two smtpd processes unless the test asks for its own number.
        let processes = if smtpd_extra.contains("processes:") {
            ""
        } else {
            "processes: 2, "
        };
        let config = format!(
            "(\n    hostname: \"mx.sluice.test\",\n    spool_dir: {spool:?},\n    run_dir: {run:?},\n    daemon_dir: {bin:?},\n    user: {user:?},\n    smtpd: (listen: [\"127.0.0.1:0\"], {processes}stop_timeout: \"5s\", {smtpd_extra}),\n    {dns}\n    {extra}\n)\n",
            spool = spool_dir,
            run = run_dir,
            bin = bin_dir(),
            user = test_user(),
        );
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("sluice.log");
        Instance {
            dir,
            config_path,
            spool_dir,
            run_dir,
            log_path,
            master: None,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the master started next.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The instance's temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `sluice-master` in the foreground (as systemd would) and waits
    /// until it has written its listeners file. Panics if it does not.
    pub fn start(&mut self) -> SocketAddr {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(program("sluice-master"))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .spawn()
            .expect("spawn sluice-master");
        let pid = child.id();
        self.master = Some(child);
        let listeners = self.run_dir.join("listeners");
        wait_for("master to write its listeners file", || {
            if let Some(code) = self.master_exit() {
                panic!("sluice-master exited at start ({code}):\n{}", self.log());
            }
            let pid_ok = std::fs::read_to_string(self.run_dir.join("master.pid"))
                .is_ok_and(|p| p.trim() == pid.to_string());
            pid_ok && listeners.exists()
        });
        wait_for("smtpd processes to start", || !self.smtpd_pids().is_empty());
        self.smtp_addr()
    }

    /// The first smtpd listener, from `run_dir/listeners`.
    pub fn smtp_addr(&self) -> SocketAddr {
        let text = std::fs::read_to_string(self.run_dir.join("listeners")).expect("listeners");
        text.lines()
            .find_map(|l| l.strip_prefix("smtpd "))
            .and_then(|a| a.parse().ok())
            .expect("an smtpd line in listeners")
    }

    /// The master's pid.
    pub fn master_pid(&self) -> Pid {
        Pid::from_raw(self.master.as_ref().expect("master started").id() as i32)
    }

    /// The exit status of the master, if it has exited.
    pub fn master_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.master
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the master to exit and returns its status.
    pub fn wait_master(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_for("master to exit", || {
            status = self.master_exit();
            status.is_some()
        });
        status.expect("exited")
    }

    /// Live children of the master running `sluice-smtpd`.
    pub fn smtpd_pids(&self) -> Vec<Pid> {
        children_named(self.master_pid(), "sluice-smtpd")
    }

    /// Live children of the master running `name`.
    pub fn daemon_pids(&self, name: &str) -> Vec<Pid> {
        children_named(self.master_pid(), name)
    }

    /// How many times `needle` occurs in the log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Runs `sluice-queue` with this instance's config (as the current
    /// user, or as `uid` when given); returns (exit code, stdout, stderr).
    pub fn queue_tool(&self, args: &[&str], uid: Option<u32>) -> (i32, String, String) {
        let mut command = Command::new(program("sluice-queue"));
        command.arg("--config").arg(&self.config_path).args(args);
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        let out = command.output().expect("run sluice-queue");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Names of the files in a spool area (`queue`, `tmp`, ...).
    pub fn files_in(&self, area: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.spool_dir.join(area))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Reads and decodes one queue file.
    pub fn queue_file(&self, id: &str) -> sluice_spool::QueueFile {
        let bytes = std::fs::read(self.spool_dir.join("queue").join(id))
            .unwrap_or_else(|e| panic!("queue file {id}: {e}"));
        sluice_spool::decode(&bytes).unwrap_or_else(|e| panic!("queue file {id}: {e}"))
    }

    /// Sends SIGTERM to the master.
    pub fn terminate(&self) {
        kill(self.master_pid(), Signal::SIGTERM).expect("SIGTERM master");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = self.master.as_mut() {
            // The master leads its own process group; kill all of it.
            let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
            let _ = child.wait();
        }
        // A master started by `sluice start` leads its own group too.
        if let Ok(pid) = std::fs::read_to_string(self.run_dir.join("master.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("---- sluice log ----\n{}", self.log());
        }
    }
}

/// A loopback UDP address where nothing listens (bound, then released).
pub fn silent_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
}

/// The `user` for test configs: the unprivileged `sluice` account when the
/// tests run as root and it exists (as in CI), else the current user.
pub fn test_user() -> String {
    if nix::unistd::Uid::effective().is_root()
        && nix::unistd::User::from_name("sluice")
            .ok()
            .flatten()
            .is_some()
    {
        return "sluice".to_owned();
    }
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_owned())
}

/// Polls `done` until it is true; panics after [`DEADLINE`].
pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_up_to(DEADLINE, what, done);
}

/// Polls `done` until it is true; panics after `limit`.
pub fn wait_up_to(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes whose parent is `parent` and whose name is `name`.
pub fn children_named(parent: Pid, name: &str) -> Vec<Pid> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces, so split at ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent.as_raw() && comm == name && state != "Z" {
            out.push(Pid::from_raw(pid));
        }
    }
    out.sort();
    out
}

/// One message for [`send_with_python`].
#[derive(Debug, Clone)]
pub struct Mail {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO, in order.
    pub to: Vec<String>,
    /// The message, CRLF line ends.
    pub data: Vec<u8>,
}

/// What the client saw for one message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Outcome {
    /// The final reply was 250.
    pub ok: bool,
    /// The stage of the last reply: ehlo, mail, rcpt, data, connection.
    pub stage: String,
    /// Its code.
    pub code: u16,
    /// Its text (enhanced code first).
    pub reply: String,
}

impl Outcome {
    /// The queue ID from `250 2.0.0 Ok: queued as ID`.
    pub fn queue_id(&self) -> Option<String> {
        self.reply
            .rsplit_once("queued as ")
            .map(|(_, id)| id.trim().to_owned())
    }
}

/// Sends each message in its own SMTP session with Python's smtplib (a
/// real client, not ours), `threads` sessions at a time.
pub fn send_with_python(addr: SocketAddr, threads: usize, mails: &[Mail]) -> Vec<Outcome> {
    let job = serde_json::json!({
        "host": addr.ip().to_string(),
        "port": addr.port(),
        "threads": threads,
        "messages": mails.iter().map(|m| serde_json::json!({
            "from": m.from,
            "to": m.to,
            "data_hex": m.data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/smtp_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (a real SMTP client) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write job");
    let out = child.wait_with_output().expect("python client");
    assert!(out.status.success(), "python client failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("client result line"))
        .collect()
}

/// A raw SMTP conversation over TCP, for tests that must stop half way
/// (no client library lets one stop inside DATA).
pub struct Raw {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut raw = Raw {
            stream,
            pending: Vec::new(),
        };
        let greeting = raw.reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        raw
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one whole reply (all lines of a multi-line reply).
    pub fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let line = self.line();
            let last = line.as_bytes().get(3) != Some(&b'-');
            text.push_str(&line);
            if last {
                return text;
            }
        }
    }

    /// Sends a command line and returns the reply.
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).expect("read reply");
            assert!(
                n > 0,
                "connection closed; had {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

/// A test message with CRLF line ends and a unique subject.
pub fn message(subject: &str, body_lines: &[&str]) -> Vec<u8> {
    let mut m = format!(
        "From: sender@client.test\r\nTo: someone@relay.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n"
    );
    for l in body_lines {
        m.push_str(l);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// Whether the tests run as root (and so may create users and switch to
/// them).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A throwaway system user with a home under `base`, for tests of
/// delivery as a mailbox owner (root only); removed on drop.
pub struct TestUser {
    /// The login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory (created).
    pub home: PathBuf,
}

impl TestUser {
    /// Creates the user `sl<pid><tag>` with its home in `base`.
    pub fn new(tag: &str, base: &Path) -> TestUser {
        let name = format!("sl{}{tag}", std::process::id() % 100_000);
        let home = base.join(&name);
        let status = Command::new("useradd")
            .args(["-m", "-U", "-s", "/usr/sbin/nologin", "-d"])
            .arg(&home)
            .arg(&name)
            .stdout(Stdio::null())
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
        let user = nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .expect("the new user");
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home,
        }
    }

    /// `name@local.test`, the local domain of the local delivery tests.
    pub fn address(&self) -> String {
        format!("{}@local.test", self.name)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}
