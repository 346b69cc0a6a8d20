//! Submission: who is submitting ([`Submitter`], from `getuid()` only),
//! the envelope (sender from `-f` or `user@hostname`, recipients from the
//! command line and, with `-t`, the headers), the header fixes, and the
//! maildrop file ([`Spool::commit_to`]) with a best-effort wake-up of
//! `sluice-pickup`.
//!
//! # Must never
//! Take the submitter's identity from anything but the real uid, write
//! anywhere but `maildrop/`, or need a daemon: the hint may fail, the file
//! is what counts.
//!
//! # Security
//! Runs as the invoking user, with no privilege. `sluice-pickup` checks
//! every maildrop file again (it cannot trust this program, which any user
//! can replace by a hand-written file).
//!
//! # Errors
//! [`Failure`]s carry the sysexits code and a one-line reason.

use std::time::SystemTime;

use sluice_config::Config;
use sluice_proto::address::{self, Path as SmtpPath};
use sluice_proto::envelope::{BodyType, Envelope, Notify, Recipient, Ret};
use sluice_sendmail::addrlist;
use sluice_sendmail::args::Options;
use sluice_spool::{Area, Message, QueueId, Source, Spool};

use crate::{Failure, EX_DATAERR, EX_NOPERM, EX_TEMPFAIL, EX_USAGE};
use sluice_cleanup::{header_safe, Header};

/// The user submitting, from the real uid.
#[derive(Debug, Clone)]
pub(crate) struct Submitter {
    /// `getuid()`.
    pub(crate) uid: u32,
    /// Login name (the uid in decimal when it has no passwd entry).
    pub(crate) user: String,
    /// Full name from the passwd gecos field (before the first comma).
    pub(crate) gecos: Option<String>,
    /// Root, or a member of the group of the configured `user`.
    pub(crate) trusted: bool,
}

impl Submitter {
    /// The invoking user.
    pub(crate) fn current(config: &Config) -> Submitter {
        let uid = nix::unistd::getuid();
        let entry = nix::unistd::User::from_uid(uid).ok().flatten();
        let user = entry
            .as_ref()
            .map_or_else(|| uid.as_raw().to_string(), |u| u.name.clone());
        let gecos = entry.as_ref().and_then(|u| {
            let g = u.gecos.to_string_lossy();
            let name = g.split(',').next().unwrap_or("").trim().to_owned();
            (!name.is_empty()).then_some(name)
        });
        let trusted_gid = nix::unistd::User::from_name(&config.user)
            .ok()
            .flatten()
            .map(|u| u.gid);
        let in_group = trusted_gid.is_some_and(|gid| {
            nix::unistd::getgid() == gid
                || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&gid))
        });
        Submitter {
            uid: uid.as_raw(),
            user,
            gecos,
            trusted: uid.is_root() || in_group,
        }
    }
}

/// Everything a submission needs besides the message.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) submitter: Submitter,
    pub(crate) hostname: String,
    pub(crate) spool: Spool,
    pub(crate) run_dir: std::path::PathBuf,
    pub(crate) restrict_sender: bool,
    pub(crate) hopcount_limit: usize,
    pub(crate) reject_nul: bool,
    pub(crate) max_size: u64,
    pub(crate) verbose: bool,
}

impl Context {
    /// The submitter's own address, `user@hostname`.
    pub(crate) fn own_address(&self) -> String {
        format!("{}@{}", self.submitter.user, self.hostname)
    }

