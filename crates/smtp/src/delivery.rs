//! One job: read the queue file, check the job against it, find the next
//! hop, deliver, and turn the outcomes into one result and one log line per
//! recipient.
//!
//! # Must never
//! Answer a job with other than exactly one result per job recipient, in
//! the job's order; report a recipient delivered that the server did not
//! accept; or write to the spool (the queue file is only read).
//!
//! # Security
//! The job comes from the queue manager and is checked against the queue
//! file: a recipient whose index or address does not match is deferred,
//! never delivered. Reply text from the server passes
//! `sluice_log::printable` before it is logged or reported.
//!
//! # Errors
//! Every failure (unreadable queue file, bad next hop, network) is a
//! deferral with a reason; none stops the agent.

use std::time::{Duration, Instant, SystemTime};

use sluice_ipc::delivery::{Handoff, Job, JobResult, Outcome, RecipientResult};
use sluice_proto::client::{self, Params, RcptOutcome, Status, Timeouts};
use sluice_proto::envelope::Envelope;
use sluice_proto::reply::Enhanced;
use sluice_spool::{QueueId, Spool};

use crate::connection::{self, local_outcome, Connection};
use crate::route;
use crate::tls;

/// What every job needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The spool to read queue files from.
    pub(crate) spool: Spool,
    /// The EHLO name.
    pub(crate) helo_name: String,
    /// Per-step SMTP timeouts.
    pub(crate) timeouts: Timeouts,
    /// Connect and TLS settings, reuse limit.
    pub(crate) connection: connection::Config,
    /// The `smtp` config section (TLS policies).
    pub(crate) smtp: sluice_config::Smtp,
    /// Name resolution, ports and the loop check for next hops.
    pub(crate) route: route::RouteContext,
}

fn outcome_of(status: Status) -> Outcome {
    match status {
        Status::Delivered => Outcome::Delivered,
        Status::Deferred => Outcome::Deferred,
        Status::Bounced => Outcome::Bounced,
    }
}

/// The result reported for one recipient.
pub(crate) fn recipient_result(
    index: u32,
    outcome: &RcptOutcome,
    remote_mta: Option<&str>,
    handoff: Handoff,
) -> RecipientResult {
    RecipientResult {
        index,
        outcome: outcome_of(outcome.status),
        dsn: outcome.dsn.to_string(),
        reply: sluice_log::printable(&outcome.text(), 512),
        remote_mta: remote_mta.map(str::to_owned),
        handoff,
    }
}

fn deferral(index: u32, dsn: &str, reason: &str) -> RecipientResult {
    RecipientResult {
        index,
        outcome: Outcome::Deferred,
        dsn: dsn.to_owned(),
        reply: sluice_log::printable(reason, 512),
        remote_mta: None,
        handoff: Handoff::Relayed,
    }
}

/// Timing facts for the `delay=` and `delays=` fields.
struct Clock {
    arrival: Option<SystemTime>,
    job_start: SystemTime,
    queue_wait: Duration,
}

impl Clock {
    fn log(
        &self,
        queue_id: &str,
        to: &str,
        relay: &str,
        r: &RecipientResult,
        c: Duration,
        d: Duration,
    ) {
        let since_arrival = self
            .arrival
            .and_then(|a| self.job_start.duration_since(a).ok())
            .unwrap_or_default();
        let before = since_arrival.saturating_sub(self.queue_wait);
        let delays = [
            before.as_secs_f64(),
            self.queue_wait.as_secs_f64(),
            c.as_secs_f64(),
            d.as_secs_f64(),
        ];
        let line = sluice_log::line::delivery(&sluice_log::line::Delivery {
            queue_id,
            to,
            relay,
            delay: delays.iter().sum(),
            delays,
            dsn: &r.dsn,
            status: r.outcome.status_word(),
            reply: &r.reply,
        });
        log::info!("{line}");
    }
}

