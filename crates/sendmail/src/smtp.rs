//! `-bs`: SMTP on stdin and stdout, as `sendmail -bs` gives programs that
//! prefer to speak SMTP to a pipe. The SMTP grammar is the server session
//! of `sluice_proto::server` (the one smtpd runs), with a local trusted
//! peer; its `Commit` ask is answered by writing a maildrop file.
//!
//! # Must never
//! Answer 250 to a message before its maildrop file is committed (the
//! session only says 250 to [`CommitAnswer::Queued`]), or let the MAIL FROM of
//! an untrusted user pass without the `X-Authentication-Warning:` that
//! `-f` would add.
//!
//! # Security
//! The peer is the invoking user, with no more rights than `-f` and `-t`
//! give. Relaying is allowed (the peer is trusted), as for any local
//! submission.
//!
//! # Errors
//! A failed commit is a `451` to that message; stdin at EOF ends the
//! session.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sluice_proto::server::{
    Ask, BareNewline, CheckAnswer, CommitAnswer, Config, EtrnAnswer, Limits, Output, Peer, Session,
};
use sluice_spool::QueueId;

use crate::submit::Context;
use sluice_cleanup::Header;

/// Runs one SMTP session between `input` and `output`.
pub(crate) fn serve(
    ctx: &Context,
    mut input: impl Read,
    mut output: impl Write,
) -> std::io::Result<()> {
    let config = Config {
        hostname: ctx.hostname.clone(),
        limits: Limits {
            max_message_size: ctx.max_size,
            ..Limits::default()
        },
        // People type at -bs too: a bare LF ends a line.
        bare_newline: BareNewline::Normalize,
        ..Config::default()
    };
    let peer = Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        trusted: true,
        hostname: Some("localhost".into()),
    };
    let mut session = Session::new(Arc::new(config), peer, Instant::now());
    let mut buf = [0u8; 8192];
    loop {
        while let Some(out) = session.poll_output() {
            match out {
                Output::Send(bytes) => {
                    output.write_all(&bytes)?;
                    output.flush()?;
                }
                Output::Ask(Ask::Commit(commit)) => {
                    let answer = match queue(ctx, commit.envelope, &commit.content) {
                        Ok(id) => CommitAnswer::Queued {
                            queue_id: id.to_string(),
                        },
                        Err(e) => {
                            eprintln!("sluice-sendmail: {}", e.text);
                            CommitAnswer::TempFail
                        }
                    };
                    session.handle_commit(answer, Instant::now());
                }
                Output::Ask(Ask::Etrn { .. }) => {
                    session.handle_etrn(EtrnAnswer::Unavailable, Instant::now());
                }
                // Not asked with `checks: false`; nothing to check here.
                Output::Ask(Ask::Check(_)) => {
                    session.handle_check(CheckAnswer::Accept, Instant::now());
                }
                Output::Log(_) => {}
                Output::Close => return Ok(()),
            }
        }
        if session.is_closed() {
            return Ok(());
        }
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        session.handle_input(&buf[..n], Instant::now());
    }
}

/// One message of the session: the MAIL FROM counts as `-f`.
fn queue(
    ctx: &Context,
    mut envelope: sluice_proto::envelope::Envelope,
    content: &[u8],
) -> Result<QueueId, crate::Failure> {
    let chosen = (!envelope.sender.eq_ignore_ascii_case(&ctx.own_address()))
        .then(|| format!("<{}>", envelope.sender));
    envelope.sender = ctx.sender(chosen.as_deref())?;
    let id = QueueId::generate();
    let mut header = Header::parse(content);
    ctx.fix_header(&mut header, &envelope, None, id, SystemTime::now())?;
    let content = header.to_bytes();
    ctx.commit(id, &envelope, &content)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submit::Submitter;
    use sluice_spool::{Area, Spool};

    #[test]
    fn a_message_over_smtp_on_stdin_becomes_a_maildrop_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path().join("spool"));
        spool.create_layout(None).expect("layout");
        let ctx = Context {
            submitter: Submitter {
                uid: 1000,
                user: "joe".into(),
                gecos: None,
                trusted: false,
            },
            hostname: "host.test".into(),
            spool: spool.clone(),
            run_dir: dir.path().join("run"),
            restrict_sender: false,
            hopcount_limit: 50,
            reject_nul: false,
            max_size: 1 << 20,
            verbose: false,
        };
        let input = "EHLO me\r\nMAIL FROM:<other@x.test>\r\nRCPT TO:<a@relay.test>\r\nDATA\r\nSubject: s\r\nBcc: b@x.test\r\n\r\nhi\r\n.\r\nQUIT\r\n";
        let mut output = Vec::new();
        serve(&ctx, input.as_bytes(), &mut output).expect("session");
        let replies = String::from_utf8(output).expect("utf8");
        assert!(replies.starts_with("220 host.test"), "{replies}");
        let id = replies
            .split("queued as ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("a 250 queued as reply");
        assert!(
            replies.trim_end().ends_with("221 2.0.0 Bye") || replies.contains("221"),
            "{replies}"
        );
        let ids = spool.list(Area::Maildrop).expect("list");
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].to_string(), id);
        let file =
            sluice_spool::decode(&std::fs::read(spool.path(Area::Maildrop, ids[0])).expect("read"))
                .expect("decodes");
        assert_eq!(file.envelope.sender, "other@x.test");
        assert_eq!(file.envelope.recipients[0].address, "a@relay.test");
        let text = String::from_utf8(file.content).expect("utf8");
        assert!(
            text.starts_with(
                "X-Authentication-Warning: host.test: joe set sender to other@x.test using -f\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("Bcc"), "{text}");
        assert!(text.contains("\r\nFrom: other@x.test\r\n"), "{text}");
    }
}