    /// Checks one address (already without `<>`) against the SMTP grammar,
    /// qualifying a bare `user` with the host name. `""` is the null path.
    pub(crate) fn address(&self, text: &str) -> Result<String, Failure> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(String::new());
        }
        let qualified = if text.contains('@') {
            text.to_owned()
        } else {
            format!("{text}@{}", self.hostname)
        };
        match address::parse_path(&format!("<{qualified}>"), true) {
            Ok((SmtpPath::Mailbox { mailbox, .. }, "")) => Ok(mailbox.address()),
            _ => Err(Failure::new(
                EX_DATAERR,
                format!("bad address syntax: {}", header_safe(text)),
            )),
        }
    }

    /// The envelope sender: `-f` (after the trust rules) or our own.
    pub(crate) fn sender(&self, chosen: Option<&str>) -> Result<String, Failure> {
        let Some(chosen) = chosen else {
            return Ok(self.own_address());
        };
        let inner = chosen.trim();
        let inner = inner
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(inner);
        let sender = self.address(inner)?;
        if !self.submitter.trusted
            && self.restrict_sender
            && !sender.eq_ignore_ascii_case(&self.own_address())
        {
            return Err(Failure::new(
                EX_NOPERM,
                format!(
                    "user {} may not choose the sender (-f): local.restrict_sender is on",
                    self.submitter.user
                ),
            ));
        }
        Ok(sender)
    }

    /// Cleanup's header fixes of a local submission (the missing `From:`,
    /// `Date:`, `Message-ID:`, `Bcc:` removed, the warning of an untrusted
    /// chosen sender); pickup runs them again on the file. Refused (65)
    /// past `hopcount_limit` `Received:` fields.
    pub(crate) fn fix_header(
        &self,
        header: &mut Header,
        envelope: &Envelope,
        full_name: Option<&str>,
        id: QueueId,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let source = self.source();
        let entry = sluice_cleanup::Entry {
            id,
            arrival: now,
            source: &source,
            envelope,
        };
        let who = sluice_cleanup::Submitter {
            trusted: self.submitter.trusted,
            full_name: full_name.or(self.submitter.gecos.as_deref()),
        };
        let settings = sluice_cleanup::Settings {
            hostname: self.hostname.clone(),
            hopcount_limit: self.hopcount_limit,
            reject_nul: self.reject_nul,
        };
        sluice_cleanup::fix_local_header(&settings, &entry, &who, header)
            .map_err(|e| Failure::new(EX_DATAERR, format!("{} {e}", e.dsn())))
    }

    /// The queue file's source: this user, by the real uid.
    fn source(&self) -> Source {
        Source::Local {
            uid: self.submitter.uid,
            user: self.submitter.user.clone(),
        }
    }

    /// Recipients from command-line arguments (each may be a list).
    pub(crate) fn recipients_from(&self, lists: &[String]) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for list in lists {
            let addresses = addrlist::parse(list).map_err(|e| {
                Failure::new(
                    EX_DATAERR,
                    format!("bad recipient list {}: {e}", header_safe(list)),
                )
            })?;
            for a in addresses {
                out.push(self.address(&a)?);
            }
        }
        Ok(out)
    }

    /// Writes the maildrop file and wakes pickup.
    pub(crate) fn commit(
        &self,
        id: QueueId,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<(), Failure> {
        let maildrop = self.spool.dir(Area::Maildrop);
        if !maildrop.is_dir() {
            return Err(Failure::new(
                EX_TEMPFAIL,
                format!(
                    "no maildrop directory {}: the spool is created when Sluice first starts (sluice start)",
                    maildrop.display()
                ),
            ));
        }
        let source = self.source();
        let message = Message {
            id,
            arrival: SystemTime::now(),
            source: &source,
            envelope,
            content: &[content],
        };
        self.spool
            .commit_to(Area::Maildrop, &message)
            .map_err(|e| Failure::new(EX_TEMPFAIL, format!("cannot write to the maildrop: {e}")))?;
        if self.verbose {
            eprintln!(
                "sluice-sendmail: queued as {id} in {} for {} recipient(s)",
                maildrop.display(),
                envelope.recipients.len()
            );
        }
        // Best effort: with the daemons down nothing listens, and the file
        // waits in maildrop/ for pickup to start.
        sluice_ipc::pickup::wake(&self.run_dir);
        Ok(())
    }
}

/// Submits one message read from stdin (`-bm`, with or without `-t`).
pub(crate) fn deliver(
    ctx: &Context,
    options: &Options,
    content: &[u8],
) -> Result<QueueId, Failure> {
    let sender = ctx.sender(options.sender.as_deref())?;
    let mut header = Header::parse(content);
    let mut addresses = ctx.recipients_from(&options.recipients)?;
    if options.extract {
        // Resent- fields, when present, name the recipients of a resend.
        let resent = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
        let names: &[&str] = if resent.iter().any(|n| header.has(n)) {
            &resent
        } else {
            &["To", "Cc", "Bcc"]
        };
        let lists = header.values(names);
        addresses.extend(ctx.recipients_from(&lists)?);
    }
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(a.clone()));
    if addresses.is_empty() {
        let why = if options.extract {
            "no recipient addresses found in the message header or on the command line"
        } else {
            "no recipients given (name them, or use -t)"
        };
        return Err(Failure::new(EX_USAGE, why.to_owned()));
    }
    let id = QueueId::generate();
    let notify = options.notify.as_deref().map(parse_notify).transpose()?;
    let mut envelope = Envelope {
        smtputf8: !sender.is_ascii() || addresses.iter().any(|a| !a.is_ascii()),
        sender,
        recipients: addresses
            .into_iter()
            .map(|address| Recipient {
                address,
                notify,
                orcpt: None,
            })
            .collect(),
        ret: options.ret.as_deref().map(parse_ret).transpose()?,
        envid: options.envid.as_deref().map(parse_envid).transpose()?,
        ..Envelope::default()
    };
    ctx.fix_header(
        &mut header,
        &envelope,
        options.full_name.as_deref(),
        id,
        SystemTime::now(),
    )?;
    let content = header.to_bytes();
    envelope.body = body_type(options.body.as_deref(), &content)?;
    ctx.commit(id, &envelope, &content)?;
    Ok(id)
}