/// Delivers one job; the result has one entry per job recipient, in order.
/// `cache` is the connection kept open from an earlier job, if any: used
/// when it goes to this job's next hop; the connection this job leaves
/// open, if any, is put there.
pub(crate) fn deliver_job(
    settings: &Settings,
    job: &Job,
    cache: &mut Option<Connection>,
) -> JobResult {
    let mut clock = Clock {
        arrival: None,
        job_start: SystemTime::now(),
        queue_wait: Duration::from_millis(job.queue_wait_ms),
    };
    let started = Instant::now();
    let finish = |results: Vec<RecipientResult>, cache: &Option<Connection>| JobResult {
        job_id: job.job_id,
        recipients: results,
        open_connection: cache.as_ref().map(|c| c.next_hop.clone()),
    };
    let defer_all = |clock: &Clock, dsn: &str, reason: &str| {
        let results: Vec<RecipientResult> = job
            .recipients
            .iter()
            .map(|r| deferral(r.index, dsn, reason))
            .collect();
        for (jr, r) in job.recipients.iter().zip(&results) {
            clock.log(
                &job.queue_id,
                &jr.address,
                "none",
                r,
                started.elapsed(),
                Duration::ZERO,
            );
        }
        results
    };

    let file = match job.queue_id.parse::<QueueId>() {
        Err(e) => {
            return finish(
                defer_all(&clock, "4.3.0", &format!("bad queue ID: {e}")),
                cache,
            )
        }
        Ok(id) => match settings.spool.read(id) {
            Ok(file) => file,
            Err(e) => {
                log::warn!("{}: cannot read queue file: {e}", job.queue_id);
                let reason = format!("cannot read queue file: {e}");
                return finish(defer_all(&clock, "4.3.0", &reason), cache);
            }
        },
    };
    clock.arrival = Some(file.arrival);

    // Each job recipient must be the file's recipient at that index.
    let mut results: Vec<Option<RecipientResult>> = vec![None; job.recipients.len()];
    let mut sending = Vec::new(); // positions in job.recipients
    for (pos, jr) in job.recipients.iter().enumerate() {
        let in_file = usize::try_from(jr.index)
            .ok()
            .and_then(|i| file.envelope.recipients.get(i));
        match in_file {
            Some(r) if r.address == jr.address => sending.push(pos),
            _ => {
                let reason = format!(
                    "recipient #{} <{}> does not match the queue file",
                    jr.index, jr.address
                );
                log::warn!("{}: {reason}", job.queue_id);
                let r = deferral(jr.index, "4.3.0", &reason);
                clock.log(
                    &job.queue_id,
                    &jr.address,
                    "none",
                    &r,
                    Duration::ZERO,
                    Duration::ZERO,
                );
                results[pos] = Some(r);
            }
        }
    }

    if !sending.is_empty() {
        let envelope = Envelope {
            recipients: sending
                .iter()
                .filter_map(|&pos| {
                    let i = usize::try_from(job.recipients[pos].index).ok()?;
                    file.envelope.recipients.get(i).cloned()
                })
                .collect(),
            ..file.envelope.clone()
        };
        let params = Params {
            helo_name: settings.helo_name.clone(),
            envelope,
            message_size: file.content.len() as u64,
            timeouts: settings.timeouts,
            protocol: client::Protocol::Smtp,
            tls: client::Tls::Off,
            keep_open: false,
        };
        let out = &settings.connection;
        // A connection kept open to this next hop needs no routing.
        let reused = cache
            .take()
            .filter(|c| c.next_hop == job.next_hop)
            .and_then(|c| connection::reuse(c, params.clone(), &file.content, out, cache));
        let routed = match reused {
            Some(attempt) => Ok(attempt),
            None => route::plan(&job.next_hop, &settings.route).map(|plan| {
                let target = match &plan {
                    route::Plan::Smtp(hosts) => connection::Target::Smtp(
                        hosts,
                        tls::policy_for(&settings.smtp, &job.next_hop),
                    ),
                    route::Plan::LmtpInet(hosts) => connection::Target::LmtpInet(hosts),
                    route::Plan::LmtpUnix(path) => connection::Target::LmtpUnix(path),
                };
                connection::deliver(target, &job.next_hop, params, &file.content, out, cache)
            }),
        };
        match routed {
            Err(stop) => {
                for &pos in &sending {
                    let jr = &job.recipients[pos];
                    let r = if stop.is_bounce() {
                        RecipientResult {
                            outcome: Outcome::Bounced,
                            ..deferral(jr.index, stop.dsn, &stop.reason)
                        }
                    } else {
                        deferral(jr.index, stop.dsn, &stop.reason)
                    };
                    clock.log(
                        &job.queue_id,
                        &jr.address,
                        "none",
                        &r,
                        started.elapsed(),
                        Duration::ZERO,
                    );
                    results[pos] = Some(r);
                }
            }
            Ok(attempt) => {
                for (k, &pos) in sending.iter().enumerate() {
                    let jr = &job.recipients[pos];
                    let fallback;
                    let outcome = match attempt.outcomes.get(k) {
                        Some(o) => o,
                        None => {
                            let dsn = Enhanced::new(4, 3, 0);
                            fallback = local_outcome(k, client::Status::Deferred, dsn, "no result");
                            &fallback
                        }
                    };
                    let r = recipient_result(
                        jr.index,
                        outcome,
                        attempt.remote_mta.as_deref(),
                        attempt.handoff,
                    );
                    clock.log(
                        &job.queue_id,
                        &jr.address,
                        &attempt.relay,
                        &r,
                        attempt.setup,
                        attempt.transmission,
                    );
                    results[pos] = Some(r);
                }
            }
        }
    }
    finish(
        results
            .into_iter()
            .zip(&job.recipients)
            .map(|(r, jr)| r.unwrap_or_else(|| deferral(jr.index, "4.3.0", "no result")))
            .collect(),
        cache,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::reply::Reply;

    fn remote(status: Status, reply: Reply) -> RcptOutcome {
        RcptOutcome {
            index: 0,
            status,
            dsn: reply.enhanced.unwrap_or(Enhanced::new(4, 0, 0)),
            reply,
            remote: true,
        }
    }

    #[test]
    fn maps_outcomes_to_results() {
        let sent = remote(
            Status::Delivered,
            Reply::new(250, Some(Enhanced::new(2, 0, 0)), "Ok: queued as X"),
        );
        let r = recipient_result(3, &sent, Some("mx.example"), Handoff::Relayed);
        assert_eq!(r.index, 3);
        assert_eq!(r.outcome, Outcome::Delivered);
        assert_eq!(r.dsn, "2.0.0");
        assert_eq!(r.reply, "250 2.0.0 Ok: queued as X");
        assert_eq!(r.remote_mta.as_deref(), Some("mx.example"));
        assert_eq!(r.outcome.status_word(), "sent");

        let bounced = remote(
            Status::Bounced,
            Reply::new(550, Some(Enhanced::new(5, 1, 1)), "unknown \u{e9}"),
        );
        let r = recipient_result(0, &bounced, Some("mx"), Handoff::Relayed);
        assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Bounced, "5.1.1"));
        assert_eq!(r.reply, "550 5.1.1 unknown ?", "printable only");
        assert_eq!(r.outcome.status_word(), "bounced");

        let local = local_outcome(
            0,
            Status::Deferred,
            Enhanced::new(4, 4, 1),
            "connect to h[127.0.0.1]:25: Connection refused",
        );
        let r = recipient_result(1, &local, None, Handoff::Relayed);
        assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Deferred, "4.4.1"));
        assert_eq!(r.reply, "connect to h[127.0.0.1]:25: Connection refused");
        assert_eq!(r.remote_mta, None);
        assert_eq!(r.outcome.status_word(), "deferred");
    }

    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            spool: Spool::new(dir),
            helo_name: "out.example".into(),
            timeouts: Timeouts::uniform(Duration::from_secs(5)),
            connection: connection::Config {
                connect_timeout: Duration::from_secs(1),
                tls: tls::Contexts::new(std::path::Path::new("")).unwrap(),
                tls_timeout: Duration::from_secs(1),
                reuse_max_messages: 1,
            },
            smtp: sluice_config::Smtp::default(),
            route: route::RouteContext {
                // Nobody answers there: MX lookups fail at once, temporarily.
                resolver: sluice_dns::Resolver::new(
                    vec!["127.0.0.1:1".parse().unwrap()],
                    Duration::from_secs(1),
                ),
                system_hosts: false,
                port: 25,
                max_hosts: 5,
                me: route::Me {
                    hostname: "out.example".into(),
                    listen: vec![],
                },
            },
        }
    }

    fn job(queue_id: &str, next_hop: &str) -> Job {
        Job {
            job_id: 7,
            queue_id: queue_id.into(),
            next_hop: next_hop.into(),
            recipients: vec![
                sluice_ipc::delivery::JobRecipient {
                    index: 0,
                    address: "a@example.org".into(),
                },
                sluice_ipc::delivery::JobRecipient {
                    index: 5,
                    address: "b@example.org".into(),
                },
            ],
            queue_wait_ms: 10,
        }
    }

    #[test]
    fn unreadable_queue_file_defers_every_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        for id in ["not-an-id".to_string(), QueueId::generate().to_string()] {
            let r = deliver_job(&s, &job(&id, "[127.0.0.1]:25"), &mut None);
            assert_eq!(r.job_id, 7);
            assert_eq!(r.recipients.len(), 2);
            assert_eq!(r.recipients[1].index, 5);
            assert!(r.recipients.iter().all(|r| r.outcome == Outcome::Deferred
                && r.dsn == "4.3.0"
                && r.remote_mta.is_none()));
        }
    }

    #[test]
    fn mismatched_recipients_and_mx_hops_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        spool.create_layout(None).unwrap();
        let id = QueueId::generate();
        let envelope = Envelope {
            sender: "s@example.net".into(),
            recipients: vec![sluice_proto::envelope::Recipient {
                address: "a@example.org".into(),
                notify: None,
                orcpt: None,
            }],
            ..Envelope::default()
        };
        let source = sluice_spool::Source::Local {
            uid: 0,
            user: "root".into(),
        };
        spool
            .commit(&sluice_spool::Message {
                id,
                arrival: SystemTime::now(),
                source: &source,
                envelope: &envelope,
                content: &[b"Subject: x\r\n\r\nhi\r\n"],
            })
            .unwrap();
        let r = deliver_job(
            &settings(dir.path()),
            &job(&id.to_string(), "example.org"),
            &mut None,
        );
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[0].dsn, "4.4.3");
        assert!(
            r.recipients[0]
                .reply
                .contains("name=example.org type=MX: Host not found, try again"),
            "{}",
            r.recipients[0].reply
        );
        assert_eq!(r.recipients[1].dsn, "4.3.0");
        assert!(r.recipients[1]
            .reply
            .contains("does not match the queue file"));
        assert!(r.recipients.iter().all(|r| r.outcome == Outcome::Deferred));
    }
}
