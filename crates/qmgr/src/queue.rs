//! The queue manager's core, its IO: imports queue files into the index,
//! fills the active queue from what is due, and records agents' results as
//! `crate::outcome` decides them (retries, bounces, notices). The
//! operators' changes are in `operator.rs`.
//!
//! # Must never
//! Mark a recipient bounced before its notice is committed to the spool,
//! remove a queue file while a recipient of it is unfinished, or send a
//! notice about a notice to anyone but the postmaster (and that only once).
//!
//! # Errors
//! Index errors are returned (fatal for the process: the index is rebuilt
//! from the files on restart). A queue file that cannot be read is moved to
//! `corrupt/` by the spool and logged here; the queue manager carries on.

mod operator;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_config::Config;
use sluice_ipc::delivery::{self, Handoff, Outcome, RecipientResult};
use sluice_spool::{QueueFile, QueueId, Spool};

use crate::notices::Notices;
use crate::outcome::{self, ms, Input};
use crate::route;
use crate::scheduler::{Destination, Job, Scheduler};
use sluice_cleanup::notice::Kind;
use sluice_index::{Index, NewMessage, NewRecipient, Update};

/// Most recipients held in the active queue at once (Postfix's
/// `qmgr_message_active_limit` plays the same part).
const ACTIVE_LIMIT: usize = 20_000;
/// A destination that failed before any server answered is suspended this
/// long (or `retry_min`, if shorter).
const SUSPEND: Duration = Duration::from_secs(60);

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The queue.
pub(crate) struct Queue {
    config: Config,
    spool: Spool,
    index: Index,
    notices: Notices,
    scheduler: Scheduler,
    next_job_id: u64,
    in_flight: HashMap<u64, Job>,
}

impl Queue {
    pub(crate) fn open(config: Config, hostname: &str) -> anyhow::Result<Queue> {
        let spool = Spool::new(&config.spool_dir);
        let index = Index::open(&sluice_index::path(&config.spool_dir))?;
        let scheduler = Scheduler::new(
            config.queue.max_concurrency_per_destination,
            config.queue.max_concurrency,
        );
        let notices = Notices::new(&config, hostname);
        let mut queue = Queue {
            config,
            spool,
            index,
            notices,
            scheduler,
            next_job_id: 1,
            in_flight: HashMap::new(),
        };
        let reset = queue.index.reset_active(now_ms())?;
        if reset > 0 {
            log::info!("{reset} recipient(s) were in delivery at the last stop: due again");
        }
        queue.reconcile()?;
        Ok(queue)
    }