/// `-N never` or `-N success,failure,delay` (any subset, any order).
pub(crate) fn parse_notify(value: &str) -> Result<Notify, Failure> {
    let bad = || Failure::new(EX_USAGE, format!("bad -N value {}", header_safe(value)));
    let mut notify = Notify::default();
    if value.eq_ignore_ascii_case("never") {
        return Ok(notify);
    }
    for word in value.split(',') {
        match word.trim().to_ascii_lowercase().as_str() {
            "success" => notify.success = true,
            "failure" => notify.failure = true,
            "delay" => notify.delay = true,
            _ => return Err(bad()),
        }
    }
    Ok(notify)
}

fn parse_ret(value: &str) -> Result<Ret, Failure> {
    match value.to_ascii_lowercase().as_str() {
        "full" => Ok(Ret::Full),
        "hdrs" => Ok(Ret::Hdrs),
        _ => Err(Failure::new(
            EX_USAGE,
            format!("bad -R value {} (full or hdrs)", header_safe(value)),
        )),
    }
}

/// ENVID: printable ASCII, at most 100 characters (RFC 3461 4.4).
fn parse_envid(value: &str) -> Result<String, Failure> {
    if value.is_empty() || value.len() > 100 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Failure::new(
            EX_USAGE,
            "bad -V value (1 to 100 printable characters)".into(),
        ));
    }
    Ok(value.to_owned())
}

