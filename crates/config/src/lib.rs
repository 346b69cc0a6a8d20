//! Sluice's configuration: the RON schema, a documented default for every
//! key, and the checks that run before any daemon trusts a value.
//!
//! Every program reads one file (`/etc/sluice/sluice.ron` unless
//! `--config` says otherwise) with [`load`], or text with [`parse`]. Every
//! key has a default (see `etc/sluice.ron`), so `()` is a working config.
//! Unknown keys and bad values are errors that name the file, the line and
//! the dotted key, such as
//! `sluice.ron:12: key smtpd.trusted_networks[1]: invalid CIDR range "10.0.0.0/33": prefix length over 32`.
//!
//! Values are checked twice: while reading (types, addresses, ranges,
//! durations, next hops) and then as a whole (limits, `retry_min <=
//! retry_max`, domain names, which are also lower-cased here). A [`Config`]
//! that [`parse`] returns has passed both.
//!
//! # Must never
//! Do IO other than reading the one file in [`load`]; resolve names; guess
//! at a value it cannot read (an error beats a surprise in a mail gateway).
//!
//! # Security
//! Runs as root in `sluice-master` and `sluice check`. The file is the
//! operator's and trusted, but `trusted_networks`, `local_domains` and
//! `relay_domains` decide who may relay, so they are parsed strictly.
//!
//! # Errors
//! Every problem is an [`Error`]; loading stops at the first one.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod addr;
mod cidr;
mod domain;
mod duration;
mod error;
mod locate;
mod route;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

pub use crate::cidr::Cidr;
pub use crate::duration::{format_duration, parse_duration};
pub use crate::error::Error;
pub use crate::route::NextHop;

use crate::locate::{locate_keys, KeyPath};

/// Where programs look for the config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sluice/sluice.ron";

/// The whole configuration. Every field has `#[serde(default)]`; the
/// defaults are in the field docs and in `etc/sluice.ron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This host's name in greetings, `Received:` lines and bounces.
    /// Default `""`: the name in `/etc/mailname` when present, else the
    /// system host name (see [`Config::hostname_or`]).
    pub hostname: String,
    /// The spool (queue files, index, maildrop). Default `/var/spool/sluice`.
    pub spool_dir: PathBuf,
    /// Runtime sockets and the listeners file. Default `/run/sluice`.
    pub run_dir: PathBuf,
    /// Where `sluice-smtpd` and the other daemons are installed.
    /// Default `""`: the directory of the running `sluice-master`.
    pub daemon_dir: PathBuf,
    /// The account daemons run as when started as root (ignored otherwise).
    /// `""` is the user the program runs as, so nothing changes user (a
    /// demo instance, even one started by root). Default `sluice`.
    pub user: String,
    /// The SMTP server.
    pub smtpd: Smtpd,
    /// Domains delivered here by `sluice-local`: lower-case, no trailing
    /// dot; `.example.org` means every subdomain. Default empty.
    pub local_domains: Vec<String>,
    /// Domains accepted from anyone and relayed on. Same form. Default empty.
    pub relay_domains: Vec<String>,
    /// Static next hops by destination domain (`"*"`: every other domain,
    /// a smarthost). Default empty: DNS MX for everything.
    pub routes: BTreeMap<String, NextHop>,
    /// The resolver used by `sluice-smtp`.
    pub dns: Dns,
    /// Outbound SMTP (`sluice-smtp`).
    pub smtp: Smtp,
    /// The queue manager's schedule and limits.
    pub queue: Queue,
    /// Local delivery (`sluice-local`).
    pub local: Local,
    /// Logging.
    pub log: Log,
    /// A message with this many `Received:` header fields or more is
    /// refused on its way into the queue (`5.4.6 Too many hops`), as
    /// Postfix's `hopcount_limit`: relay loops end. `0` turns the check
    /// off. Default 50.
    pub hopcount_limit: usize,
    /// NUL bytes in a message from SMTP or sendmail: `"strip"` them, as
    /// Postfix does, or `"reject"` the message (`550 5.6.0` at the end of
    /// DATA). Default `"strip"`.
    pub nul_bytes: NulBytes,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hostname: String::new(),
            spool_dir: PathBuf::from("/var/spool/sluice"),
            run_dir: PathBuf::from("/run/sluice"),
            daemon_dir: PathBuf::new(),
            user: "sluice".to_owned(),
            smtpd: Smtpd::default(),
            local_domains: Vec::new(),
            relay_domains: Vec::new(),
            routes: BTreeMap::new(),
            dns: Dns::default(),
            smtp: Smtp::default(),
            queue: Queue::default(),
            local: Local::default(),
            log: Log::default(),
            hopcount_limit: 50,
            nul_bytes: NulBytes::Strip,
        }
    }
}

