//! Group commit: one thread passes each finished message through cleanup
//! (the one door into the queue: the `Received:` header comes from there)
//! and makes the queue files durable in batches, so that
//! the messages of many sessions share one journal commit and one
//! directory fsync instead of paying for each alone (see
//! `Spool::commit_batch`). The event loop hands it finished messages and
//! goes on serving other sessions; results come back through a channel and
//! a `mio::Waker`. Its answers are routed by (connection, ask id): a late
//! one, for a connection gone or an ask that passed its deadline, is
//! dropped by the loop (the file stands: a duplicate at worst, never a
//! loss).
//!
//! # Must never
//! Report a message committed before `Spool::commit_batch` said so for that
//! message.
//!
//! # Errors
//! A failed commit is a result like any other (the session answers 451); if
//! the thread itself is gone, `submit` says so and the caller answers 451.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::{Token, Waker};
use sluice_cleanup::{Cleaned, Entry, Refusal, Settings, Submitter};
use sluice_proto::envelope::{Client, Envelope};
use sluice_proto::server::{Commit, CommitAnswer};
use sluice_spool::{Message, QueueId, Source, Spool};

use crate::asks::{AskId, Asks};

/// How long a commit may take before the session is told 451.
const DEADLINE: Duration = Duration::from_secs(600);

/// Most messages in one batch.
const MAX_BATCH: usize = 256;

/// A message to make durable.
struct Request {
    /// The connection that waits for the answer, and its ask.
    token: Token,
    ask: AskId,
    id: QueueId,
    arrival: SystemTime,
    client: Client,
    envelope: Envelope,
    /// As received, before cleanup.
    content: Vec<u8>,
}

/// The answer for one request.
struct Done {
    token: Token,
    ask: AskId,
    id: QueueId,
    client: Client,
    /// `Ok` only when the file and its directory entry are on disk.
    result: Result<(), Failure>,
}

/// Why a message was not committed.
enum Failure {
    /// Cleanup refused it.
    Refused(Refusal),
    /// The spool could not write it.
    Write(String),
}

/// A commit the thread finished.
pub(crate) struct Finished {
    /// The connection to answer; `None` if it left or was answered at the
    /// deadline (the file stands: a duplicate at worst, never a loss).
    pub(crate) token: Option<Token>,
    pub(crate) answer: CommitAnswer,
}

/// The event loop's handle on the commit thread.
pub(crate) struct Committer {
    requests: Sender<Request>,
    results: Receiver<Done>,
    /// The commits out (default: 451 at the deadline).
    pub(crate) asks: Asks<CommitAnswer>,
}

impl Committer {
    /// Starts the thread; it wakes the loop through `waker` after each batch.
    pub(crate) fn start(
        spool: Spool,
        cleanup: Settings,
        waker: Arc<Waker>,
    ) -> std::io::Result<Committer> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (outgoing, results) = mpsc::channel::<Done>();
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || run(&spool, &cleanup, &incoming, &outgoing, &waker))?;
        Ok(Committer {
            requests,
            results,
            asks: Asks::new(),
        })
    }

    /// Hands a finished message over (cleanup, on the commit thread, adds
    /// its `Received:` header); false if the thread is gone.
    pub(crate) fn submit(&mut self, token: Token, commit: Commit, now: Instant) -> bool {
        let ask = self
            .asks
            .open(token, now + DEADLINE, CommitAnswer::TempFail);
        let id = QueueId::generate();
        let arrival = SystemTime::now();
        let request = Request {
            token,
            ask,
            id,
            arrival,
            client: commit.client,
            envelope: commit.envelope,
            content: commit.content,
        };
        if self.requests.send(request).is_err() {
            log::error!("{id}: the commit thread is gone");
            self.asks.take(token, ask);
            return false;
        }
        true
    }

    /// Commits that have finished, without waiting: each logged
    /// (`QUEUEID: client=...` once on disk).
    pub(crate) fn results(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Ok(done) = self.results.try_recv() {
            let queue_id = done.id.to_string();
            let answer = match done.result {
                Ok(()) => {
                    let client = done.client.hostname.as_deref();
                    let line = sluice_log::line::client(&queue_id, client, done.client.addr);
                    log::info!("{line}");
                    CommitAnswer::Queued { queue_id }
                }
                Err(Failure::Write(e)) => {
                    log::error!("{queue_id}: queue file write error: {e}");
                    CommitAnswer::TempFail
                }
                Err(Failure::Refused(refusal)) => {
                    log::info!("{queue_id}: refused by cleanup: {refusal}");
                    CommitAnswer::Refused(match refusal {
                        Refusal::TooManyHops(_) => sluice_proto::reply::too_many_hops(),
                        Refusal::NulBytes => sluice_proto::reply::nul_bytes(),
                    })
                }
            };
            let token = Some(done.token).filter(|t| self.asks.take(*t, done.ask));
            out.push(Finished { token, answer });
        }
        out
    }
}

fn run(
    spool: &Spool,
    cleanup: &Settings,
    incoming: &Receiver<Request>,
    outgoing: &Sender<Done>,
    waker: &Waker,
) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(r) => batch.push(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let sources: Vec<Source> = batch
            .iter()
            .map(|r| Source::Smtp(r.client.clone()))
            .collect();
        // The door: a refused message is answered, the others cleaned.
        let cleaned: Vec<Result<Cleaned<'_>, Refusal>> = batch
            .iter()
            .zip(&sources)
            .map(|(r, source)| {
                let entry = Entry {
                    id: r.id,
                    arrival: r.arrival,
                    source,
                    envelope: &r.envelope,
                };
                sluice_cleanup::check(cleanup, &entry, &r.content)?;
                Ok(sluice_cleanup::clean(
                    cleanup,
                    &entry,
                    &Submitter::default(),
                    &r.content,
                ))
            })
            .collect();
        let refusals: Vec<Option<Refusal>> =
            cleaned.iter().map(|c| c.as_ref().err().copied()).collect();
        let pieces: Vec<Option<[&[u8]; 2]>> = cleaned
            .iter()
            .map(|c| c.as_ref().ok().map(Cleaned::pieces))
            .collect();
        let messages: Vec<Message<'_>> = batch
            .iter()
            .zip(&sources)
            .zip(&pieces)
            .filter_map(|((r, source), pieces)| {
                pieces.as_ref().map(|content| Message {
                    id: r.id,
                    arrival: r.arrival,
                    source,
                    envelope: &r.envelope,
                    content,
                })
            })
            .collect();
        let mut written = spool.commit_batch(&messages).into_iter();
        drop(messages);
        drop(pieces);
        drop(cleaned);
        for (request, refusal) in batch.into_iter().zip(refusals) {
            let result = match refusal {
                Some(refusal) => Err(Failure::Refused(refusal)),
                None => match written.next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(Failure::Write(e.to_string())),
                    None => Err(Failure::Write("no result from the spool".into())),
                },
            };
            let done = Done {
                token: request.token,
                ask: request.ask,
                id: request.id,
                client: request.client,
                result,
            };
            if outgoing.send(done).is_err() {
                return;
            }
        }
        let _ = waker.wake();
    }
}
