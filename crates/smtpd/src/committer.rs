//! Group commit: one thread passes each finished message through cleanup
//! (the one door into the queue: the `Received:` header comes from there)
//! and makes the queue files durable in batches, so that
//! the messages of many sessions share one journal commit and one
//! directory fsync instead of paying for each alone (see
//! `Spool::commit_batch`). The event loop hands it finished messages and
//! goes on serving other sessions; results come back through a channel and
//! a `mio::Waker`.
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
use std::time::SystemTime;

use mio::{Token, Waker};
use sluice_cleanup::{Cleaned, Entry, Settings, Submitter};
use sluice_proto::envelope::{Client, Envelope};
use sluice_spool::{Message, QueueId, Source, Spool};

/// Most messages in one batch.
const MAX_BATCH: usize = 256;

/// A message to make durable.
pub(crate) struct Request {
    /// The connection that waits for the answer.
    pub(crate) token: Token,
    pub(crate) id: QueueId,
    pub(crate) arrival: SystemTime,
    pub(crate) client: Client,
    pub(crate) envelope: Envelope,
    /// As received, before cleanup.
    pub(crate) content: Vec<u8>,
}

/// The answer for one request.
pub(crate) struct Done {
    pub(crate) token: Token,
    pub(crate) id: QueueId,
    pub(crate) client: Client,
    /// `Ok` only when the file and its directory entry are on disk.
    pub(crate) result: Result<(), String>,
}

/// The event loop's handle on the commit thread.
pub(crate) struct Committer {
    requests: Sender<Request>,
    results: Receiver<Done>,
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
        Ok(Committer { requests, results })
    }

    /// Hands a message over; `Err` gives it back if the thread is gone.
    pub(crate) fn submit(&self, request: Request) -> Result<(), Box<Request>> {
        self.requests.send(request).map_err(|e| Box::new(e.0))
    }

    /// Results that have arrived, without waiting.
    pub(crate) fn results(&self) -> Vec<Done> {
        let mut out = Vec::new();
        while let Ok(done) = self.results.try_recv() {
            out.push(done);
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
        let cleaned: Vec<Cleaned<'_>> = batch
            .iter()
            .zip(&sources)
            .map(|(r, source)| {
                let entry = Entry {
                    id: r.id,
                    arrival: r.arrival,
                    source,
                    envelope: &r.envelope,
                };
                sluice_cleanup::clean(cleanup, &entry, &Submitter::default(), &r.content)
            })
            .collect();
        let pieces: Vec<[&[u8]; 2]> = cleaned.iter().map(Cleaned::pieces).collect();
        let messages: Vec<Message<'_>> = batch
            .iter()
            .zip(&sources)
            .zip(&pieces)
            .map(|((r, source), pieces)| Message {
                id: r.id,
                arrival: r.arrival,
                source,
                envelope: &r.envelope,
                content: pieces,
            })
            .collect();
        let results = spool.commit_batch(&messages);
        drop(messages);
        drop(pieces);
        drop(cleaned);
        for (request, result) in batch.into_iter().zip(results) {
            let done = Done {
                token: request.token,
                id: request.id,
                client: request.client,
                result: result.map(|_| ()).map_err(|e| e.to_string()),
            };
            if outgoing.send(done).is_err() {
                return;
            }
        }
        let _ = waker.wake();
    }
}