/// `-B 7BIT|8BITMIME`, else 8BITMIME exactly when the content has 8-bit bytes.
fn body_type(given: Option<&str>, content: &[u8]) -> Result<BodyType, Failure> {
    match given.map(str::to_ascii_uppercase).as_deref() {
        Some("7BIT") => Ok(BodyType::SevenBit),
        Some("8BITMIME") => Ok(BodyType::EightBitMime),
        Some(_) => Err(Failure::new(
            EX_USAGE,
            "bad -B value (7BIT or 8BITMIME)".into(),
        )),
        None if content.is_ascii() => Ok(BodyType::SevenBit),
        None => Ok(BodyType::EightBitMime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sendmail::args;

    fn ctx(trusted: bool, restrict: bool) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path().join("spool"));
        spool.create_layout(None).expect("layout");
        let ctx = Context {
            submitter: Submitter {
                uid: 1000,
                user: "joe".into(),
                gecos: Some("Joe User".into()),
                trusted,
            },
            hostname: "host.test".into(),
            spool,
            run_dir: dir.path().join("run"),
            restrict_sender: restrict,
            hopcount_limit: 50,
            reject_nul: false,
            max_size: 1 << 20,
            verbose: false,
        };
        (dir, ctx)
    }

    fn submit(
        ctx: &Context,
        argv: &[&str],
        input: &str,
    ) -> Result<sluice_spool::QueueFile, Failure> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let options = args::parse("sendmail", &argv).expect("args");
        let content = crate::message::read_input(input.as_bytes(), options.ignore_dots, 1 << 20)
            .expect("input");
        let id = deliver(ctx, &options, &content)?;
        let bytes = std::fs::read(ctx.spool.path(Area::Maildrop, id)).expect("maildrop file");
        Ok(sluice_spool::decode(&bytes).expect("decodes"))
    }

    fn text(file: &sluice_spool::QueueFile) -> String {
        String::from_utf8(file.content.clone()).expect("utf8")
    }

    #[test]
    fn t_takes_to_cc_bcc_removes_bcc_and_adds_missing_fields() {
        let (_d, ctx) = ctx(true, false);
        let file = submit(
            &ctx,
            &["-t"],
            "To: \"Doe, Jane\" <jane@relay.test>, bob\nCc: team: c@relay.test;\nBcc: hidden@relay.test\nSubject: hi\n\nbody\n",
        )
        .expect("submitted");
        let rcpts: Vec<&str> = file
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(
            rcpts,
            [
                "jane@relay.test",
                "bob@host.test",
                "c@relay.test",
                "hidden@relay.test"
            ]
        );
        assert_eq!(file.envelope.sender, "joe@host.test");
        assert_eq!(
            file.source,
            Source::Local {
                uid: 1000,
                user: "joe".into()
            }
        );
        let t = text(&file);
        assert!(!t.contains("hidden"), "{t}");
        assert!(t.contains("\r\nFrom: Joe User <joe@host.test>\r\n"), "{t}");
        assert!(t.contains("\r\nDate: "), "{t}");
        assert!(t.contains(&format!(".{}@host.test>\r\n", file.id)), "{t}");
        assert!(t.ends_with("\r\n\r\nbody\r\n"), "{t}");
        assert!(!t.contains("X-Authentication-Warning"), "{t}");
    }

    #[test]
    fn existing_fields_are_kept_and_f_by_an_untrusted_user_is_named() {
        let (_d, ctx) = ctx(false, false);
        let file = submit(
            &ctx,
            &["-f", "<boss@corp.test>", "-F", "Ignored", "--", "a@relay.test, b@relay.test", "a@relay.test"],
            "From: me@x.test\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m@x.test>\n\nhi\n.\nnot part\n",
        )
        .expect("submitted");
        assert_eq!(file.envelope.sender, "boss@corp.test");
        assert_eq!(file.envelope.recipients.len(), 2, "duplicates removed");
        let t = text(&file);
        assert!(
            t.starts_with("X-Authentication-Warning: host.test: joe set sender to boss@corp.test using -f\r\nFrom: me@x.test\r\nDate: Mon, 1 Jan 2024"),
            "{t}"
        );
        assert!(t.ends_with("\r\n\r\nhi\r\n"), "{t}");
    }

    #[test]
    fn restrict_sender_refuses_f_to_untrusted_users_only() {
        let (_d, ctx) = ctx(false, true);
        let err =
            submit(&ctx, &["-f", "boss@corp.test", "a@relay.test"], "x\n").expect_err("refused");
        assert_eq!(err.code, EX_NOPERM);
        // Their own address is fine.
        submit(&ctx, &["-f", "joe", "a@relay.test"], "x\n").expect("own address");
        let (_d, trusted) = self::ctx(true, true);
        let file =
            submit(&trusted, &["-f", "boss@corp.test", "a@relay.test"], "x\n").expect("trusted");
        assert!(!text(&file).contains("X-Authentication-Warning"));
    }

    #[test]
    fn bad_input_is_refused_with_sysexits_codes() {
        let (_d, ctx) = ctx(true, false);
        assert_eq!(submit(&ctx, &[], "x\n").expect_err("none").code, EX_USAGE);
        assert_eq!(
            submit(&ctx, &["-t"], "Subject: x\n\n")
                .expect_err("none")
                .code,
            EX_USAGE
        );
        assert_eq!(
            submit(&ctx, &["a b@x.test"], "x\n").expect_err("bad").code,
            EX_DATAERR
        );
        assert_eq!(
            submit(&ctx, &["-t"], "To: <a@x\n\n").expect_err("bad").code,
            EX_DATAERR
        );
        assert_eq!(
            submit(&ctx, &["-N", "sometimes", "a@x.test"], "x\n")
                .expect_err("N")
                .code,
            EX_USAGE
        );
        let file = submit(
            &ctx,
            &[
                "-N",
                "failure,delay",
                "-R",
                "hdrs",
                "-V",
                "E1",
                "-f",
                "<>",
                "a@x.test",
            ],
            "\u{e9}\n",
        )
        .expect("dsn");
        assert_eq!(
            file.envelope.recipients[0].notify,
            Some(Notify {
                success: false,
                failure: true,
                delay: true
            })
        );
        assert_eq!(file.envelope.ret, Some(Ret::Hdrs));
        assert_eq!(file.envelope.envid.as_deref(), Some("E1"));
        assert_eq!(file.envelope.sender, "");
        assert_eq!(file.envelope.body, BodyType::EightBitMime);
        assert!(text(&file).contains("From: Joe User <MAILER-DAEMON@host.test>"));
    }

    #[test]
    fn without_a_spool_it_is_a_temporary_failure() {
        let (dir, mut ctx) = ctx(true, false);
        ctx.spool = Spool::new(dir.path().join("nowhere"));
        let err = submit(&ctx, &["a@x.test"], "x\n").expect_err("no spool");
        assert_eq!(err.code, EX_TEMPFAIL);
        assert!(err.text.contains("sluice start"), "{}", err.text);
    }
}
