//! The sendmail(1) command line: the flags every MTA's `sendmail` accepts,
//! parsed by hand because their syntax is not getopt's (`-oi`, `-odi`,
//! `-faddr` or `-f addr`, `-q` with an optional attached value).
//!
//! # Must never
//! Silently accept a flag that would change where mail goes or which
//! configuration is read: unknown letters and unsupported modes are usage
//! errors; only flags known to be harmless elsewhere are ignored.
//!
//! # Security
//! Arguments come from any local user. Nothing here decides privileges:
//! that `-C` is for root (or a root-owned file) is checked by the caller.
//!
//! # Errors
//! [`Usage`] with a one-line reason; the caller exits with `EX_USAGE`.

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Read a message on stdin and submit it (`-bm`, the default).
    #[default]
    Deliver,
    /// SMTP on stdin/stdout (`-bs`).
    Smtp,
    /// List the queue (`-bp`, or invoked as `mailq`).
    List,
    /// Flush the queue (`-q`), or the mail of one site (`-qRsite`).
    Flush(Option<String>),
    /// Rebuild the aliases database (`-bi`, `-I`, `newaliases`): nothing
    /// to do, `sluice-local` reads the aliases file itself.
    Newaliases,
    /// `--help`.
    Help,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// `-f` / `-r`: the envelope sender, as given.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` header that is added.
    pub full_name: Option<String>,
    /// `-t`: recipients from To/Cc/Bcc as well.
    pub extract: bool,
    /// `-i` / `-oi`: a line with a single `.` does not end the message.
    pub ignore_dots: bool,
    /// `-N`: DSN NOTIFY, as given.
    pub notify: Option<String>,
    /// `-R`: DSN RET, as given.
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-B`: the body type, as given.
    pub body: Option<String>,
    /// `-v`: say what was done on stderr.
    pub verbose: bool,
    /// `-C FILE` / `--config FILE`.
    pub config: Option<PathBuf>,
    /// Recipients on the command line, as given.
    pub recipients: Vec<String>,
}

/// A usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Letters that take a value, attached (`-fme`) or in the next argument.
const WITH_VALUE: &[char] = &[
    'B', 'C', 'F', 'L', 'N', 'O', 'R', 'V', 'X', 'b', 'e', 'f', 'h', 'o', 'p', 'r',
];
/// Letters accepted and ignored, as other MTAs do: `-G` (gateway), `-U`
/// (initial submission), `-m` (me too), `-n` (no aliasing), `-s`, `-x`,
/// `-c`, `-d` (debug, value attached), `-A` (value attached).
const IGNORED: &[char] = &['G', 'U', 'm', 'n', 's', 'x', 'c'];

/// Parses `args` (without the program name). `invoked_as` is the program's
/// base name: `mailq` lists, `newaliases` rebuilds aliases.
pub fn parse(invoked_as: &str, args: &[String]) -> Result<Options, Usage> {
    let mut o = Options::default();
    match invoked_as {
        "mailq" => o.mode = Mode::List,
        "newaliases" => o.mode = Mode::Newaliases,
        _ => {}
    }
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", v)) => o.config = Some(v.into()),
                None if long == "config" => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| Usage("--config needs a file".into()))?;
                    i += 1;
                    o.config = Some(v.into());
                }
                None if long == "help" => o.mode = Mode::Help,
                _ => return Err(Usage(format!("unknown option --{long}"))),
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            // The first recipient ends the options, as in Postfix.
            o.recipients.extend(args[i - 1..].iter().cloned());
            break;
        };
        for (at, letter) in flags.char_indices() {
            let rest = &flags[at + letter.len_utf8()..];
            if letter == 'q' {
                // -q alone, -q30m (interval, only meaningful with -bd), -qRsite.
                o.mode = Mode::Flush(rest.strip_prefix('R').map(str::to_owned));
                break;
            }
            if letter == 'd' || letter == 'A' {
                // -d debug levels, -Ac/-Am: value attached, ignored.
                break;
            }
            if WITH_VALUE.contains(&letter) {
                let value = if rest.is_empty() {
                    let v = args
                        .get(i)
                        .ok_or_else(|| Usage(format!("option -{letter} needs a value")))?;
                    i += 1;
                    v.clone()
                } else {
                    rest.to_owned()
                };
                apply_value(&mut o, letter, value)?;
                break;
            }
            match letter {
                't' => o.extract = true,
                'i' => o.ignore_dots = true,
                'v' => o.verbose = true,
                'I' => o.mode = Mode::Newaliases,
                c if IGNORED.contains(&c) => {}
                c => return Err(Usage(format!("unknown option -{c}"))),
            }
        }
    }
    Ok(o)
}

fn apply_value(o: &mut Options, letter: char, value: String) -> Result<(), Usage> {
    match letter {
        'f' | 'r' => o.sender = Some(value),
        'F' => o.full_name = Some(value),
        'N' => o.notify = Some(value),
        'R' => o.ret = Some(value),
        'V' => o.envid = Some(value),
        'B' => o.body = Some(value),
        'C' => o.config = Some(value.into()),
        'b' => o.mode = mode(&value)?,
        'o' => option(o, &value)?,
        // -L tag, -O option=value, -X logfile, -e mode, -h hops,
        // -p protocol: accepted and ignored (-X never writes a file here).
        _ => {}
    }
    Ok(())
}

/// `-bX`.
fn mode(value: &str) -> Result<Mode, Usage> {
    match value {
        "m" => Ok(Mode::Deliver),
        "s" => Ok(Mode::Smtp),
        "p" => Ok(Mode::List),
        "i" => Ok(Mode::Newaliases),
        "d" | "D" | "l" => Err(Usage(format!(
            "-b{value} (daemon mode) is not how Sluice runs: use `sluice start`"
        ))),
        other => Err(Usage(format!("unsupported mode -b{other}"))),
    }
}

/// `-oX...`: `-oi` is `-i`; `-oQ` (another queue) is refused; every other
/// sendmail option (`-odi`, `-oem`, `-om`, `-oA...`) is ignored, as Postfix
/// does.
fn option(o: &mut Options, value: &str) -> Result<(), Usage> {
    match value.chars().next() {
        Some('i') => o.ignore_dots = true,
        Some('Q') => {
            return Err(Usage(
                "-oQ (another queue directory) is not supported: use -C with a configuration file"
                    .into(),
            ))
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, Usage> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        parse("sendmail", &args)
    }

    #[test]
    fn cron_and_php_command_lines() {
        // cron: sendmail -FCronDaemon -i -odi -oem -oi -t
        let o = p(&["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"]).expect("cron");
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert!(o.ignore_dots && o.extract);
        assert_eq!(o.mode, Mode::Deliver);
        assert!(o.recipients.is_empty());
        // PHP: sendmail -t -i -f x@y
        let o = p(&["-t", "-i", "-f", "x@y.test"]).expect("php");
        assert_eq!(o.sender.as_deref(), Some("x@y.test"));
        // mailx: sendmail -i -- a@b c@d
        let o = p(&["-i", "--", "a@b.test", "-c@d.test"]).expect("mailx");
        assert_eq!(o.recipients, ["a@b.test", "-c@d.test"]);
    }

    #[test]
    fn values_attached_or_separate_and_clusters() {
        let o = p(&["-fme@x.test", "-F", "Joe User", "-ti", "rcpt@x.test", "-t"]).expect("ok");
        assert_eq!(o.sender.as_deref(), Some("me@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Joe User"));
        assert!(o.extract && o.ignore_dots);
        // After the first recipient everything is a recipient.
        assert_eq!(o.recipients, ["rcpt@x.test", "-t"]);
        let o = p(&[
            "-r",
            "a@b.test",
            "-N",
            "failure,delay",
            "-Rhdrs",
            "-V",
            "ENV1",
        ])
        .expect("ok");
        assert_eq!(o.sender.as_deref(), Some("a@b.test"));
        assert_eq!(o.notify.as_deref(), Some("failure,delay"));
        assert_eq!(o.ret.as_deref(), Some("hdrs"));
        assert_eq!(o.envid.as_deref(), Some("ENV1"));
        let o = p(&["-C", "/etc/x.ron", "x@y"]).expect("ok");
        assert_eq!(o.config, Some(PathBuf::from("/etc/x.ron")));
        let o = p(&["--config=/a.ron"]).expect("ok");
        assert_eq!(o.config, Some(PathBuf::from("/a.ron")));
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["-bs"]).expect("bs").mode, Mode::Smtp);
        assert_eq!(p(&["-bp"]).expect("bp").mode, Mode::List);
        assert_eq!(p(&["-bm", "a@b"]).expect("bm").mode, Mode::Deliver);
        assert_eq!(p(&["-q"]).expect("q").mode, Mode::Flush(None));
        assert_eq!(p(&["-q30m"]).expect("q").mode, Mode::Flush(None));
        assert_eq!(
            p(&["-qRexample.org"]).expect("qR").mode,
            Mode::Flush(Some("example.org".into()))
        );
        assert_eq!(p(&["-bi"]).expect("bi").mode, Mode::Newaliases);
        assert_eq!(parse("mailq", &[]).expect("mailq").mode, Mode::List);
        assert!(p(&["-bd"]).expect_err("daemon").0.contains("sluice start"));
        assert!(p(&["-bz"]).is_err());
    }

    #[test]
    fn harmless_flags_are_ignored_and_unknown_ones_refused() {
        let o = p(&[
            "-oem", "-odb", "-om", "-U", "-G", "-m", "-L", "tag", "-X", "/tmp/log", "-Am", "-d0.1",
            "-h", "5", "a@b",
        ])
        .expect("harmless");
        assert_eq!(o.recipients, ["a@b"]);
        assert_eq!(
            o,
            Options {
                recipients: vec!["a@b".into()],
                ..Options::default()
            }
        );
        assert_eq!(p(&["-Z"]).expect_err("unknown").0, "unknown option -Z");
        assert!(p(&["-oQ/tmp/q"]).is_err());
        assert!(p(&["-f"])
            .expect_err("missing value")
            .0
            .contains("-f needs a value"));
        assert!(p(&["--frobnicate"]).is_err());
    }
}
