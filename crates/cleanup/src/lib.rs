//! Cleanup: the one door into the queue. Everything done to a message as it
//! enters the queue is listed here, in order, whichever program calls
//! (smtpd's commit, pickup, local forwarding, and the notice builder); what
//! applies depends on the message's [`Source`], never on the caller.
//!
//! The steps, in the order they run ([`steps`] says which apply):
//!
//! | step | `smtp` | `local` | `forward` | `notice` |
//! |---|---|---|---|---|
//! | [`Step::HopCount`]: refuse at `hopcount_limit` `Received:` fields ([`check`]) | yes | yes | yes | |
//! | [`Step::CanonicalContent`]: CRLF line ends, no NUL (not `BINARYMIME`; refused by [`check`] under `nul_bytes: "reject"`) | yes | yes | | |
//! | [`Step::AddMissingHeaders`]: `From:`, `Date:`, `Message-ID:` | | yes | | |
//! | [`Step::RemoveBcc`]: `Bcc:`, `Resent-Bcc:` | | yes | | |
//! | [`Step::AuthenticationWarning`]: a sender chosen by an untrusted user | | yes | | |
//! | [`Step::Received`]: the trace header | yes | yes | | |
//! | [`Step::DeliveredTo`]: the local address forwarded for | | | yes | |
//!
//! Address rewriting (canonical maps, virtual aliases, masquerading), header
//! checks and the edits milters ask for plug in after the header steps, as
//! edits of the one [`Header`] vocabulary (remove, append, prepend), for
//! `smtp` and `local` only: a forward or a notice is not filtered again. The
//! notice headers are built by the notice builder, which calls [`clean`]
//! with [`Source::Notice`] like every other caller.
//!
//! # Must never
//! Copy hostile text into a header unfiltered (every value passes
//! [`header_safe`] or the Received header's own filter), copy a message
//! whose header it does not change (an SMTP message's content is only
//! borrowed), or do IO: bytes and facts in, bytes out.
//!
//! # Security
//! The content and the envelope are hostile (any SMTP client, any local
//! user). The facts about a local submitter ([`Submitter`]) come from the
//! caller, which takes them from the kernel (the file owner, the real uid),
//! never from the message.
//!
//! # Errors
//! None: every input has a safe result.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::borrow::Cow;
use std::time::SystemTime;

use sluice_proto::envelope::{BodyType, Envelope};
use sluice_spool::{QueueId, Source};

mod content;
pub mod date;
mod header;
mod local;
pub mod notice;
mod received;

pub use header::{header_safe, Header};
pub use local::chose_sender;

/// What cleanup needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This host's name (`Received:`, `Message-ID:`, the warning header).
    pub hostname: String,
    /// `hopcount_limit` (0: no limit).
    pub hopcount_limit: usize,
    /// `nul_bytes: "reject"`: refuse content with NUL bytes rather than
    /// strip them.
    pub reject_nul: bool,
}

impl Settings {
    /// From the configuration and this host's name.
    pub fn from_config(config: &sluice_config::Config, hostname: &str) -> Settings {
        Settings {
            hostname: hostname.to_owned(),
            hopcount_limit: config.hopcount_limit,
            reject_nul: config.nul_bytes == sluice_config::NulBytes::Reject,
        }
    }
}

/// Why the door refuses a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It has `hopcount_limit` `Received:` fields or more: a relay loop.
    #[error("too many hops ({0} Received: header fields)")]
    TooManyHops(usize),
    /// It holds NUL bytes and `nul_bytes` is `"reject"`.
    #[error("message content contains NUL bytes")]
    NulBytes,
}

impl Refusal {
    /// The enhanced status code of the refusal.
    pub fn dsn(self) -> &'static str {
        match self {
            Refusal::TooManyHops(_) => "5.4.6",
            Refusal::NulBytes => "5.6.0",
        }
    }
}

/// The first step of the door, the one that may refuse: every caller runs
/// it before [`clean`] and refuses the message (at end of DATA, to
/// `corrupt/`, by a bounce or an exit code) when it fails.
pub fn check(settings: &Settings, entry: &Entry<'_>, content: &[u8]) -> Result<(), Refusal> {
    let hops = header::count_fields(content, "Received");
    let counted = steps(entry.source).contains(&Step::HopCount);
    if counted && settings.hopcount_limit > 0 && hops >= settings.hopcount_limit {
        return Err(Refusal::TooManyHops(hops));
    }
    let canonical = steps(entry.source).contains(&Step::CanonicalContent)
        && entry.envelope.body != BodyType::BinaryMime;
    if canonical && settings.reject_nul && content.contains(&0) {
        return Err(Refusal::NulBytes);
    }
    Ok(())
}

/// A message entering the queue: the facts every step may read.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its new queue ID.
    pub id: QueueId,
    /// When it arrived (the `Date:` and `Received:` time).
    pub arrival: SystemTime,
    /// Where it came from: this decides the steps.
    pub source: &'a Source,
    /// Sender, recipients and parameters.
    pub envelope: &'a Envelope,
}

