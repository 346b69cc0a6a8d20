//! Delivery status notifications: the bytes of the message that tells a
//! sender what became of their mail (RFC 3464 inside an RFC 6522
//! `multipart/report`, honouring the RFC 3461 NOTIFY and RET parameters).
//!
//! Pure code: a queue file, per-recipient reports and the time come in, one
//! complete message (CRLF line ends) goes out. The caller queues it from the
//! null sender `<>`, and when it contains 8-bit bytes ([`is_8bit`]) with
//! `BODY=8BITMIME`.
//!
//! # Must never
//! Decide who is due a notice (the queue manager's outcome does), let text from a remote reply start a header line or a MIME
//! boundary, or read the clock.
//!
//! # Security
//! No privilege and no IO. Hostile inputs: remote replies and host names
//! (`Report::diagnostic`, `Report::remote_mta`), ENVID and ORCPT values,
//! addresses, and the whole original content. Field values are reduced to
//! one line of printable ASCII and folded; the boundary is chosen so that it
//! occurs nowhere in the generated parts or the returned content.
//!
//! # Errors
//! None: every input yields a message.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::date;
use sluice_proto::envelope::{BodyType, Envelope, Recipient, Ret};
use sluice_spool::QueueFile;

/// Above this many bytes of original content, a failure notice without RET
/// returns only the header section (Postfix's default is also a cap).
pub const RETURN_LIMIT: usize = 64 * 1024;

/// Longest value (in characters) kept for one field, after cleaning.
const VALUE_LIMIT: usize = 1000;

/// Fold header and status fields at this width where a space allows it.
const FOLD_WIDTH: usize = 78;

/// Wrap the human-readable part at this width.
const TEXT_WIDTH: usize = 76;

/// The event a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Delivery failed for good (bounced, or expired in the queue).
    Failure,
    /// Delivery is late and still being retried (a warning).
    Delay,
    /// Delivery succeeded (only on NOTIFY=SUCCESS).
    Success,
}

impl Kind {
    /// The RFC 3464 `Action:` value.
    fn action(self) -> &'static str {
        match self {
            Kind::Failure => "failed",
            Kind::Delay => "delayed",
            Kind::Success => "delivered",
        }
    }

    /// The status used when the caller's is not an RFC 3463 code.
    fn default_status(self) -> &'static str {
        match self {
            Kind::Failure => "5.0.0",
            Kind::Delay => "4.0.0",
            Kind::Success => "2.0.0",
        }
    }

    /// A short tag for the Message-ID.
    fn tag(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::Delay => "delay",
            Kind::Success => "success",
        }
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The recipient, from the queue file's envelope.
    pub recipient: &'a Recipient,
    /// Enhanced status code (RFC 3463), e.g. "5.1.1".
    pub status: String,
    /// The remote reply (or a local reason), e.g.
    /// "550 5.1.1 <x@y>: user unknown".
    pub diagnostic: Option<String>,
    /// Host name of the remote MTA, if one was talked to.
    pub remote_mta: Option<String>,
    /// When delivery was last tried.
    pub last_attempt: Option<SystemTime>,
    /// For a success report: relayed to a next hop that sends no reports
    /// (`Action: relayed`, RFC 3464 §2.3.3), not delivered.
    pub relayed: bool,
}