/// The SMTP server (`sluice-smtpd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Smtpd {
    /// Addresses to listen on; port 0 lets the kernel choose (tests).
    /// Default `["0.0.0.0:25", "[::]:25"]`. Must not be empty.
    #[serde(with = "addr::listen_list")]
    pub listen: Vec<SocketAddr>,
    /// How many `sluice-smtpd` processes to run. Default 2; at least 1.
    pub processes: usize,
    /// Clients that may relay to any domain.
    /// Default `["127.0.0.0/8", "::1/128"]`.
    pub trusted_networks: Vec<Cidr>,
    /// Largest message accepted, in bytes. Default 52428800 (50 MiB).
    pub max_message_size: u64,
    /// Most recipients per message. Default 1000.
    pub max_recipients: usize,
    /// Longest text line accepted in a message, in bytes, CRLF excluded.
    /// Default 1048576 (1 MiB); at least 1000 (RFC 5321 4.5.3.1.6). Lines
    /// over RFC 5321's 1000 octets are accepted, as Postfix accepts them,
    /// and broken with CRLF SPACE when relayed, so that no line over 1000
    /// octets goes out.
    pub max_line_length: usize,
    /// Errors in one session before it is closed. Default 20.
    pub max_errors: u32,
    /// Open connections per process. Default 1000. smtpd lowers it, with
    /// a warning, to what its file descriptor limit allows.
    pub max_connections: usize,
    /// Connections one client address may hold at once, across every smtpd
    /// process (counted by `sluice-anvil`); more get `421 4.7.0`.
    /// Default 50 (Postfix's); 0: no limit.
    pub client_connection_limit: u32,
    /// Connections one client address may open per minute, across every
    /// smtpd process; more get `421 4.7.0`. Default 0: no limit.
    pub client_connection_rate_limit: u32,
    /// Clients in `trusted_networks` are not counted against the two
    /// limits above (as Postfix exempts `$mynetworks`). Default true.
    pub client_limits_exempt_trusted: bool,
    /// Wait for a command. Default `5m`.
    #[serde(with = "duration::unit")]
    pub command_timeout: Duration,
    /// Wait for the next chunk of DATA. Default `10m`.
    #[serde(with = "duration::unit")]
    pub data_timeout: Duration,
    /// Longest whole session. Default `30m`.
    #[serde(with = "duration::unit")]
    pub session_timeout: Duration,
    /// What to do with a bare LF in DATA. Default `"reject"`.
    pub bare_newline: BareNewline,
    /// Answer VRFY (with 252, never revealing whether a user exists).
    /// Default true.
    pub vrfy: bool,
    /// Answer EXPN. Default false.
    pub expn: bool,
    /// Honour `NOTIFY=SUCCESS` and `RET=FULL` from clients outside
    /// `trusted_networks`. Default false: from them SUCCESS is dropped from
    /// NOTIFY and RET=FULL becomes RET=HDRS, so that a forged sender
    /// cannot have full copies reflected to it (backscatter).
    pub dsn_success_untrusted: bool,
    /// How long sessions in flight may finish on SIGTERM. Default `30s`.
    #[serde(with = "duration::unit")]
    pub stop_timeout: Duration,
}

