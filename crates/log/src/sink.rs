//! The process-wide `log::Log` implementation: one record becomes one line,
//! on syslog (facility `mail`, tag `sluice/<program>`) or on stderr in the
//! syslog file shape (`Nov 28 22:45:03 host sluice/smtpd[123]: text`).
//!
//! # Must never
//! Block mail on a logging failure, or let a record span more than one line.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Where log records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard error, one line per record (foreground runs, tests).
    Stderr,
    /// The syslog datagram socket at this path (normally `/dev/log`).
    Syslog(PathBuf),
}

/// Failure to set up logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The syslog socket could not be reached.
    #[error("cannot reach syslog socket {path}: {message}")]
    Syslog {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A logger was already installed in this process.
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

enum Target {
    Stderr { hostname: String },
    Syslog(Box<syslog::Logger<LoggerBackend, Formatter3164>>),
}

struct Logger {
    tag: String,
    pid: u32,
    level: LevelFilter,
    target: Mutex<Target>,
}

/// Installs the process logger. `tag` is `sluice/<program>`; records at
/// `level` and above are written.
pub fn init(tag: &str, hostname: &str, sink: Sink, level: LevelFilter) -> Result<(), Error> {
    let pid = std::process::id();
    let target = match sink {
        Sink::Stderr => Target::Stderr {
            hostname: hostname.to_owned(),
        },
        Sink::Syslog(path) => {
            let formatter = Formatter3164 {
                facility: Facility::LOG_MAIL,
                hostname: None,
                process: tag.to_owned(),
                pid,
            };
            let logger = syslog::unix_custom(formatter, &path).map_err(|e| Error::Syslog {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Target::Syslog(Box::new(logger))
        }
    };
    let logger = Logger {
        tag: tag.to_owned(),
        pid,
        level,
        target: Mutex::new(target),
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|_| Error::AlreadyInstalled)?;
    log::set_max_level(level);
    Ok(())
}

/// Postfix marks severity in the text: `warning: `, `error: `, ...
fn severity_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug | Level::Trace => "debug: ",
    }
}

/// Keeps a record on one line whatever its arguments contain.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

fn stderr_stamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[usize::from(u8::from(now.month())) - 1],
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = one_line(&format!(
            "{}{}",
            severity_prefix(record.level()),
            record.args()
        ));
        let Ok(mut target) = self.target.lock() else {
            return;
        };
        match &mut *target {
            Target::Stderr { hostname } => {
                let line = format!(
                    "{} {} {}[{}]: {}\n",
                    stderr_stamp(),
                    hostname,
                    self.tag,
                    self.pid,
                    text
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Target::Syslog(logger) => {
                let _ = match record.level() {
                    Level::Error => logger.err(text),
                    Level::Warn => logger.warning(text),
                    Level::Info => logger.info(text),
                    Level::Debug | Level::Trace => logger.debug(text),
                };
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_on_one_line() {
        assert_eq!(one_line("a\r\nb\nc"), "a  b c");
    }

    #[test]
    fn stamp_has_syslog_shape() {
        let s = stderr_stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(&s[9..10], ":");
    }
}