/// What only the caller knows of a local submitter, from the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Submitter<'a> {
    /// Root, or a member of the `sluice` user's group: may choose a sender
    /// without a warning.
    pub trusted: bool,
    /// The full name for a missing `From:` (`-F`, else the passwd gecos).
    pub full_name: Option<&'a str>,
}

/// One thing done to a message on entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Refused at `hopcount_limit` `Received:` fields (issue 9 defect 13);
    /// run by [`check`].
    HopCount,
    /// Bare CR and LF made CRLF, NUL bytes stripped (issue 9 defect 11).
    CanonicalContent,
    /// `From:`, `Date:`, `Message-ID:` added when missing.
    AddMissingHeaders,
    /// `Bcc:` and `Resent-Bcc:` removed.
    RemoveBcc,
    /// `X-Authentication-Warning:` for a sender an untrusted user chose.
    AuthenticationWarning,
    /// The `Received:` trace header prepended.
    Received,
    /// `Delivered-To:` prepended, naming the local address forwarded for.
    DeliveredTo,
}

impl Step {
    /// Does this step edit the header section (rather than only prepend)?
    fn edits_header(self) -> bool {
        matches!(
            self,
            Step::AddMissingHeaders | Step::RemoveBcc | Step::AuthenticationWarning
        )
    }
}

/// The steps that apply to a message from `source`, in order.
pub fn steps(source: &Source) -> &'static [Step] {
    match source {
        Source::Smtp(_) => &[Step::HopCount, Step::CanonicalContent, Step::Received],
        Source::Local { .. } => &[
            Step::HopCount,
            Step::CanonicalContent,
            Step::AddMissingHeaders,
            Step::RemoveBcc,
            Step::AuthenticationWarning,
            Step::Received,
        ],
        Source::Forward { .. } => &[Step::HopCount, Step::DeliveredTo],
        Source::Notice => &[],
    }
}

/// A message as it goes into the queue file: the trace lines, then the
/// content (borrowed when no step changed it).
#[derive(Debug, Clone)]
pub struct Cleaned<'c> {
    /// Header lines prepended (`Received:`, `Delivered-To:`), CRLF ended.
    pub trace: String,
    /// The content, its header fixed when a step did.
    pub content: Cow<'c, [u8]>,
}

impl Cleaned<'_> {
    /// The pieces of the queue file's content, in order (for
    /// `sluice_spool::Message::content`).
    pub fn pieces(&self) -> [&[u8]; 2] {
        [self.trace.as_bytes(), &self.content]
    }
}

/// Runs every step that applies to `entry`'s source over `content`.
/// `who` is needed for a local submission (its default, untrusted and
/// without a full name, is the safe answer).
pub fn clean<'c>(
    settings: &Settings,
    entry: &Entry<'_>,
    who: &Submitter<'_>,
    content: &'c [u8],
) -> Cleaned<'c> {
    let steps = steps(entry.source);
    let content =
        if steps.contains(&Step::CanonicalContent) && entry.envelope.body != BodyType::BinaryMime {
            content::canonical(content)
        } else {
            Cow::Borrowed(content)
        };
    let content = if steps.iter().any(|s| s.edits_header()) {
        let mut header = Header::parse(&content);
        edit_header(settings, entry, who, steps, &mut header);
        Cow::Owned(header.to_bytes())
    } else {
        content
    };
    let mut trace = String::new();
    for step in steps {
        match (step, entry.source) {
            (Step::Received, Source::Smtp(client)) => trace.push_str(&received::smtp(
                &settings.hostname,
                client,
                entry.envelope,
                &entry.id.to_string(),
                &date::rfc5322(entry.arrival),
            )),
            (Step::Received, Source::Local { uid, .. }) => trace.push_str(&received::local(
                &settings.hostname,
                *uid,
                &entry.id.to_string(),
                &date::rfc5322(entry.arrival),
            )),
            (Step::DeliveredTo, Source::Forward { recipient }) => {
                trace.push_str(&format!("Delivered-To: {}\r\n", header_safe(recipient)));
            }
            _ => {}
        }
    }
    Cleaned { trace, content }
}

/// [`check`] and the header steps of a local submission alone, for
/// `sluice-sendmail`, which fixes the header at submission (it knows
/// `-F`); pickup runs them again through [`check`] and [`clean`], and they
/// change nothing the second time.
pub fn fix_local_header(
    settings: &Settings,
    entry: &Entry<'_>,
    who: &Submitter<'_>,
    header: &mut Header,
) -> Result<(), Refusal> {
    check(settings, entry, &header.to_bytes())?;
    edit_header(settings, entry, who, steps(entry.source), header);
    Ok(())
}

fn edit_header(
    settings: &Settings,
    entry: &Entry<'_>,
    who: &Submitter<'_>,
    steps: &[Step],
    header: &mut Header,
) {
    for step in steps {
        match (step, entry.source) {
            (Step::AddMissingHeaders, _) => local::add_missing(settings, entry, who, header),
            (Step::RemoveBcc, _) => local::remove_bcc(header),
            (Step::AuthenticationWarning, Source::Local { user, .. }) => {
                local::warn_chosen_sender(settings, entry, user, who, header);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
