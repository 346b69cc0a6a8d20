//! The notices the queue manager sends: each [`NoticeDue`] that the outcome
//! decided is composed by the notice builder and committed to the spool as
//! a new queue file from `<>` (or from `double-bounce@` to the postmaster).
//!
//! # Must never
//! Decide who gets a notice (`crate::outcome` does), or touch the index:
//! the caller imports the new queue file.

use std::time::{Duration, SystemTime};

use sluice_config::Config;
use sluice_proto::envelope::{BodyType, Envelope, Notify, Recipient};
use sluice_spool::{Message, QueueFile, QueueId, Source, Spool};

use crate::bounce::{self, Kind, Report};
use crate::outcome::{Audience, Input, NoticeDue};

/// Who notices come from and go to.
pub(crate) struct Notices {
    hostname: String,
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
        notice: &NoticeDue,
        original: &QueueFile,
        inputs: &[Input],
        now: SystemTime,
    ) -> anyhow::Result<QueueId> {
        let reports: Vec<Report<'_>> = notice
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
                })
            })
            .collect();
        let retry_until = (notice.kind == Kind::Delay).then(|| original.arrival + self.lifetime);
        let (sender, to, bytes, what) = match notice.audience {
            Audience::Postmaster => {
                let bytes = bounce::compose_to_postmaster(
                    notice.kind,
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
                let bytes = bounce::compose(
                    notice.kind,
                    original,
                    &reports,
                    &self.hostname,
                    now,
                    retry_until,
                );
                let what = match notice.kind {
                    Kind::Failure => "sender non-delivery",
                    Kind::Delay => "sender delay",
                    Kind::Success => "sender delivery status",
                };
                (String::new(), original.envelope.sender.clone(), bytes, what)
            }
        };
        let id = QueueId::generate();
        let envelope = Envelope {
            sender,
            recipients: vec![Recipient {
                address: to,
                notify: Some(Notify::default()),
                orcpt: None,
            }],
            body: if bounce::is_8bit(&bytes) {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            ..Envelope::default()
        };
        let source = Source::Notice;
        spool.commit(&Message {
            id,
            arrival: SystemTime::now(),
            source: &source,
            envelope: &envelope,
            content: &[&bytes],
        })?;
        log::info!(
            "{}",
            sluice_log::line::notification(&original.id.to_string(), what, &id.to_string())
        );
        Ok(id)
    }
}