    /// The files are the truth: import every file the index does not know,
    /// drop rows whose file is gone.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        let files = self.spool.list(sluice_spool::Area::Queue)?;
        let known = self.index.ids()?;
        let on_disk: std::collections::HashSet<String> =
            files.iter().map(ToString::to_string).collect();
        let mut dropped = 0;
        for id in known.difference(&on_disk) {
            self.index.forget(id)?;
            dropped += 1;
        }
        let unknown: Vec<QueueId> = files
            .into_iter()
            .filter(|id| !known.contains(&id.to_string()))
            .collect();
        let imported = self.import(&unknown)?;
        if imported > 0 || dropped > 0 {
            log::info!("recovery: imported {imported} queue file(s), dropped {dropped} stale index entr(ies)");
        }
        // The operator's holds are in the spool: the index follows them,
        // and a marker whose message is gone goes too.
        let markers = self
            .spool
            .list(sluice_spool::Area::Hold)
            .unwrap_or_else(|e| {
                log::warn!("cannot read the hold markers: {e}");
                Vec::new()
            });
        let mut held = Vec::new();
        for id in markers {
            if on_disk.contains(&id.to_string()) {
                held.push(id.to_string());
            } else if let Err(e) = self.spool.set_hold(id, false) {
                log::warn!("{id}: cannot remove a stale hold marker: {e}");
            }
        }
        self.index.set_hold(&held, true)?;
        Ok(())
    }

    /// Looks for queue files the index does not know yet (a lost hint).
    pub(crate) fn scan(&mut self) -> anyhow::Result<usize> {
        let trimmed = self.spool.trim_free(sluice_spool::commit::FREE_MAX);
        if trimmed > 0 {
            log::info!("unlinked {trimmed} emptied queue file(s) kept for reuse");
        }
        let files = self.spool.list(sluice_spool::Area::Queue)?;
        let known = self.index.ids()?;
        let unknown: Vec<QueueId> = files
            .into_iter()
            .filter(|id| !known.contains(&id.to_string()))
            .collect();
        self.import(&unknown)
    }

    /// Reads queue files and adds them to the index (idempotent).
    pub(crate) fn import(&mut self, ids: &[QueueId]) -> anyhow::Result<usize> {
        let mut batch = Vec::with_capacity(ids.len());
        let mut lines = Vec::with_capacity(ids.len());
        for id in ids {
            if self.index.contains(&id.to_string())? {
                continue;
            }
            let file = match self.spool.read(*id) {
                Ok(f) => f,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    log::warn!("{id}: {e}");
                    continue;
                }
            };
            lines.push(sluice_log::line::queued(
                &id.to_string(),
                &file.envelope.sender,
                file.content.len() as u64,
                file.envelope.recipients.len(),
            ));
            batch.push(self.new_message(&file));
        }
        let added = self.index.insert(&batch, now_ms())?;
        for line in lines {
            log::info!("{line}");
        }
        Ok(added)
    }

    fn new_message(&self, file: &QueueFile) -> NewMessage {
        NewMessage {
            id: file.id.to_string(),
            arrival_ms: to_ms(file.arrival),
            sender: file.envelope.sender.clone(),
            size: file.content.len() as u64,
            hold: self.spool.is_held(file.id),
            recipients: file
                .envelope
                .recipients
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let route = route::resolve(&self.config, &r.address);
                    NewRecipient {
                        index: i as u32,
                        address: r.address.clone(),
                        domain: route.domain,
                        transport: route.transport.to_owned(),
                        next_hop: route.next_hop,
                    }
                })
                .collect(),
        }
    }

    /// Moves due recipients of a transport from the index into the active
    /// queue. Only transports with a connected agent are refilled: the
    /// others' recipients wait in the index (and expire there), instead of
    /// sitting in an active queue that nobody serves.
    pub(crate) fn refill(
        &mut self,
        transport: delivery::Transport,
        now: i64,
    ) -> anyhow::Result<()> {
        let room = ACTIVE_LIMIT.saturating_sub(self.scheduler.queued_recipients());
        if room == 0 {
            return Ok(());
        }
        let due = self.index.due(transport_name(transport), now, room)?;
        // (message, destination) -> (arrival, recipients)
        let mut groups: BTreeMap<(String, Destination), Group> = BTreeMap::new();
        for d in due {
            let r = d.recipient;
            let destination = Destination {
                transport: r.transport,
                next_hop: r.next_hop,
            };
            groups
                .entry((d.message_id, destination))
                .or_insert_with(|| (d.arrival_ms, Vec::new()))
                .1
                .push((r.index, r.address));
        }
        for ((message_id, destination), (arrival, recipients)) in groups {
            let indexes: Vec<u32> = recipients.iter().map(|(i, _)| *i).collect();
            self.index.set_active(&message_id, &indexes)?;
            self.scheduler
                .push(&message_id, destination, recipients, arrival, now);
        }
        Ok(())
    }

    /// The next job for an idle agent of `transport`.
    pub(crate) fn next_job(
        &mut self,
        transport: delivery::Transport,
        now: i64,
    ) -> Option<delivery::Job> {
        let job = self.scheduler.next(transport_name(transport), now)?;
        Some(self.hand_out(job, now))
    }

    /// The next job for `next_hop` only, for an agent that keeps a
    /// connection open to it.
    pub(crate) fn next_job_for(
        &mut self,
        transport: delivery::Transport,
        next_hop: &str,
        now: i64,
    ) -> Option<delivery::Job> {
        let destination = Destination {
            transport: transport_name(transport).to_owned(),
            next_hop: next_hop.to_owned(),
        };
        let job = self.scheduler.next_for(&destination, now)?;
        Some(self.hand_out(job, now))
    }

    fn hand_out(&mut self, job: Job, now: i64) -> delivery::Job {
        let job_id = self.next_job_id;
        self.next_job_id += 1;
        let wire = delivery::Job {
            job_id,
            queue_id: job.message_id.clone(),
            next_hop: job.destination.next_hop.clone(),
            recipients: job
                .recipients
                .iter()
                .map(|(index, address)| delivery::JobRecipient {
                    index: *index,
                    address: address.clone(),
                })
                .collect(),
            queue_wait_ms: (now - job.queued_ms).max(0) as u64,
        };
        self.in_flight.insert(job_id, job);
        wire
    }

    /// An agent's answer to a job.
    pub(crate) fn complete(&mut self, result: delivery::JobResult) -> anyhow::Result<()> {
        let Some(job) = self.in_flight.remove(&result.job_id) else {
            log::warn!("result for unknown job {}", result.job_id);
            return Ok(());
        };
        self.scheduler.finished(&job.destination);
        let now = now_ms();
        let mut results = result.recipients;
        // Every recipient of the job gets an outcome, even if the agent
        // forgot one: a missing answer is a deferral, never a loss.
        for (index, _) in &job.recipients {
            if !results.iter().any(|r| r.index == *index) {
                results.push(RecipientResult {
                    index: *index,
                    outcome: Outcome::Deferred,
                    dsn: "4.3.0".into(),
                    reply: "delivery agent gave no result for this recipient".into(),
                    remote_mta: None,
                    handoff: Handoff::Relayed,
                });
            }
        }
        results.retain(|r| job.recipients.iter().any(|(i, _)| *i == r.index));
        let unreached = results
            .iter()
            .all(|r| r.outcome == Outcome::Deferred && r.remote_mta.is_none());
        if unreached && !results.is_empty() {
            let pause = SUSPEND.min(self.config.queue.retry_min);
            self.scheduler
                .suspend(&job.destination, now + ms(pause), &results[0].reply);
        }
        self.apply(&job.message_id, job.arrival_ms, results, now)?;
        self.defer_suspended(now)
    }

    /// An agent went away with a job: its recipients are due again later.
    pub(crate) fn abandon(&mut self, job_id: u64) -> anyhow::Result<()> {
        let Some(job) = self.in_flight.remove(&job_id) else {
            return Ok(());
        };
        self.scheduler.finished(&job.destination);
        let now = now_ms();
        let results = deferrals(&job, "4.3.0", "delivery agent exited during delivery");
        for r in &results {
            self.log_outcome(&job.message_id, job.arrival_ms, r, "deferred", now);
        }
        self.apply(&job.message_id, job.arrival_ms, results, now)
    }

    /// Defers, at once, the queued jobs of suspended destinations.
    pub(crate) fn defer_suspended(&mut self, now: i64) -> anyhow::Result<()> {
        for (job, reason) in self.scheduler.take_suspended(now) {
            let reason = format!("delivery temporarily suspended: {reason}");
            let results = deferrals(&job, "4.4.1", &reason);
            for r in &results {
                self.log_outcome(&job.message_id, job.arrival_ms, r, "deferred", now);
            }
            self.apply(&job.message_id, job.arrival_ms, results, now)?;
        }
        Ok(())
    }

    /// Records outcomes as [`outcome::decide`] rules; a failure notice is
    /// committed before its recipients are marked bounced.
    fn apply(
        &mut self,
        message_id: &str,
        arrival_ms: i64,
        results: Vec<RecipientResult>,
        now: i64,
    ) -> anyhow::Result<()> {
        let queue = &self.config.queue;
        // The queue file is read only when a notice may be due: its
        // envelope holds each recipient's NOTIFY.
        let original = if outcome::may_notify(&results, arrival_ms, queue, now) {
            match message_id
                .parse()
                .map_err(anyhow::Error::from)
                .and_then(|id| Ok(self.spool.read(id)?))
            {
                Ok(file) => Some(file),
                Err(e) => {
                    log::warn!("{message_id}: cannot read the queue file for its notices: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        let sender = self.index.sender(message_id)?.unwrap_or_default();
        let mut inputs = Vec::with_capacity(results.len());
        for result in results {
            let attempts = self
                .index
                .recipient(message_id, result.index)?
                .map_or(0, |r| r.attempts);
            let notify = original
                .as_ref()
                .and_then(|f| f.envelope.recipients.get(result.index as usize))
                .and_then(|r| r.notify);
            inputs.push(Input {
                result,
                attempts,
                notify,
            });
        }
        let double_bounce_sender = self.notices.double_bounce_sender();
        let message = outcome::Message {
            arrival_ms,
            sender: &sender,
            double_bounce_sender: &double_bounce_sender,
        };
        let mut decision = outcome::decide(message, &inputs, &self.config.queue, now);
        for (fate, input) in decision.fates.iter().zip(&inputs) {
            if fate.expired {
                self.log_outcome(
                    message_id,
                    arrival_ms,
                    &input.result,
                    "expired, returned to sender",
                    now,
                );
            }
        }
        if decision.discarded {
            log::warn!("{message_id}: undeliverable postmaster notification discarded");
        }
        let mut notice_failed = false;
        for notice in &decision.notices {
            if notice.kind == Kind::Delay && !self.index.take_delay_warning(message_id)? {
                continue;
            }
            let sent = match &original {
                Some(file) => self
                    .notices
                    .queue(&self.spool, notice, file, &inputs, from_ms(now)),
                None => Err(anyhow::anyhow!("the queue file is unreadable")),
            };
            match sent {
                // The notice is safe in the spool; an index error is fatal.
                Ok(id) => {
                    self.import(&[id])?;
                }
                Err(e) => {
                    let what = match notice.kind {
                        Kind::Failure => "non-delivery",
                        Kind::Delay => "delay",
                        Kind::Success => "delivery",
                    };
                    log::warn!("{message_id}: cannot queue the {what} notice: {e:#}");
                    notice_failed |= notice.kind == Kind::Failure;
                }
            }
        }
        if notice_failed {
            // No notice, no bounce: try again later.
            decision.notice_failed(now, self.config.queue.retry_min);
        }
        let records: Vec<Update<'_>> = decision
            .fates
            .iter()
            .map(|f| Update {
                index: f.index,
                state: f.state,
                next_attempt_ms: f.next_attempt_ms,
                error: Some(f.error.as_str()),
            })
            .collect();
        self.index.record(message_id, &records, true)?;
        self.finish_if_done(message_id)
    }

    /// The delivery line for an outcome the queue manager decides itself
    /// (no agent attempt: `relay=none`).
    fn log_outcome(
        &self,
        message_id: &str,
        arrival_ms: i64,
        r: &RecipientResult,
        status: &str,
        now: i64,
    ) {
        log::info!(
            "{}",
            sluice_log::line::delivery(&sluice_log::line::Delivery {
                queue_id: message_id,
                to: &self.address_of(message_id, r.index),
                relay: "none",
                delay: (now - arrival_ms) as f64 / 1000.0,
                delays: [0.0; 4],
                dsn: &r.dsn,
                status,
                reply: &r.reply,
            })
        );
    }

    fn address_of(&self, message_id: &str, index: u32) -> String {
        self.index
            .recipient(message_id, index)
            .ok()
            .flatten()
            .map(|r| r.address)
            .unwrap_or_default()
    }

    /// Removes a message whose recipients are all done.
    fn finish_if_done(&mut self, message_id: &str) -> anyhow::Result<()> {
        if self.index.unfinished(message_id)? > 0 {
            return Ok(());
        }
        if let Ok(id) = message_id.parse::<QueueId>() {
            if let Err(e) = self.spool.remove(id) {
                if !e.is_not_found() {
                    log::warn!("{message_id}: cannot remove the queue file: {e}");
                    return Ok(());
                }
            }
        }
        self.index.forget(message_id)?;
        log::info!("{}", sluice_log::line::removed(message_id));
        Ok(())
    }

    /// Bounces recipients that have waited past the queue lifetime without
    /// being in delivery now.
    pub(crate) fn expire(&mut self, now: i64) -> anyhow::Result<()> {
        let cutoff = now - ms(self.config.queue.lifetime);
        let mut by_message: BTreeMap<(String, i64), Vec<u32>> = BTreeMap::new();
        for (message_id, index, arrival) in self.index.expired(cutoff)? {
            by_message
                .entry((message_id, arrival))
                .or_default()
                .push(index);
        }
        for ((message_id, arrival), indexes) in by_message {
            let results: Vec<RecipientResult> = indexes
                .into_iter()
                .map(|index| {
                    let last = self
                        .index
                        .recipient(&message_id, index)
                        .ok()
                        .flatten()
                        .and_then(|r| r.last_error);
                    RecipientResult {
                        index,
                        outcome: Outcome::Deferred,
                        dsn: "4.4.7".into(),
                        reply: last.unwrap_or_else(|| "message expired in the queue".into()),
                        remote_mta: None,
                        handoff: Handoff::Relayed,
                    }
                })
                .collect();
            // Deferred past the lifetime: `apply` turns them into bounces.
            self.apply(&message_id, arrival, results, now)?;
        }
        Ok(())
    }

    /// When something for `transport` next becomes due (ms), if anything
    /// waits.
    pub(crate) fn next_due(&self, transport: delivery::Transport) -> anyhow::Result<Option<i64>> {
        Ok(self.index.next_due(transport_name(transport))?)
    }
}

/// The index's name of a transport.
fn transport_name(transport: delivery::Transport) -> &'static str {
    match transport {
        delivery::Transport::Smtp => route::SMTP,
        delivery::Transport::Local => route::LOCAL,
    }
}

/// Recipients of one message for one destination, with the arrival time.
type Group = (i64, Vec<(u32, String)>);

/// The same deferral for every recipient of a job.
fn deferrals(job: &Job, dsn: &str, reason: &str) -> Vec<RecipientResult> {
    job.recipients
        .iter()
        .map(|(index, _)| RecipientResult {
            index: *index,
            outcome: Outcome::Deferred,
            dsn: dsn.to_owned(),
            reply: reason.to_owned(),
            remote_mta: None,
            handoff: Handoff::Relayed,
        })
        .collect()
}
