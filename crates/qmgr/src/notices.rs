//! The notices the queue manager sends: each [`NoticeDue`] that the outcome
//! decided is composed by the notice builder and committed to the spool as
//! a new queue file from `<>` (or from `double-bounce@` to the postmaster).
//!
//! # Must never
//! Decide who gets a notice (`crate::outcome` does), or touch the index:
//! the caller imports the new queue file.

use std::time::{Duration, SystemTime};

use sluice_config::Config;
use sluice_ipc::delivery::Handoff;
use sluice_proto::envelope::{BodyType, Envelope, Notify, Recipient};
use sluice_spool::{Message, QueueFile, QueueId, Source, Spool};

use crate::outcome::{Audience, Input, NoticeDue};
use sluice_cleanup::notice::{self, Kind, Report};

/// Who notices come from and go to.
pub(crate) struct Notices {
    hostname: String,
    cleanup: sluice_cleanup::Settings,
    postmaster: String,
    lifetime: Duration,
}

impl Notices {
    pub(crate) fn new(config: &Config, hostname: &str) -> Notices {
        let domain = config
            .local_domains
            .iter()
            .find(|d| !d.starts_with('.'))
            .map_or(hostname, String::as_str);
        Notices {
            hostname: hostname.to_owned(),
            cleanup: sluice_cleanup::Settings::from_config(config, hostname),
            postmaster: format!("postmaster@{domain}"),
            lifetime: config.queue.lifetime,
        }
    }

    /// The sender of the postmaster notices.
    pub(crate) fn double_bounce_sender(&self) -> String {
        format!("double-bounce@{}", self.hostname)
    }

    /// Composes one notice about some recipients of `original` and commits
    /// it; returns its queue ID.
    pub(crate) fn queue(
        &self,
        spool: &Spool,
        due: &NoticeDue,
        original: &QueueFile,
        inputs: &[Input],
        now: SystemTime,
    ) -> anyhow::Result<QueueId> {
        let reports: Vec<Report<'_>> = due
            .recipients
            .iter()
            .filter_map(|index| {
                let recipient = original.envelope.recipients.get(*index as usize)?;
                let r = &inputs.iter().find(|i| i.result.index == *index)?.result;
                Some(Report {
                    recipient,
                    status: r.dsn.clone(),
                    diagnostic: Some(r.reply.clone()),
                    remote_mta: r.remote_mta.clone(),
                    last_attempt: Some(now),
                    relayed: r.handoff == Handoff::Relayed,
                })
            })
            .collect();
        let retry_until = (due.kind == Kind::Delay).then(|| original.arrival + self.lifetime);
        let (sender, to, bytes, what) = match due.audience {
            Audience::Postmaster => {
                let bytes = notice::compose_to_postmaster(
                    due.kind,
                    original,
                    &reports,
                    &self.hostname,
                    now,
                    retry_until,
                    &self.postmaster,
                );
                let to = self.postmaster.clone();
                (
                    self.double_bounce_sender(),
                    to,
                    bytes,
                    "postmaster non-delivery",
                )
            }
            Audience::Sender => {
                let bytes = notice::compose(
                    due.kind,
                    original,
                    &reports,
                    &self.hostname,
                    now,
                    retry_until,
                );
                let what = match due.kind {
                    Kind::Failure => "sender non-delivery",
                    Kind::Delay => "sender delay",
                    Kind::Success => "sender delivery status",
                };
                (String::new(), original.envelope.sender.clone(), bytes, what)
            }
        };
        let id = QueueId::generate();
        let smtputf8 = notice::needs_smtputf8(&to, &bytes);
        let envelope = Envelope {
            sender,
            recipients: vec![Recipient {
                address: to,
                notify: Some(Notify::default()),
                orcpt: None,
            }],
            body: if notice::is_8bit(&bytes) {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8,
            ..Envelope::default()
        };
        // Through the one door, as every message: a notice is not
        // filtered again (no step applies to its source).
        let entry = sluice_cleanup::Entry {
            id,
            arrival: SystemTime::now(),
            source: &Source::Notice,
            envelope: &envelope,
        };
        let cleaned = sluice_cleanup::clean(
            &self.cleanup,
            &entry,
            &sluice_cleanup::Submitter::default(),
            &bytes,
        );
        spool.commit(&Message {
            id,
            arrival: entry.arrival,
            source: entry.source,
            envelope: &envelope,
            content: &cleaned.pieces(),
        })?;
        log::info!(
            "{}",
            sluice_log::line::notification(&original.id.to_string(), what, &id.to_string())
        );
        Ok(id)
    }
}