/// The whole notice to the original sender (headers and MIME body, CRLF
/// line ends), reporting every recipient of `reports` (the queue manager's
/// outcome decides which are due a notice: `crate::outcome`).
pub fn compose(
    kind: Kind,
    original: &QueueFile,
    reports: &[Report<'_>],
    hostname: &str,
    now: SystemTime,
    will_retry_until: Option<SystemTime>,
) -> Vec<u8> {
    let all: Vec<&Report<'_>> = reports.iter().collect();
    let notice = Notice {
        kind,
        original,
        reports: &all,
        hostname: &clean_hostname(hostname),
        now,
        will_retry_until,
    };
    notice.render(&Audience::Sender(&original.envelope.sender))
}

/// A notice to the postmaster in the same format, for a message whose own
/// notices cannot reach anyone (a double bounce; the caller decides when).
/// Reports every recipient in `reports`, whatever its NOTIFY, and is made
/// even when the original sender is `<>`. A `postmaster` without `@` is
/// qualified with `hostname`.
pub fn compose_to_postmaster(
    kind: Kind,
    original: &QueueFile,
    reports: &[Report<'_>],
    hostname: &str,
    now: SystemTime,
    will_retry_until: Option<SystemTime>,
    postmaster: &str,
) -> Vec<u8> {
    let hostname = clean_hostname(hostname);
    let all: Vec<&Report<'_>> = reports.iter().collect();
    let postmaster = if postmaster.contains('@') {
        postmaster.to_owned()
    } else {
        format!("{postmaster}@{hostname}")
    };
    let notice = Notice {
        kind,
        original,
        reports: &all,
        hostname: &hostname,
        now,
        will_retry_until,
    };
    notice.render(&Audience::Postmaster(&postmaster))
}

/// Whether a composed notice has bytes above 127, so that it must be sent
/// with `BODY=8BITMIME`.
pub fn is_8bit(message: &[u8]) -> bool {
    !message.is_ascii()
}

/// Whether a notice to `to` must be sent with `SMTPUTF8` (RFC 6531 §3.4):
/// its recipient or its header section is not ASCII. Toward a next hop
/// without SMTPUTF8 it then fails (`5.6.7`, RFC 6531 §3.2) and, being from
/// `<>`, goes to the postmaster, never back and forth.
pub fn needs_smtputf8(to: &str, message: &[u8]) -> bool {
    !to.is_ascii() || !header_section(message).is_ascii()
}

/// Who the notice is for.
enum Audience<'a> {
    /// The original envelope sender (never empty here).
    Sender(&'a str),
    /// The postmaster, for a double bounce or a copy.
    Postmaster(&'a str),
}

/// Everything one notice is made from.
struct Notice<'n, 'r> {
    kind: Kind,
    original: &'n QueueFile,
    reports: &'n [&'n Report<'r>],
    hostname: &'n str,
    now: SystemTime,
    will_retry_until: Option<SystemTime>,
}

/// How much of the original goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Returned {
    /// The header section only (`text/rfc822-headers`).
    Headers,
    /// The whole message (`message/rfc822`).
    Full,
}

impl Notice<'_, '_> {
    fn render(&self, audience: &Audience<'_>) -> Vec<u8> {
        let text = self.text_part(audience);
        let status = self.status_part();
        let status_type = if self.is_global() {
            "message/global-delivery-status"
        } else {
            "message/delivery-status"
        };
        // A header section in UTF-8 travels as RFC 6532's message/global
        // (RFC 6533 §6.3: message/global-headers for headers alone).
        let global_header = !header_section(&self.original.content).is_ascii();
        let returned = returned_part(self.kind, &self.original.envelope, &self.original.content);
        let (returned_type, returned_description, returned_body) = match returned {
            Returned::Full => (
                if global_header {
                    "message/global"
                } else {
                    "message/rfc822"
                },
                match self.kind {
                    Kind::Failure => "Undelivered Message",
                    Kind::Delay | Kind::Success => "Message",
                },
                to_crlf(&self.original.content),
            ),
            Returned::Headers => (
                if global_header {
                    "message/global-headers"
                } else {
                    "text/rfc822-headers"
                },
                match self.kind {
                    Kind::Failure => "Undelivered Message Headers",
                    Kind::Delay => "Delayed Message Headers",
                    Kind::Success => "Message Headers",
                },
                to_crlf(header_section(&self.original.content)),
            ),
        };
        let boundary = choose_boundary(
            &self.original.id.to_string(),
            &[text.as_bytes(), status.as_bytes(), &returned_body],
        );
        let text_8bit = !text.is_ascii();
        let returned_8bit = !returned_body.is_ascii();

        let mut out = Vec::with_capacity(returned_body.len() + text.len() + status.len() + 1024);
        let push = |out: &mut Vec<u8>, line: &str| {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        };

        // The message header.
        push(
            &mut out,
            &format!(
                "From: MAILER-DAEMON@{} (Mail Delivery System)",
                self.hostname
            ),
        );
        let (to, subject) = match audience {
            Audience::Sender(sender) => (*sender, self.subject()),
            Audience::Postmaster(postmaster) => (*postmaster, self.postmaster_subject()),
        };
        out.extend_from_slice(fold_field("To", &format!("<{}>", clean_line(to, false))).as_bytes());
        push(&mut out, &format!("Subject: {subject}"));
        push(&mut out, &format!("Date: {}", date::rfc5322(self.now)));
        push(
            &mut out,
            &format!("Message-ID: {}", self.message_id(audience)),
        );
        push(&mut out, "Auto-Submitted: auto-replied");
        push(&mut out, "MIME-Version: 1.0");
        push(
            &mut out,
            "Content-Type: multipart/report; report-type=delivery-status;",
        );
        push(&mut out, &format!("\tboundary=\"{boundary}\""));
        if text_8bit || returned_8bit || !status.is_ascii() {
            push(&mut out, "Content-Transfer-Encoding: 8bit");
        }
        push(&mut out, "");
        push(&mut out, "This is a MIME-encapsulated message.");
        push(&mut out, "");

        // Part 1: for people.
        push(&mut out, &format!("--{boundary}"));
        push(&mut out, "Content-Description: Notification");
        if text_8bit {
            push(&mut out, "Content-Type: text/plain; charset=utf-8");
            push(&mut out, "Content-Transfer-Encoding: 8bit");
        } else {
            push(&mut out, "Content-Type: text/plain; charset=us-ascii");
        }
        push(&mut out, "");
        out.extend_from_slice(text.as_bytes());
        push(&mut out, "");

        // Part 2: for programs.
        push(&mut out, &format!("--{boundary}"));
        push(&mut out, "Content-Description: Delivery report");
        push(&mut out, &format!("Content-Type: {status_type}"));
        if !status.is_ascii() {
            push(&mut out, "Content-Transfer-Encoding: 8bit");
        }
        push(&mut out, "");
        out.extend_from_slice(status.as_bytes());
        push(&mut out, "");

        // Part 3: the original, or its header section.
        push(&mut out, &format!("--{boundary}"));
        push(
            &mut out,
            &format!("Content-Description: {returned_description}"),
        );
        push(&mut out, &format!("Content-Type: {returned_type}"));
        if returned_8bit {
            push(&mut out, "Content-Transfer-Encoding: 8bit");
        }
        push(&mut out, "");
        out.extend_from_slice(&returned_body);
        push(&mut out, "");
        push(&mut out, &format!("--{boundary}--"));
        out
    }

    fn subject(&self) -> &'static str {
        match self.kind {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
            Kind::Success => "Successful Mail Delivery Report",
        }
    }

    fn postmaster_subject(&self) -> &'static str {
        match self.kind {
            Kind::Failure => "Postmaster Copy: Undelivered Mail",
            Kind::Delay => "Postmaster Warning: Delayed Mail",
            Kind::Success => "Postmaster Copy: Successful Mail Delivery Report",
        }
    }

    /// Unique per queue ID, kind, audience and time.
    fn message_id(&self, audience: &Audience<'_>) -> String {
        let micros = self
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let who = match audience {
            Audience::Sender(_) => "",
            Audience::Postmaster(_) => ".postmaster",
        };
        format!(
            "<{micros}.{}.{}{who}@{}>",
            self.kind.tag(),
            self.original.id,
            self.hostname
        )
    }

    /// The human-readable explanation, CRLF line ends, ending in CRLF.
    fn text_part(&self, audience: &Audience<'_>) -> String {
        let mut paragraphs = vec![format!(
            "This is the mail system at host {}.",
            self.hostname
        )];
        if let Audience::Postmaster(_) = audience {
            paragraphs.push(if self.original.envelope.sender.is_empty() {
                "This notice is for the postmaster. The message was sent by the null \
                 sender <> (it is itself a notification), so no notice can go back to \
                 its sender."
                    .to_owned()
            } else {
                format!(
                    "This notice is for the postmaster. The message was sent by <{}>.",
                    clean_line(&self.original.envelope.sender, false)
                )
            });
        }
        paragraphs.push(match self.kind {
            Kind::Failure => "The message could not be delivered to the recipients listed \
                              below, and no further attempts will be made. Each recipient \
                              is followed by the reason the delivery failed."
                .to_owned(),
            Kind::Delay => {
                let until = match self.will_retry_until {
                    Some(t) => format!("until {}", date::rfc5322(t)),
                    None => "for some time".to_owned(),
                };
                format!(
                    "The message has not yet been delivered to the recipients listed \
                     below. Delivery will be retried {until}; there is no need to send it \
                     again. This is only a warning: a further notice follows if delivery \
                     fails for good."
                )
            }
            Kind::Success => "The message was delivered to the recipients listed below, \
                              or relayed for them to a mail system that sends no delivery \
                              reports of its own. This notice is sent because a delivery \
                              report was requested."
                .to_owned(),
        });
        paragraphs.push(format!(
            "For help, contact the postmaster of {} and quote queue ID {}.",
            self.hostname, self.original.id
        ));

        let mut text = String::new();
        for paragraph in &paragraphs {
            text.push_str(&wrap(paragraph, TEXT_WIDTH, ""));
            text.push_str("\r\n");
        }
        for report in self.reports {
            let detail = match (&report.remote_mta, &report.diagnostic) {
                (Some(host), Some(diagnostic)) => format!(
                    "host {} said: {}",
                    clean_line(host, true),
                    clean_line(diagnostic, false)
                ),
                (None, Some(diagnostic)) => clean_line(diagnostic, false),
                (_, None) => format!("{} (status {})", self.action(report), self.status(report)),
            };
            let entry = format!(
                "<{}>: {detail}",
                clean_line(&report.recipient.address, false)
            );
            text.push_str(&wrap(&entry, TEXT_WIDTH, "    "));
            text.push_str("\r\n");
        }
        text
    }

    /// The `message/delivery-status` body, ending in CRLF.
    fn status_part(&self) -> String {
        let envelope = &self.original.envelope;
        let global = self.is_global();
        let mut out = String::new();
        out.push_str(&fold_field(
            "Reporting-MTA",
            &format!("dns; {}", self.hostname),
        ));
        out.push_str(&fold_field(
            "X-Sluice-Queue-ID",
            &self.original.id.to_string(),
        ));
        if let Some(envid) = &envelope.envid {
            out.push_str(&fold_field(
                "Original-Envelope-Id",
                &clean_line(envid, true),
            ));
        }
        out.push_str(&fold_field(
            "Arrival-Date",
            &date::rfc5322(self.original.arrival),
        ));
        for report in self.reports {
            out.push_str("\r\n");
            if let Some(orcpt) = &report.recipient.orcpt {
                out.push_str(&fold_field(
                    "Original-Recipient",
                    &typed_address(orcpt, global),
                ));
            }
            out.push_str(&fold_field(
                "Final-Recipient",
                &typed_address(&format!("rfc822;{}", report.recipient.address), global),
            ));
            out.push_str(&fold_field("Action", self.action(report)));
            out.push_str(&fold_field("Status", &self.status(report)));
            if let Some(host) = &report.remote_mta {
                out.push_str(&fold_field(
                    "Remote-MTA",
                    &format!("dns; {}", clean_line(host, true)),
                ));
            }
            if let Some(diagnostic) = &report.diagnostic {
                out.push_str(&fold_field(
                    "Diagnostic-Code",
                    &format!("smtp; {}", clean_line(diagnostic, true)),
                ));
            }
            if let Some(at) = report.last_attempt {
                out.push_str(&fold_field("Last-Attempt-Date", &date::rfc5322(at)));
            }
            if let (Kind::Delay, Some(until)) = (self.kind, self.will_retry_until) {
                out.push_str(&fold_field("Will-Retry-Until", &date::rfc5322(until)));
            }
        }
        out
    }

    /// The report's `Action:`.
    fn action(&self, report: &Report<'_>) -> &'static str {
        match self.kind {
            Kind::Success if report.relayed => "relayed",
            kind => kind.action(),
        }
    }

    /// Whether an address in the report is not ASCII: the report is then
    /// internationalized (RFC 6533), its status part
    /// `message/global-delivery-status` with UTF-8 addresses as they are.
    fn is_global(&self) -> bool {
        !self.original.envelope.sender.is_ascii()
            || self.reports.iter().any(|r| {
                !r.recipient.address.is_ascii()
                    || r.recipient.orcpt.as_ref().is_some_and(|o| !o.is_ascii())
            })
    }

    /// The report's status if it is an RFC 3463 code, else the kind's default.
    fn status(&self, report: &Report<'_>) -> String {
        if is_status_code(&report.status) {
            report.status.clone()
        } else {
            self.kind.default_status().to_owned()
        }
    }
}

/// What RET and the kind say to return (RFC 3461 4.3): headers only for
/// delay and success notices, for RET=HDRS, for BINARYMIME content (which
/// cannot travel in a `message/rfc822` part), and, without RET, above
/// [`RETURN_LIMIT`]; the whole message otherwise.
fn returned_part(kind: Kind, envelope: &Envelope, content: &[u8]) -> Returned {
    if kind != Kind::Failure || envelope.body == BodyType::BinaryMime {
        return Returned::Headers;
    }
    match envelope.ret {
        Some(Ret::Hdrs) => Returned::Headers,
        Some(Ret::Full) => Returned::Full,
        None if content.len() > RETURN_LIMIT => Returned::Headers,
        None => Returned::Full,
    }
}

/// The header section of `content`: every line before the first empty one
/// (LF or CRLF ends), including the last header line's end; all of it when
/// there is no empty line.
fn header_section(content: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < content.len() {
        let end = content[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |i| start + i + 1);
        let line = &content[start..end];
        if line == b"\n" || line == b"\r\n" {
            return &content[..start];
        }
        start = end;
    }
    content
}

/// `bytes` with every line end (CRLF, bare LF, bare CR) made CRLF, and a
/// final CRLF added when missing (unless empty).
fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A boundary made from the queue ID and a counter that occurs in none of
/// `parts`. Candidates have a fixed-width counter, so each position of the
/// parts can rule out at most one of them and the search ends.
fn choose_boundary(id: &str, parts: &[&[u8]]) -> String {
    let mut n: u64 = 0;
    loop {
        let candidate = format!("=_{id}_{n:08X}");
        if !parts
            .iter()
            .any(|part| contains(part, candidate.as_bytes()))
        {
            return candidate;
        }
        n += 1;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The host name as used in From, Message-ID and Reporting-MTA: letters,
/// digits, `.`, `-` and `_` only.
fn clean_hostname(hostname: &str) -> String {
    let clean: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// One line of text: control characters (CR, LF, TAB, ...) become spaces,
/// runs of spaces become one, the ends are trimmed, and the result is cut to
/// [`VALUE_LIMIT`] characters. With `ascii`, other non-ASCII characters
/// become `?` (DSN fields are US-ASCII).
fn clean_line(value: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(value.len().min(VALUE_LIMIT));
    let mut count = 0;
    for c in value.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else if ascii && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if count == VALUE_LIMIT {
            break;
        }
        out.push(c);
        count += 1;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// `type;address` (ORCPT form) as a DSN address field value: the type and
/// address cleaned; a non-ASCII address becomes the `utf-8` address type of
/// RFC 6533: as it is in a `global` (8-bit) report, else 7-bit with
/// `\x{HEX}` for each character outside its QCHAR set.
fn typed_address(value: &str, global: bool) -> String {
    let (addr_type, address) = value.split_once(';').unwrap_or(("rfc822", value));
    let addr_type = clean_line(addr_type, true);
    let address = clean_line(address, false);
    if address.is_ascii() {
        return format!("{addr_type}; {address}");
    }
    if global {
        return format!("utf-8; {address}");
    }
    let mut encoded = String::with_capacity(address.len() * 2);
    for c in address.chars() {
        // QCHAR: printable ASCII except space, '+', '=' and '\'.
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            encoded.push(c);
        } else {
            encoded.push_str(&format!("\\x{{{:02X}}}", u32::from(c)));
        }
    }
    format!("utf-8; {encoded}")
}

/// `class.subject.detail` with class 2, 4 or 5 and up to three digits in
/// the others (RFC 3463).
fn is_status_code(status: &str) -> bool {
    let mut parts = status.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(status.as_bytes().first(), Some(b'2' | b'4' | b'5'))
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

/// `Name: value` folded at spaces to about [`FOLD_WIDTH`] columns, CRLF
/// ended. `value` must be one line (see [`clean_line`]); a word too long to
/// fit any line is split so that no line passes 998 characters.
fn fold_field(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut column = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let mut rest = word;
        while !rest.is_empty() {
            let take = split_at_chars(rest, 900);
            let (piece, tail) = rest.split_at(take);
            let width = piece.chars().count();
            if column + 1 + width > FOLD_WIDTH && column > name.len() + 1 {
                out.push_str("\r\n");
                column = 0;
            }
            out.push(' ');
            out.push_str(piece);
            column += 1 + width;
            rest = tail;
        }
    }
    out.push_str("\r\n");
    out
}

/// The byte index after at most `max` characters of `s`.
fn split_at_chars(s: &str, max: usize) -> usize {
    s.char_indices().nth(max).map_or(s.len(), |(i, _)| i)
}

/// `text` wrapped at spaces to `width` columns, continuation lines starting
/// with `indent`; CRLF after every line.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut column = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let word_width = word.chars().count();
        if column > 0 && column + 1 + word_width > width {
            out.push_str("\r\n");
            out.push_str(indent);
            column = indent.len();
        } else if column > 0 {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word_width;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_proto::envelope::Notify;
    use sluice_spool::Source;
    use std::time::Duration;

    const ID: &str = "SLUICE0TEST000QUEUE1";
    const HOST: &str = "mx1.example.org";

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// 2025-07-01 10:00:00 UTC.
    const NOW: u64 = 1_751_364_000;

    fn rcpt(address: &str, notify: Option<Notify>) -> Recipient {
        Recipient {
            address: address.to_owned(),
            notify,
            orcpt: None,
        }
    }

    fn notify(success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify {
            success,
            failure,
            delay,
        })
    }

    const CONTENT: &[u8] = b"Received: from a by b\r\n\
        From: Alice <alice@example.com>\r\n\
        To: bob@example.net\r\n\
        Subject: lunch\r\n\
        Message-ID: <m1@example.com>\r\n\
        \r\n\
        See you at noon.\r\n\
        BODY-MARKER\r\n";

    fn queue_file(recipients: Vec<Recipient>, content: &[u8]) -> QueueFile {
        QueueFile {
            id: ID.parse().expect("valid queue id"),
            arrival: at(NOW - 3600),
            source: Source::Local {
                uid: 1000,
                user: "alice".to_owned(),
            },
            envelope: Envelope {
                sender: "alice@example.com".to_owned(),
                recipients,
                ..Envelope::default()
            },
            content: content.to_vec(),
        }
    }

    fn report<'a>(recipient: &'a Recipient, status: &str) -> Report<'a> {
        Report {
            recipient,
            status: status.to_owned(),
            diagnostic: Some(format!("550 5.1.1 <{}>: user unknown", recipient.address)),
            remote_mta: Some("mx.example.net".to_owned()),
            last_attempt: Some(at(NOW - 60)),
            relayed: false,
        }
    }

    fn failure(file: &QueueFile, reports: &[Report<'_>]) -> Vec<u8> {
        compose(Kind::Failure, file, reports, HOST, at(NOW), None)
    }

    /// A composed notice taken apart by its boundary.
    #[derive(Debug)]
    struct Parsed {
        header: String,
        boundary: String,
        preamble: Vec<u8>,
        /// (header section, body) of each part.
        parts: Vec<(String, Vec<u8>)>,
        epilogue: Vec<u8>,
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    fn split_header(message: &[u8]) -> (String, Vec<u8>) {
        let end = find(message, b"\r\n\r\n").expect("a header section");
        let header = String::from_utf8(message[..end + 2].to_vec()).expect("utf-8 header");
        (header, message[end + 4..].to_vec())
    }

    /// Unfolds a header section into (name, value) pairs.
    fn fields(section: &str) -> Vec<(String, String)> {
        let unfolded = section.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("name: value");
                (name.to_owned(), value.trim().to_owned())
            })
            .collect()
    }

    fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parse(message: &[u8]) -> Parsed {
        let (header, body) = split_header(message);
        let content_type = field(&fields(&header), "Content-Type")
            .expect("Content-Type")
            .to_owned();
        let boundary = content_type
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a boundary parameter")
            .to_owned();
        let delimiter = format!("\r\n--{boundary}");
        let mut rest = [b"\r\n".as_slice(), &body].concat();
        let mut pieces = Vec::new();
        while let Some(at) = find(&rest, delimiter.as_bytes()) {
            pieces.push(rest[..at].to_vec());
            rest = rest[at + delimiter.len()..].to_vec();
        }
        assert!(rest.starts_with(b"--"), "close delimiter last");
        let epilogue = rest[2..].to_vec();
        let preamble = pieces.remove(0);
        let parts = pieces
            .into_iter()
            .map(|p| {
                assert!(p.starts_with(b"\r\n"), "delimiter line ends with CRLF");
                split_header(&p[2..])
            })
            .collect();
        Parsed {
            header,
            boundary,
            preamble,
            parts,
            epilogue,
        }
    }

    /// The delivery-status groups: per-message first, then per-recipient.
    fn status_groups(parsed: &Parsed) -> Vec<Vec<(String, String)>> {
        let (_, body) = &parsed.parts[1];
        let text = String::from_utf8(body.clone()).expect("ascii status");
        text.split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .map(fields)
            .collect()
    }

    fn part_type(parsed: &Parsed, index: usize) -> String {
        field(&fields(&parsed.parts[index].0), "Content-Type")
            .expect("part Content-Type")
            .to_owned()
    }

    #[test]
    fn structure_is_a_three_part_report() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        let parsed = parse(&dsn);

        assert_eq!(
            field(&fields(&parsed.header), "Content-Type"),
            Some(
                format!(
                    "multipart/report; report-type=delivery-status; boundary=\"{}\"",
                    parsed.boundary
                )
                .as_str()
            )
        );
        assert!(
            parsed.boundary.contains(ID),
            "boundary derives from the queue id"
        );
        assert!(parsed.boundary.len() <= 70, "RFC 2046 boundary length");
        assert_eq!(parsed.parts.len(), 3);
        assert_eq!(part_type(&parsed, 0), "text/plain; charset=us-ascii");
        assert_eq!(part_type(&parsed, 1), "message/delivery-status");
        assert_eq!(part_type(&parsed, 2), "message/rfc822");
        assert!(String::from_utf8_lossy(&parsed.preamble).contains("MIME"));
        assert!(parsed.epilogue.is_empty() || parsed.epilogue == b"\r\n");
        assert!(dsn.ends_with(format!("\r\n--{}--\r\n", parsed.boundary).as_bytes()));
        // Exactly three delimiter lines and one close delimiter.
        let lines: Vec<&[u8]> = dsn.split(|&b| b == b'\n').collect();
        let open = format!("--{}\r", parsed.boundary);
        let close = format!("--{}--\r", parsed.boundary);
        assert_eq!(lines.iter().filter(|l| **l == open.as_bytes()).count(), 3);
        assert_eq!(lines.iter().filter(|l| **l == close.as_bytes()).count(), 1);
        assert!(!is_8bit(&dsn));
    }

    #[test]
    fn every_line_ends_in_crlf_even_for_lf_content() {
        let r = rcpt("bob@example.net", None);
        let lf = b"Subject: unix\nFrom: a@b\n\nline one\nline two\rthree";
        let file = queue_file(vec![r.clone()], lf);
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        for (i, &b) in dsn.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(dsn.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(dsn.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        let parsed = parse(&dsn);
        assert_eq!(
            parsed.parts[2].1,
            b"Subject: unix\r\nFrom: a@b\r\n\r\nline one\r\nline two\r\nthree\r\n"
        );
    }

    #[test]
    fn message_header_fields() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        let parsed = parse(&dsn);
        let f = fields(&parsed.header);
        assert_eq!(
            field(&f, "From"),
            Some("MAILER-DAEMON@mx1.example.org (Mail Delivery System)")
        );
        assert_eq!(field(&f, "To"), Some("<alice@example.com>"));
        assert_eq!(
            field(&f, "Subject"),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(field(&f, "Date"), Some("Tue, 01 Jul 2025 10:00:00 +0000"));
        assert_eq!(field(&f, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(field(&f, "MIME-Version"), Some("1.0"));
        let message_id = field(&f, "Message-ID").expect("Message-ID");
        assert!(message_id.starts_with('<') && message_id.ends_with("@mx1.example.org>"));
        assert!(message_id.contains(ID));
        assert!(field(&f, "Content-Transfer-Encoding").is_none());
    }

    #[test]
    fn message_ids_differ_by_kind_time_and_audience() {
        let r = rcpt("bob@example.net", notify(true, true, true));
        let file = queue_file(vec![r.clone()], CONTENT);
        let reports = [report(&r, "5.1.1")];
        let id_of = |dsn: Vec<u8>| {
            let parsed = parse(&dsn);
            field(&fields(&parsed.header), "Message-ID")
                .expect("Message-ID")
                .to_owned()
        };
        let mut ids = vec![
            id_of(failure(&file, &reports)),
            id_of(compose(Kind::Delay, &file, &reports, HOST, at(NOW), None)),
            id_of(compose(Kind::Success, &file, &reports, HOST, at(NOW), None)),
            id_of(compose(
                Kind::Failure,
                &file,
                &reports,
                HOST,
                at(NOW + 1),
                None,
            )),
            id_of(compose_to_postmaster(
                Kind::Failure,
                &file,
                &reports,
                HOST,
                at(NOW),
                None,
                "postmaster",
            )),
        ];
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
    }

    #[test]
    fn delivery_status_fields() {
        let mut r = rcpt("bob@example.net", None);
        r.orcpt = Some("rfc822;Bob@Example.NET".to_owned());
        let plain = rcpt("carol@example.net", None);
        let mut file = queue_file(vec![r.clone(), plain.clone()], CONTENT);
        file.envelope.envid = Some("QQ314159".to_owned());
        let reports = [
            report(&r, "5.1.1"),
            Report {
                recipient: &plain,
                status: "5.4.4".to_owned(),
                diagnostic: None,
                remote_mta: None,
                last_attempt: None,
                relayed: false,
            },
        ];
        let parsed = parse(&failure(&file, &reports));
        let groups = status_groups(&parsed);
        assert_eq!(groups.len(), 3);
        assert_eq!(
            groups[0],
            [
                ("Reporting-MTA", "dns; mx1.example.org"),
                ("X-Sluice-Queue-ID", ID),
                ("Original-Envelope-Id", "QQ314159"),
                ("Arrival-Date", "Tue, 01 Jul 2025 09:00:00 +0000"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(
            groups[1],
            [
                ("Original-Recipient", "rfc822; Bob@Example.NET"),
                ("Final-Recipient", "rfc822; bob@example.net"),
                ("Action", "failed"),
                ("Status", "5.1.1"),
                ("Remote-MTA", "dns; mx.example.net"),
                (
                    "Diagnostic-Code",
                    "smtp; 550 5.1.1 <bob@example.net>: user unknown"
                ),
                ("Last-Attempt-Date", "Tue, 01 Jul 2025 09:59:00 +0000"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(
            groups[2],
            [
                ("Final-Recipient", "rfc822; carol@example.net"),
                ("Action", "failed"),
                ("Status", "5.4.4"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        // Without ENVID there is no Original-Envelope-Id.
        file.envelope.envid = None;
        let parsed = parse(&failure(&file, &reports));
        assert!(field(&status_groups(&parsed)[0], "Original-Envelope-Id").is_none());
        // The text part names each recipient with its reason.
        let text = String::from_utf8(parsed.parts[0].1.clone()).expect("text");
        assert!(text.contains("<bob@example.net>: host mx.example.net said: 550 5.1.1"));
        assert!(text.contains("<carol@example.net>: failed (status 5.4.4)"));
        assert!(text.contains(ID));
    }

    #[test]
    fn delay_notice() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let mut rep = report(&r, "4.4.1");
        rep.diagnostic = Some("connect to mx.example.net: Connection timed out".to_owned());
        let until = at(NOW + 4 * 86_400);
        let dsn = compose(Kind::Delay, &file, &[rep], HOST, at(NOW), Some(until));
        let parsed = parse(&dsn);
        let f = fields(&parsed.header);
        assert_eq!(
            field(&f, "Subject"),
            Some("Delayed Mail (still being retried)")
        );
        let groups = status_groups(&parsed);
        assert_eq!(field(&groups[1], "Action"), Some("delayed"));
        assert_eq!(field(&groups[1], "Status"), Some("4.4.1"));
        assert_eq!(
            field(&groups[1], "Will-Retry-Until"),
            Some("Sat, 05 Jul 2025 10:00:00 +0000")
        );
        assert_eq!(part_type(&parsed, 2), "text/rfc822-headers");
        assert!(!contains(&parsed.parts[2].1, b"BODY-MARKER"));
        let text = String::from_utf8(parsed.parts[0].1.clone()).expect("text");
        assert!(text
            .replace("\r\n", " ")
            .contains("Sat, 05 Jul 2025 10:00:00 +0000"));

        // A failure never carries Will-Retry-Until.
        let dsn = compose(
            Kind::Failure,
            &file,
            &[report(&r, "5.1.1")],
            HOST,
            at(NOW),
            Some(until),
        );
        assert!(field(&status_groups(&parse(&dsn))[1], "Will-Retry-Until").is_none());
    }

    #[test]
    fn success_notice() {
        let r = rcpt("bob@example.net", notify(true, false, false));
        let file = queue_file(vec![r.clone()], CONTENT);
        let mut rep = report(&r, "2.0.0");
        rep.diagnostic = Some("250 2.0.0 Ok: queued as 12345".to_owned());
        let dsn = compose(Kind::Success, &file, &[rep], HOST, at(NOW), None);
        let parsed = parse(&dsn);
        assert_eq!(
            field(&fields(&parsed.header), "Subject"),
            Some("Successful Mail Delivery Report")
        );
        let groups = status_groups(&parsed);
        assert_eq!(field(&groups[1], "Action"), Some("delivered"));
        assert_eq!(field(&groups[1], "Status"), Some("2.0.0"));
        assert_eq!(part_type(&parsed, 2), "text/rfc822-headers");
    }

    #[test]
    fn bad_status_falls_back_to_the_kinds_default() {
        for (status, kind, expected) in [
            ("550", Kind::Failure, "5.0.0"),
            ("5.1.1\r\nX: y", Kind::Failure, "5.0.0"),
            ("", Kind::Delay, "4.0.0"),
            ("9.9.9", Kind::Success, "2.0.0"),
            ("5.1234.1", Kind::Failure, "5.0.0"),
            ("4.4.1", Kind::Failure, "4.4.1"),
            ("5.7.26", Kind::Failure, "5.7.26"),
        ] {
            let r = rcpt("bob@example.net", notify(true, true, true));
            let file = queue_file(vec![r.clone()], CONTENT);
            let dsn = compose(kind, &file, &[report(&r, status)], HOST, at(NOW), None);
            let groups = status_groups(&parse(&dsn));
            assert_eq!(field(&groups[1], "Status"), Some(expected), "{status:?}");
        }
    }

    #[test]
    fn ret_hdrs_full_and_default() {
        let r = rcpt("bob@example.net", None);
        let reports = [report(&r, "5.1.1")];
        let headers_only = to_crlf(header_section(CONTENT));
        assert!(headers_only.ends_with(b"Message-ID: <m1@example.com>\r\n"));

        let mut file = queue_file(vec![r.clone()], CONTENT);
        file.envelope.ret = Some(Ret::Hdrs);
        let parsed = parse(&failure(&file, &reports));
        assert_eq!(part_type(&parsed, 2), "text/rfc822-headers");
        assert_eq!(parsed.parts[2].1, headers_only);

        file.envelope.ret = Some(Ret::Full);
        let parsed = parse(&failure(&file, &reports));
        assert_eq!(part_type(&parsed, 2), "message/rfc822");
        assert_eq!(parsed.parts[2].1, CONTENT);

        file.envelope.ret = None;
        let parsed = parse(&failure(&file, &reports));
        assert_eq!(part_type(&parsed, 2), "message/rfc822");
        assert_eq!(parsed.parts[2].1, CONTENT);
    }

    #[test]
    fn size_cap_applies_only_without_ret() {
        let r = rcpt("bob@example.net", None);
        let reports = [report(&r, "5.1.1")];
        let fill = |len: usize| {
            let mut content = CONTENT.to_vec();
            while content.len() < len {
                content.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n");
            }
            content.truncate(len - 2);
            content.extend_from_slice(b"\r\n");
            content
        };
        let at_limit = queue_file(vec![r.clone()], &fill(RETURN_LIMIT));
        let parsed = parse(&failure(&at_limit, &reports));
        assert_eq!(part_type(&parsed, 2), "message/rfc822");
        assert_eq!(parsed.parts[2].1.len(), RETURN_LIMIT);

        let mut over = queue_file(vec![r.clone()], &fill(RETURN_LIMIT + 1));
        let parsed = parse(&failure(&over, &reports));
        assert_eq!(part_type(&parsed, 2), "text/rfc822-headers");
        assert_eq!(parsed.parts[2].1, to_crlf(header_section(CONTENT)));

        over.envelope.ret = Some(Ret::Full);
        let parsed = parse(&failure(&over, &reports));
        assert_eq!(part_type(&parsed, 2), "message/rfc822");
        assert_eq!(parsed.parts[2].1.len(), RETURN_LIMIT + 1);
    }

    #[test]
    fn binarymime_content_returns_headers_only() {
        let r = rcpt("bob@example.net", None);
        let mut file = queue_file(vec![r.clone()], CONTENT);
        file.envelope.body = BodyType::BinaryMime;
        file.envelope.ret = Some(Ret::Full);
        let parsed = parse(&failure(&file, &[report(&r, "5.1.1")]));
        assert_eq!(part_type(&parsed, 2), "text/rfc822-headers");
    }

    #[test]
    fn header_section_edges() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n\n"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(header_section(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2");
        assert_eq!(header_section(b""), b"");
    }

    #[test]
    fn header_injection_in_remote_text_is_neutralised() {
        let r = rcpt("bob@example.net", None);
        let mut file = queue_file(vec![r.clone()], CONTENT);
        file.envelope.envid = Some("id\r\nX-Injected-Envid: 1".to_owned());
        let rep = Report {
            recipient: &r,
            status: "5.1.1".to_owned(),
            diagnostic: Some(
                "550-5.1.1 first line\r\nX-Injected: yes\r\n\r\nAction: delivered\n\
                 Bcc: victim@example.org\r\n.\r\n--=_fake--\r\n550 5.1.1 last line"
                    .to_owned(),
            ),
            remote_mta: Some("mx.example.net\r\nX-Injected-Mta: 1".to_owned()),
            last_attempt: None,
            relayed: false,
        };
        let dsn = failure(&file, &[rep]);
        let text = String::from_utf8(dsn.clone()).expect("utf-8");
        for line in text.split("\r\n") {
            for bad in ["X-Injected", "Bcc:", "Action: delivered", "--=_fake"] {
                assert!(!line.starts_with(bad), "line {line:?} starts with {bad:?}");
            }
        }
        let parsed = parse(&dsn);
        assert_eq!(parsed.parts.len(), 3);
        let groups = status_groups(&parsed);
        assert_eq!(groups.len(), 2, "no group was split off");
        assert_eq!(field(&groups[1], "Action"), Some("failed"));
        assert_eq!(
            field(&groups[1], "Diagnostic-Code"),
            Some(
                "smtp; 550-5.1.1 first line X-Injected: yes Action: delivered \
                 Bcc: victim@example.org . --=_fake-- 550 5.1.1 last line"
            )
        );
        assert_eq!(
            field(&groups[1], "Remote-MTA"),
            Some("dns; mx.example.net X-Injected-Mta: 1")
        );
        assert_eq!(
            field(&groups[0], "Original-Envelope-Id"),
            Some("id X-Injected-Envid: 1")
        );
    }

    #[test]
    fn boundary_in_the_returned_content_does_not_break_the_structure() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let first = parse(&failure(&file, &[report(&r, "5.1.1")])).boundary;

        let hostile = format!(
            "Subject: trap\r\nContent-Type: multipart/mixed; boundary=\"{first}\"\r\n\r\n\
             --{first}\r\n\r\nfake part\r\n--{first}--\r\n"
        );
        let file = queue_file(vec![r.clone()], hostile.as_bytes());
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        let parsed = parse(&dsn);
        assert_ne!(parsed.boundary, first);
        assert!(!contains(hostile.as_bytes(), parsed.boundary.as_bytes()));
        assert_eq!(parsed.parts.len(), 3);
        assert_eq!(parsed.parts[2].1, hostile.as_bytes());

        // The same holds for a boundary planted in the remote reply.
        let mut rep = report(&r, "5.1.1");
        rep.diagnostic = Some(format!("550 {first} --{first}--"));
        let file = queue_file(vec![r.clone()], CONTENT);
        let parsed = parse(&failure(&file, &[rep]));
        assert_ne!(parsed.boundary, first);
        assert_eq!(parsed.parts.len(), 3);
    }

    #[test]
    fn choose_boundary_skips_every_candidate_present() {
        let taken: String = (0..5).map(|n| format!("=_{ID}_{n:08X}\n")).collect();
        assert_eq!(
            choose_boundary(ID, &[b"", taken.as_bytes()]),
            format!("=_{ID}_00000005")
        );
    }

    #[test]
    fn long_values_are_folded() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let mut rep = report(&r, "5.1.1");
        let words = "reason ".repeat(100);
        let long_word = "x".repeat(2000);
        rep.diagnostic = Some(format!("550 5.7.1 {words}{long_word}"));
        let dsn = failure(&file, &[rep]);
        let parsed = parse(&dsn);
        let status = String::from_utf8(parsed.parts[1].1.clone()).expect("ascii");
        for line in status.split("\r\n") {
            assert!(line.len() <= 998, "line of {}", line.len());
            if !line.contains("xxx") {
                assert!(line.len() <= FOLD_WIDTH, "{line:?}");
            }
        }
        let diagnostic = field(&status_groups(&parsed)[1], "Diagnostic-Code")
            .expect("Diagnostic-Code")
            .to_owned();
        // Cut to VALUE_LIMIT characters of reply.
        assert!(diagnostic.starts_with("smtp; 550 5.7.1 reason reason"));
        assert!(diagnostic.len() <= "smtp; ".len() + VALUE_LIMIT + 2);
        for line in String::from_utf8(parsed.parts[0].1.clone())
            .expect("text")
            .split("\r\n")
        {
            assert!(line.len() <= 998);
        }
    }

    #[test]
    fn non_ascii_addresses_make_an_internationalized_report() {
        let r = Recipient {
            orcpt: Some("rfc822;J\u{f6}rg@\u{4f8b}.example".to_owned()),
            ..rcpt("jos\u{e9}+x@\u{4f8b}.example", None)
        };
        let mut file = queue_file(vec![r.clone()], CONTENT);
        file.envelope.sender = "\u{e9}l\u{e8}ve@example.fr".to_owned();
        file.envelope.smtputf8 = true;
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        assert!(is_8bit(&dsn));
        assert!(needs_smtputf8(&file.envelope.sender, &dsn));
        let parsed = parse(&dsn);
        assert_eq!(
            field(&fields(&parsed.header), "To"),
            Some("<\u{e9}l\u{e8}ve@example.fr>")
        );
        // RFC 6533: the status part is message/global-delivery-status and
        // names UTF-8 addresses as they are.
        assert_eq!(part_type(&parsed, 1), "message/global-delivery-status");
        assert_eq!(
            field(&fields(&parsed.parts[1].0), "Content-Transfer-Encoding"),
            Some("8bit")
        );
        let groups = status_groups(&parsed);
        assert_eq!(
            field(&groups[1], "Final-Recipient"),
            Some("utf-8; jos\u{e9}+x@\u{4f8b}.example")
        );
        assert_eq!(
            field(&groups[1], "Original-Recipient"),
            Some("utf-8; J\u{f6}rg@\u{4f8b}.example")
        );
        assert_eq!(part_type(&parsed, 0), "text/plain; charset=utf-8");
        assert_eq!(
            field(&fields(&parsed.header), "Content-Transfer-Encoding"),
            Some("8bit")
        );
        // ASCII addresses only: the classic 7-bit report, and no SMTPUTF8.
        let ascii = rcpt("bob@example.net", None);
        let file = queue_file(vec![ascii.clone()], CONTENT);
        let dsn = failure(&file, &[report(&ascii, "5.1.1")]);
        let parsed = parse(&dsn);
        assert_eq!(part_type(&parsed, 1), "message/delivery-status");
        assert!(parsed.parts[1].1.is_ascii());
        assert!(!needs_smtputf8(&file.envelope.sender, &dsn));
        // The 7-bit form of a UTF-8 address, for a report that must stay
        // 7-bit.
        assert_eq!(
            typed_address("rfc822;jos\u{e9}+x@\u{4f8b}.example", false),
            "utf-8; jos\\x{E9}\\x{2B}x@\\x{4F8B}.example"
        );
    }

    #[test]
    fn a_utf8_header_section_returns_as_message_global() {
        let r = rcpt("bob@example.net", None);
        let content = "Subject: gr\u{fc}\u{df}e\r\nFrom: a@b\r\n\r\nbody\r\n".as_bytes();
        let mut file = queue_file(vec![r.clone()], content);
        let parsed = parse(&failure(&file, &[report(&r, "5.1.1")]));
        assert_eq!(part_type(&parsed, 2), "message/global");
        file.envelope.ret = Some(Ret::Hdrs);
        let parsed = parse(&failure(&file, &[report(&r, "5.1.1")]));
        assert_eq!(part_type(&parsed, 2), "message/global-headers");
    }

    #[test]
    fn a_relayed_recipient_is_reported_as_relayed() {
        let a = rcpt("a@example.net", None);
        let b = rcpt("b@example.net", None);
        let file = queue_file(vec![a.clone(), b.clone()], CONTENT);
        let reports = [
            Report {
                relayed: true,
                ..report(&a, "2.0.0")
            },
            report(&b, "2.0.0"),
        ];
        let dsn = compose(Kind::Success, &file, &reports, HOST, at(NOW), None);
        let groups = status_groups(&parse(&dsn));
        assert_eq!(field(&groups[1], "Action"), Some("relayed"));
        assert_eq!(field(&groups[2], "Action"), Some("delivered"));
    }

    #[test]
    fn eight_bit_content_is_labelled() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(
            vec![r.clone()],
            "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes(),
        );
        let dsn = failure(&file, &[report(&r, "5.1.1")]);
        let parsed = parse(&dsn);
        assert_eq!(
            field(&fields(&parsed.parts[2].0), "Content-Transfer-Encoding"),
            Some("8bit")
        );
        assert_eq!(
            field(&fields(&parsed.header), "Content-Transfer-Encoding"),
            Some("8bit")
        );
        assert_eq!(part_type(&parsed, 0), "text/plain; charset=us-ascii");
        assert!(is_8bit(&dsn));
    }

    #[test]
    fn postmaster_notice_for_a_null_sender() {
        let r = rcpt("alice@example.com", notify(false, false, false));
        let mut file = queue_file(vec![r.clone()], CONTENT);
        file.envelope.sender = String::new();
        let reports = [report(&r, "5.1.1")];
        let dsn = compose_to_postmaster(
            Kind::Failure,
            &file,
            &reports,
            HOST,
            at(NOW),
            None,
            "postmaster",
        );
        let parsed = parse(&dsn);
        let f = fields(&parsed.header);
        assert_eq!(field(&f, "To"), Some("<postmaster@mx1.example.org>"));
        assert_eq!(
            field(&f, "Subject"),
            Some("Postmaster Copy: Undelivered Mail")
        );
        assert_eq!(parsed.parts.len(), 3);
        let groups = status_groups(&parsed);
        assert_eq!(groups.len(), 2, "reported despite NOTIFY=NEVER");
        assert_eq!(
            field(&groups[1], "Final-Recipient"),
            Some("rfc822; alice@example.com")
        );
        let text = String::from_utf8(parsed.parts[0].1.clone()).expect("text");
        assert!(text.replace("\r\n", " ").contains("null sender <>"));

        let dsn = compose_to_postmaster(
            Kind::Delay,
            &file,
            &reports,
            HOST,
            at(NOW),
            None,
            "hostmaster@example.org",
        );
        let f = fields(&parse(&dsn).header);
        assert_eq!(field(&f, "To"), Some("<hostmaster@example.org>"));
        assert_eq!(
            field(&f, "Subject"),
            Some("Postmaster Warning: Delayed Mail")
        );
    }

    #[test]
    fn hostile_hostname_is_cleaned() {
        let r = rcpt("bob@example.net", None);
        let file = queue_file(vec![r.clone()], CONTENT);
        let dsn = compose(
            Kind::Failure,
            &file,
            &[report(&r, "5.1.1")],
            "mx1.example.org\r\nBcc: x@y",
            at(NOW),
            None,
        );
        let parsed = parse(&dsn);
        assert_eq!(
            field(&fields(&parsed.header), "From"),
            Some("MAILER-DAEMON@mx1.example.orgBccxy (Mail Delivery System)")
        );
        assert!(field(&fields(&parsed.header), "Bcc").is_none());
        assert_eq!(clean_hostname(" \r\n"), "localhost");
    }

    #[test]
    fn python_email_package_parses_the_notice() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let mut r = rcpt("bob@example.net", None);
        r.orcpt = Some("rfc822;bob@example.net".to_owned());
        let c = rcpt("carol@example.net", None);
        let mut file = queue_file(vec![r.clone(), c.clone()], CONTENT);
        file.envelope.envid = Some("ENV1".to_owned());
        let mut long = report(&c, "5.2.2");
        long.diagnostic = Some(format!("552 5.2.2 mailbox full {}", "word ".repeat(40)));
        let dsn = failure(&file, &[report(&r, "5.1.1"), long]);

        let script = r#"
import sys, email
m = email.message_from_bytes(sys.stdin.buffer.read())
print(m.get_content_type(), m.get_param('report-type'), m.is_multipart())
parts = m.get_payload()
print(' '.join(p.get_content_type() for p in parts))
blocks = parts[1].get_payload()
print(len(blocks), blocks[0]['Reporting-MTA'], blocks[0]['Original-Envelope-Id'])
for b in blocks[1:]:
    print('|'.join(' '.join(str(b[k]).split()) for k in
        ('Final-Recipient', 'Action', 'Status', 'Diagnostic-Code')))
inner = parts[2].get_payload(0)
print(inner['Subject'], 'BODY-MARKER' in inner.get_payload())
print(sum(len(p.defects) for p in m.walk()))
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&dsn)
            .expect("write to python3");
        let output = child.wait_with_output().expect("python3 finishes");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "python3 failed: {stderr}");
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines,
            [
                "multipart/report delivery-status True",
                "text/plain message/delivery-status message/rfc822",
                "3 dns; mx1.example.org ENV1",
                "rfc822; bob@example.net|failed|5.1.1|smtp; 550 5.1.1 <bob@example.net>: user unknown",
                &format!(
                    "rfc822; carol@example.net|failed|5.2.2|smtp; 552 5.2.2 mailbox full{}",
                    " word".repeat(40)
                ),
                "lunch True",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn any_remote_text_keeps_the_structure(
            diagnostic in any::<String>(),
            remote in any::<String>(),
            envid in any::<String>(),
            status in any::<String>(),
            content in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let r = rcpt("bob@example.net", None);
            let mut file = queue_file(vec![r.clone()], &content);
            file.envelope.envid = Some(envid);
            let rep = Report {
                recipient: &r,
                status,
                diagnostic: Some(diagnostic),
                remote_mta: Some(remote),
                last_attempt: Some(at(NOW)),
                relayed: false,
            };
            let dsn = failure(&file, &[rep]);
            let parsed = parse(&dsn);
            prop_assert_eq!(parsed.parts.len(), 3);
            prop_assert!(!contains(&content, parsed.boundary.as_bytes()));
            let groups = status_groups(&parsed);
            prop_assert_eq!(groups.len(), 2);
            let names: Vec<&str> = groups[1].iter().map(|(n, _)| n.as_str()).collect();
            prop_assert_eq!(
                names,
                ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
                 "Last-Attempt-Date"]
            );
            prop_assert!(parsed.parts[1].1.is_ascii());
            for line in parsed.parts[1].1.split(|&b| b == b'\n') {
                prop_assert!(line.len() <= 999);
            }
        }
    }
}