impl Default for Smtpd {
    fn default() -> Smtpd {
        Smtpd {
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 25)),
                SocketAddr::from(([0u16; 8], 25)),
            ],
            processes: 2,
            trusted_networks: vec![
                Cidr {
                    addr: [127, 0, 0, 0].into(),
                    prefix: 8,
                },
                Cidr {
                    addr: std::net::Ipv6Addr::LOCALHOST.into(),
                    prefix: 128,
                },
            ],
            max_message_size: 52_428_800,
            max_recipients: 1000,
            max_line_length: 1_048_576,
            max_errors: 20,
            max_connections: 1000,
            client_connection_limit: 50,
            client_connection_rate_limit: 0,
            client_limits_exempt_trusted: true,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            session_timeout: Duration::from_secs(30 * 60),
            bare_newline: BareNewline::Reject,
            vrfy: true,
            expn: false,
            dsn_success_untrusted: false,
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// The resolver used for outbound mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// Name servers to ask; port 53 when left out. Default empty: the
    /// system resolver (`/etc/resolv.conf`).
    #[serde(with = "addr::nameserver_list")]
    pub nameservers: Vec<SocketAddr>,
    /// Wait for one answer. Default `5s`.
    #[serde(with = "duration::unit")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Dns {
        Dns {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Outbound SMTP (`sluice-smtp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Smtp {
    /// Port of MX hosts (and of routes that give none). Default 25.
    pub port: u16,
    /// STARTTLS policy. Default `"may"`.
    pub tls: TlsPolicy,
    /// Wait for a TCP connection. Default `30s`.
    #[serde(with = "duration::unit")]
    pub connect_timeout: Duration,
    /// Wait for each reply. Default `5m`.
    #[serde(with = "duration::unit")]
    pub command_timeout: Duration,
    /// Name sent in EHLO. Default `""`: the hostname.
    pub helo_name: String,
    /// MX hosts tried per delivery attempt. Default 5.
    pub max_hosts_per_attempt: usize,
    /// Messages sent over one connection before it is closed (1: no reuse).
    /// Default 100.
    pub reuse_max_messages: usize,
    /// How long an idle connection is kept for reuse. Default `5s`.
    #[serde(with = "duration::unit")]
    pub reuse_idle: Duration,
    /// STARTTLS policy per destination, overriding `tls`. A key is a next
    /// hop exactly as the queue manager hands it out (a route's value such
    /// as `"[10.0.0.5]:25"`, or a recipient domain without a route), or
    /// the bare host of one (`"10.0.0.5"`, `"relay.example"`); the exact
    /// next hop wins. Default `{}`.
    pub tls_policies: BTreeMap<String, TlsPolicy>,
    /// Extra trust anchors for `"verify"` (PEM file of CA certificates,
    /// used in addition to the system's). Default `""`: the system's only.
    pub tls_ca_file: PathBuf,
    /// Longest TLS handshake after STARTTLS. Default `30s`.
    #[serde(with = "duration::unit")]
    pub tls_timeout: Duration,
}

impl Default for Smtp {
    fn default() -> Smtp {
        Smtp {
            port: 25,
            tls: TlsPolicy::May,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            helo_name: String::new(),
            max_hosts_per_attempt: 5,
            reuse_max_messages: 100,
            reuse_idle: Duration::from_secs(5),
            tls_policies: BTreeMap::new(),
            tls_ca_file: PathBuf::new(),
            tls_timeout: Duration::from_secs(30),
        }
    }
}

/// The queue manager's schedule and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    /// First retry delay; doubles per attempt. Default `5m`; above zero.
    #[serde(with = "duration::unit")]
    pub retry_min: Duration,
    /// Longest retry delay. Default `1h`; at least `retry_min`.
    #[serde(with = "duration::unit")]
    pub retry_max: Duration,
    /// Undelivered mail older than this is bounced. Default `5d`.
    #[serde(with = "duration::unit")]
    pub lifetime: Duration,
    /// Warn the sender when mail is this late. Default `4h`; `"0"`: never.
    #[serde(with = "duration::unit")]
    pub delay_warning: Duration,
    /// Deliveries at once to one destination. Default 20.
    pub max_concurrency_per_destination: usize,
    /// Deliveries at once in total. Default 100.
    pub max_concurrency: usize,
    /// How many `sluice-smtp` processes to run. Default 4.
    pub smtp_agents: usize,
    /// How many `sluice-local` processes to run. Default 2.
    pub local_agents: usize,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue {
            retry_min: Duration::from_secs(5 * 60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            max_concurrency_per_destination: 20,
            max_concurrency: 100,
            smtp_agents: 4,
            local_agents: 2,
        }
    }
}

/// Local delivery (`sluice-local`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Local {
    /// The aliases file (aliases(5) format). Default `/etc/aliases`.
    pub aliases: PathBuf,
    /// The mailbox of a system user: `~/` is the user's home and `%u` the
    /// user name (`"/var/mail/%u"`); ending in `/` means a Maildir, else an
    /// mbox file. Default `~/Maildir/`. Must start with `~/` or `/`.
    pub mailbox: String,
    /// Characters that separate a user from an extension (`user+ext`).
    /// Default `+`; `""` turns extensions off.
    pub recipient_delimiter: String,
    /// Refuse `sendmail -f` (choosing the envelope sender) to users other
    /// than root and members of `user`'s group. Default `false`: anyone may
    /// use `-f`, and an untrusted user's `-f` adds an
    /// `X-Authentication-Warning:` header naming that user.
    pub restrict_sender: bool,
    /// Where `postmaster` goes when no alias, virtual mailbox or user of
    /// that name exists: a local name or an address. Default `root`.
    pub postmaster: String,
    /// The virtual mailbox map: lines of `address  /path` (a path ending
    /// in `/` is a Maildir, else an mbox file) for users without a Unix
    /// account. Default `""`: none.
    pub virtual_mailboxes: PathBuf,
    /// The directory that relative mailbox paths in the virtual map are
    /// under (Postfix's `virtual_mailbox_base`). Default `""`: the map's
    /// paths must be absolute.
    pub virtual_base: PathBuf,
    /// The Unix user that owns and writes the virtual mailboxes (ignored
    /// when Sluice does not run as root: it then writes as itself). `""`
    /// is the user the program runs as. Default `vmail`.
    pub virtual_owner: String,
    /// Honour `~/.forward` files (addresses only). Default `true`.
    pub forward: bool,
    /// Allow `|command` targets in the aliases file (only if root owns it).
    /// Default `false`.
    pub allow_commands: bool,
    /// Allow `/file` targets in the aliases file (only if root owns it).
    /// Default `false`.
    pub allow_files: bool,
    /// The user that runs `|command` targets and writes `/file` targets.
    /// Default `nobody`.
    pub command_user: String,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            aliases: PathBuf::from("/etc/aliases"),
            mailbox: "~/Maildir/".to_owned(),
            recipient_delimiter: "+".to_owned(),
            restrict_sender: false,
            postmaster: "root".to_owned(),
            virtual_mailboxes: PathBuf::new(),
            virtual_base: PathBuf::new(),
            virtual_owner: "vmail".to_owned(),
            forward: true,
            allow_commands: false,
            allow_files: false,
            command_user: "nobody".to_owned(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// The syslog socket. Default `/dev/log`.
    pub syslog_socket: PathBuf,
    /// Lines are tagged `<tag_prefix>/<program>`. Default `sluice`.
    pub tag_prefix: String,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            syslog_socket: PathBuf::from("/dev/log"),
            tag_prefix: "sluice".to_owned(),
        }
    }
}

/// Outbound STARTTLS policy (`smtp.tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsPolicy {
    /// `"none"`: never use TLS.
    None,
    /// `"may"`: use STARTTLS when offered, without verifying the peer; fall
    /// back to plain text.
    #[default]
    May,
    /// `"encrypt"`: require TLS, without verifying the peer.
    Encrypt,
    /// `"verify"`: require TLS and a certificate valid for the MX host.
    Verify,
}

/// What `sluice-smtpd` does with a bare LF (no CR) in message data
/// (`smtpd.bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BareNewline {
    /// `"reject"`: refuse the message (defends against SMTP smuggling).
    #[default]
    Reject,
    /// `"normalize"`: treat it as CRLF.
    Normalize,
}

/// What cleanup does with NUL bytes in a message's content (`nul_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NulBytes {
    /// `"strip"`: remove them, as Postfix does.
    #[default]
    Strip,
    /// `"reject"`: refuse the message.
    Reject,
}

