//! The settings of the server session: [`Config`] (shared by all sessions
//! of a listener), its [`Limits`], the [`BareNewline`] policy, and what the
//! driver knows of the [`Peer`].
//!
//! # Must never
//! Hold anything per session: these values are shared behind an `Arc`.
//!
//! # Errors
//! None: the config crate validates values before they get here.

use std::net::SocketAddr;
use std::time::Duration;

/// What to do with a bare CR or LF (one not part of CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// In a command line: `500 5.5.2`; in a message: read to the end,
    /// then `550 5.6.0`, nothing committed. The default.
    #[default]
    Reject,
    /// Accept it: in a message it becomes CRLF (it still never ends DATA);
    /// a command line may end in a bare LF.
    Normalize,
}

/// Limits enforced by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest text line in a message, CRLF excluded: longer ones get
    /// `550 5.6.0` at the end of the content. Default 1048576 (lines over
    /// RFC 5321's 1000 octets are accepted; the client breaks them on the
    /// way out, see [`crate::data::Stuffer`]).
    pub max_line_length: usize,
    /// Advertised with SIZE; enforced at MAIL (SIZE=) and at the end of the
    /// content. Default 52428800 (50 MiB).
    pub max_message_size: u64,
    /// Recipients per message; more get `452 4.5.3`. Default 1000.
    pub max_recipients: usize,
    /// Error replies before `421 4.7.0 ... too many errors`. Default 20.
    pub max_errors: u32,
    /// Time allowed to receive one command line. Default 300 s.
    pub command_timeout: Duration,
    /// Idle time allowed inside DATA/BDAT content. Default 300 s.
    pub data_timeout: Duration,
    /// Time allowed for the whole session. Default 3600 s.
    pub session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: 1_048_576,
            max_message_size: 52_428_800,
            max_recipients: 1000,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
        }
    }
}

/// Settings shared by all sessions of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our host name, in the greeting and replies. Default `localhost`.
    pub hostname: String,
    /// Limits.
    pub limits: Limits,
    /// Domains delivered here: lower-case, no trailing dot; `.example.org`
    /// matches the subdomains of example.org. Default empty.
    pub local_domains: Vec<String>,
    /// Domains accepted from anyone and relayed on; same rules. Default
    /// empty.
    pub relay_domains: Vec<String>,
    /// Bare CR/LF handling. Default [`BareNewline::Reject`].
    pub bare_newline: BareNewline,
    /// VRFY answers `252 2.5.2` (never confirming anything) when true, the
    /// default; `502 5.5.1` when false.
    pub vrfy_enabled: bool,
    /// EXPN answers `502 5.5.1` when false, the default; `252 2.5.2` when
    /// true (no expansion).
    pub expn_enabled: bool,
    /// Honour `NOTIFY=SUCCESS` and `RET=FULL` from untrusted peers. When
    /// false, the default, SUCCESS is dropped from an untrusted peer's
    /// NOTIFY and its RET=FULL becomes RET=HDRS (no full copies reflected
    /// to a forged sender); the command still succeeds.
    pub dsn_success_untrusted: bool,
    /// Ask the driver's checks ([`super::Ask::Check`]) at each stage. A
    /// driver with no checks to run (`sendmail -bs`) leaves it false, the
    /// default: every stage then goes on at once.
    pub checks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".to_string(),
            limits: Limits::default(),
            local_domains: Vec::new(),
            relay_domains: Vec::new(),
            bare_newline: BareNewline::Reject,
            vrfy_enabled: true,
            expn_enabled: false,
            dsn_success_untrusted: false,
            checks: false,
        }
    }
}

/// The connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address and port.
    pub addr: SocketAddr,
    /// In `trusted_networks`: may relay anywhere.
    pub trusted: bool,
    /// Its verified host name, if the driver looked it up.
    pub hostname: Option<String>,
}