/// Implements `FromStr`, `Display` and string serde for a keyword enum.
macro_rules! keyword_enum {
    ($ty:ident, $what:literal, $($variant:ident = $word:literal),+) => {
        impl $ty {
            /// The keyword as written in the config.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(text: &str) -> Result<$ty, String> {
                match text {
                    $($word => Ok($ty::$variant),)+
                    _ => Err(format!(
                        concat!("invalid ", $what, " {:?}: expected one of {}"),
                        text,
                        [$(concat!("\"", $word, "\"")),+].join(", "),
                    )),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                String::deserialize(d)?.parse().map_err(D::Error::custom)
            }
        }
    };
}

keyword_enum!(
    TlsPolicy,
    "TLS policy",
    None = "none",
    May = "may",
    Encrypt = "encrypt",
    Verify = "verify"
);
keyword_enum!(
    NulBytes,
    "NUL byte policy",
    Strip = "strip",
    Reject = "reject"
);
keyword_enum!(
    BareNewline,
    "bare newline policy",
    Reject = "reject",
    Normalize = "normalize"
);

impl Config {
    /// Puts `me` (the user this program runs as) where the file says `""`
    /// for a user: `user` and `local.virtual_owner`. The caller looks the
    /// name up (this crate resolves no names).
    pub fn resolve_own_user(&mut self, me: &str) {
        for name in [&mut self.user, &mut self.local.virtual_owner] {
            if name.is_empty() {
                *name = me.to_owned();
            }
        }
    }

    /// The host name to use: `hostname`, or `system` when it is empty.
    #[must_use]
    pub fn hostname_or(&self, system: &str) -> String {
        if self.hostname.is_empty() {
            system.to_owned()
        } else {
            self.hostname.clone()
        }
    }

    /// The config as pretty RON that [`parse`] reads back to an equal
    /// value (for `sluice check --print`). Durations print as unit strings.
    #[must_use]
    pub fn to_ron_pretty(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new().depth_limit(2);
        let mut text = ron::ser::to_string_pretty(self, pretty)
            // Every field is a string, number, bool, list or string-keyed
            // map, which RON always represents: failing is a bug.
            .expect("a Config always serializes to RON");
        text.push('\n');
        text
    }
}

/// Reads the config file at `path` and parses it. Programs load it with
/// `sluice_daemon::load_config`, which also resolves `""` user keys.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, else as [`parse`].
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and checks config text. `origin` is only used in messages.
///
/// # Errors
/// [`Error::Syntax`] when the text is not RON; [`Error::Key`] for an
/// unknown key, a bad value, or values that do not fit together.
pub fn parse(text: &str, origin: &Path) -> Result<Config, Error> {
    let syntax = |e: ron::error::SpannedError| Error::Syntax {
        path: origin.to_owned(),
        line: e.position.line,
        column: e.position.col,
        message: sentence(&e.code),
    };
    if text.trim().is_empty() {
        return Err(Error::Syntax {
            path: origin.to_owned(),
            line: 1,
            column: 1,
            message: "the file is empty (write `()` for all the defaults)".to_owned(),
        });
    }
    let mut reader = ron::Deserializer::from_str(text).map_err(syntax)?;
    let mut config: Config = match serde_path_to_error::deserialize(&mut reader) {
        Ok(config) => config,
        Err(e) => {
            let key = KeyPath::from(e.path());
            let code = e.into_inner();
            return Err(value_error(text, origin, key, reader.span_error(code)));
        }
    };
    reader
        .end()
        .map_err(|code| syntax(reader.span_error(code)))?;
    let lines = locate_keys(text);
    if let Some((key, line)) = lines.first_repeat() {
        return Err(Error::Key {
            path: origin.to_owned(),
            line,
            key: key.to_owned(),
            message: "written twice".to_owned(),
        });
    }
    validate::check(&mut config).map_err(|invalid| {
        // Blame the first of the keys involved that the file writes.
        let key = invalid
            .keys
            .iter()
            .find(|k| lines.line_of(k).is_some())
            .or(invalid.keys.first())
            .cloned()
            .unwrap_or_default();
        Error::Key {
            path: origin.to_owned(),
            line: lines.nearest_line(&key),
            key: key.to_string(),
            message: invalid.message,
        }
    })?;
    Ok(config)
}

/// A ron error as a message in this crate's style (lower-case start).
fn sentence(code: &ron::Error) -> String {
    let text = code.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Turns a ron error met while reading the value at `key` into an
/// [`Error`]: syntax errors keep ron's line and column, value errors get the
/// key and the line where the key is written.
fn value_error(
    text: &str,
    origin: &Path,
    mut key: KeyPath,
    error: ron::error::SpannedError,
) -> Error {
    use ron::Error as E;
    let duplicate = matches!(error.code, E::DuplicateStructField { .. });
    let message = match &error.code {
        E::NoSuchStructField {
            expected, found, ..
        } => {
            // serde_path_to_error usually has the key already.
            if !key.ends_with(found) {
                key = key.name(found);
            }
            format!("unknown key; the keys here are {}", expected.join(", "))
        }
        E::DuplicateStructField { field, .. } => {
            if !key.ends_with(field) {
                key = key.name(field);
            }
            "written twice".to_owned()
        }
        E::Message(message) => message.clone(),
        E::InvalidValueForType { .. }
        | E::IntegerOutOfBounds
        | E::ExpectedString
        | E::ExpectedInteger
        | E::ExpectedBoolean
        | E::ExpectedArray
        | E::ExpectedMap
        | E::ExpectedStructLike
        | E::ExpectedNamedStructLike(_)
        | E::ExpectedDifferentStructName { .. } => sentence(&error.code),
        _ => String::new(),
    };
    if message.is_empty() || key.is_empty() {
        return Error::Syntax {
            path: origin.to_owned(),
            line: error.position.line,
            column: error.position.col,
            message: sentence(&error.code),
        };
    }
    // ron stops just after the second of two equal keys; otherwise the
    // key's own line is the one to show (ron may have read past it).
    let line = match locate_keys(text).line_of(&key) {
        Some(line) if !duplicate => line,
        _ => error.position.line,
    };
    Error::Key {
        path: origin.to_owned(),
        line,
        key: key.to_string(),
        message,
    }
}
#[cfg(test)]
mod tests;
