//! The active queue: jobs ready for delivery agents, grouped by
//! destination, handed out round-robin between destinations within a
//! per-destination and a total concurrency limit (pure code, no IO).
//!
//! A destination is a transport and a next hop. Round-robin means one
//! destination with a deep queue cannot starve the others: each free agent
//! takes the next destination in turn. A destination whose attempt failed
//! before any server answered is suspended for a while, so that its backlog
//! is deferred at once instead of tying up agents on timeouts.
//!
//! # Must never
//! Lose a job: every job handed in is either handed out once, or returned
//! by [`Scheduler::take_suspended`] so that the caller can defer it.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Where jobs go: one queue, one concurrency count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Destination {
    pub(crate) transport: String,
    pub(crate) next_hop: String,
}

/// Recipients of one message for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) message_id: String,
    pub(crate) destination: Destination,
    pub(crate) recipients: Vec<(u32, String)>,
    pub(crate) arrival_ms: i64,
    /// When the job entered the active queue (for `delays=`).
    pub(crate) queued_ms: i64,
}

/// Most recipients in one job (Postfix's destination recipient limit).
pub(crate) const MAX_JOB_RECIPIENTS: usize = 50;

/// The scheduler state.
#[derive(Debug)]
pub(crate) struct Scheduler {
    per_destination: usize,
    total: usize,
    queues: BTreeMap<Destination, VecDeque<Job>>,
    /// Round-robin order of destinations with queued jobs.
    ring: VecDeque<Destination>,
    active: HashMap<Destination, usize>,
    active_total: usize,
    /// Suspended destinations and until when (ms).
    suspended: HashMap<Destination, (i64, String)>,
    queued_recipients: usize,
}

impl Scheduler {
    pub(crate) fn new(per_destination: usize, total: usize) -> Self {
        Scheduler {
            per_destination: per_destination.max(1),
            total: total.max(1),
            queues: BTreeMap::new(),
            ring: VecDeque::new(),
            active: HashMap::new(),
            active_total: 0,
            suspended: HashMap::new(),
            queued_recipients: 0,
        }
    }

    /// Recipients waiting in the active queue (not handed out yet).
    pub(crate) fn queued_recipients(&self) -> usize {
        self.queued_recipients
    }

    /// Adds recipients of one message for one destination, split into jobs
    /// of at most [`MAX_JOB_RECIPIENTS`].
    pub(crate) fn push(
        &mut self,
        message_id: &str,
        destination: Destination,
        recipients: Vec<(u32, String)>,
        arrival_ms: i64,
        now_ms: i64,
    ) {
        for chunk in recipients.chunks(MAX_JOB_RECIPIENTS) {
            self.queued_recipients += chunk.len();
            let job = Job {
                message_id: message_id.to_owned(),
                destination: destination.clone(),
                recipients: chunk.to_vec(),
                arrival_ms,
                queued_ms: now_ms,
            };
            let queue = self.queues.entry(destination.clone()).or_default();
            if queue.is_empty() {
                self.ring.push_back(destination.clone());
            }
            queue.push_back(job);
        }
    }

    /// The next job for an idle agent of `transport`, round-robin between
    /// destinations that are under their limit and not suspended.
    pub(crate) fn next(&mut self, transport: &str, now_ms: i64) -> Option<Job> {
        if self.active_total >= self.total {
            return None;
        }
        for _ in 0..self.ring.len() {
            let destination = self.ring.pop_front()?;
            let eligible = destination.transport == transport
                && self.active.get(&destination).copied().unwrap_or(0) < self.per_destination
                && !self.is_suspended(&destination, now_ms);
            if !eligible {
                self.ring.push_back(destination);
                continue;
            }
            let queue = self.queues.get_mut(&destination)?;
            let job = queue.pop_front()?;
            if queue.is_empty() {
                self.queues.remove(&destination);
            } else {
                self.ring.push_back(destination.clone());
            }
            self.queued_recipients -= job.recipients.len();
            *self.active.entry(destination).or_default() += 1;
            self.active_total += 1;
            return Some(job);
        }
        None
    }

    /// The next job for `destination` itself, within the same limits: for
    /// an idle agent that holds an open connection to its next hop, so
    /// that the connection is reused rather than a new one opened.
    pub(crate) fn next_for(&mut self, destination: &Destination, now_ms: i64) -> Option<Job> {
        if self.active_total >= self.total
            || self.active.get(destination).copied().unwrap_or(0) >= self.per_destination
            || self.is_suspended(destination, now_ms)
        {
            return None;
        }
        let queue = self.queues.get_mut(destination)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(destination);
            self.ring.retain(|d| d != destination);
        }
        self.queued_recipients -= job.recipients.len();
        *self.active.entry(destination.clone()).or_default() += 1;
        self.active_total += 1;
        Some(job)
    }

    /// A handed-out job finished (whatever its outcome).
    pub(crate) fn finished(&mut self, destination: &Destination) {
        if let Some(n) = self.active.get_mut(destination) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active.remove(destination);
            }
            self.active_total = self.active_total.saturating_sub(1);
        }
    }

    fn is_suspended(&self, destination: &Destination, now_ms: i64) -> bool {
        self.suspended
            .get(destination)
            .is_some_and(|(until, _)| *until > now_ms)
    }

    /// Lifts every suspension: the operator (flush, ETRN) says the next
    /// hops may be back, so they are tried again at once, as Postfix's
    /// flush revives dead destinations.
    pub(crate) fn unsuspend_all(&mut self) {
        self.suspended.clear();
    }

    /// Lifts one destination's suspension (ETRN: the client says that next
    /// hop is back; the others stay as they are).
    pub(crate) fn unsuspend(&mut self, destination: &Destination) {
        self.suspended.remove(destination);
    }

    /// Suspends a destination until `until_ms` because of `reason`.
    pub(crate) fn suspend(&mut self, destination: &Destination, until_ms: i64, reason: &str) {
        self.suspended
            .insert(destination.clone(), (until_ms, reason.to_owned()));
    }

    /// Takes the queued jobs of suspended destinations, with the reason, for
    /// the caller to defer; forgets suspensions that have ended.
    pub(crate) fn take_suspended(&mut self, now_ms: i64) -> Vec<(Job, String)> {
        self.suspended.retain(|_, (until, _)| *until > now_ms);
        let mut out = Vec::new();
        for (destination, (_, reason)) in &self.suspended {
            if let Some(queue) = self.queues.remove(destination) {
                self.ring.retain(|d| d != destination);
                for job in queue {
                    self.queued_recipients -= job.recipients.len();
                    out.push((job, reason.clone()));
                }
            }
        }
        out
    }

    /// Removes queued jobs of a message (delete, hold); returns them.
    pub(crate) fn remove_message(&mut self, message_id: &str) -> Vec<Job> {
        let mut out = Vec::new();
        for queue in self.queues.values_mut() {
            let (gone, kept): (Vec<Job>, Vec<Job>) =
                queue.drain(..).partition(|j| j.message_id == message_id);
            *queue = kept.into();
            out.extend(gone);
        }
        self.queues.retain(|_, q| !q.is_empty());
        let queues = &self.queues;
        self.ring.retain(|d| queues.contains_key(d));
        for job in &out {
            self.queued_recipients -= job.recipients.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(hop: &str) -> Destination {
        Destination {
            transport: "smtp".into(),
            next_hop: hop.into(),
        }
    }

    fn rcpts(n: u32) -> Vec<(u32, String)> {
        (0..n).map(|i| (i, format!("r{i}@x.test"))).collect()
    }

    #[test]
    fn round_robin_between_destinations() {
        let mut s = Scheduler::new(10, 100);
        for i in 0..5 {
            s.push(&format!("slow{i}"), dest("slow"), rcpts(1), 0, 0);
        }
        s.push("fast0", dest("fast"), rcpts(1), 0, 0);
        let first = s.next("smtp", 0).unwrap();
        let second = s.next("smtp", 0).unwrap();
        assert_eq!(first.destination, dest("slow"));
        assert_eq!(
            second.destination,
            dest("fast"),
            "a deep queue must not starve others"
        );
    }

    #[test]
    fn next_for_takes_from_one_destination_within_the_limits() {
        let mut s = Scheduler::new(2, 10);
        s.push("a0", dest("a"), rcpts(1), 0, 0);
        s.push("a1", dest("a"), rcpts(1), 0, 0);
        s.push("a2", dest("a"), rcpts(1), 0, 0);
        s.push("b0", dest("b"), rcpts(1), 0, 0);
        assert_eq!(s.next_for(&dest("a"), 0).unwrap().message_id, "a0");
        assert_eq!(s.next_for(&dest("a"), 0).unwrap().message_id, "a1");
        assert!(s.next_for(&dest("a"), 0).is_none(), "per-destination limit");
        assert!(s.next_for(&dest("c"), 0).is_none(), "nothing queued");
        s.finished(&dest("a"));
        assert_eq!(s.next_for(&dest("a"), 0).unwrap().message_id, "a2");
        // The emptied destination left the ring; the other is still served.
        assert_eq!(s.next("smtp", 0).unwrap().message_id, "b0");
        assert!(s.next("smtp", 0).is_none());
        assert_eq!(s.queued_recipients(), 0);
    }

    #[test]
    fn per_destination_and_total_limits_hold() {
        let mut s = Scheduler::new(2, 3);
        for i in 0..5 {
            s.push(&format!("a{i}"), dest("a"), rcpts(1), 0, 0);
            s.push(&format!("b{i}"), dest("b"), rcpts(1), 0, 0);
        }
        let mut got = Vec::new();
        while let Some(j) = s.next("smtp", 0) {
            got.push(j.destination.next_hop);
        }
        assert_eq!(got.len(), 3, "total limit");
        assert!(got.iter().filter(|h| *h == "a").count() <= 2);
        s.finished(&dest("a"));
        assert!(s.next("smtp", 0).is_some());
    }

    #[test]
    fn wrong_transport_gets_nothing() {
        let mut s = Scheduler::new(2, 3);
        s.push("m", dest("a"), rcpts(1), 0, 0);
        assert!(s.next("local", 0).is_none());
        assert!(s.next("smtp", 0).is_some());
    }

    #[test]
    fn big_messages_split_into_jobs() {
        let mut s = Scheduler::new(10, 10);
        s.push("m", dest("a"), rcpts(120), 0, 0);
        assert_eq!(s.queued_recipients(), 120);
        let sizes: Vec<usize> = std::iter::from_fn(|| s.next("smtp", 0))
            .map(|j| j.recipients.len())
            .collect();
        assert_eq!(sizes, [50, 50, 20]);
        assert_eq!(s.queued_recipients(), 0);
    }

    #[test]
    fn suspended_destination_hands_back_its_jobs() {
        let mut s = Scheduler::new(10, 10);
        s.push("m1", dest("dead"), rcpts(1), 0, 0);
        s.push("m2", dest("dead"), rcpts(1), 0, 0);
        s.push("m3", dest("ok"), rcpts(1), 0, 0);
        s.suspend(&dest("dead"), 1000, "connect refused");
        assert_eq!(s.next("smtp", 10).unwrap().destination, dest("ok"));
        let back = s.take_suspended(10);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].1, "connect refused");
        assert!(s.next("smtp", 10).is_none());
        assert_eq!(s.queued_recipients(), 0);
    }

    #[test]
    fn a_flush_lifts_suspensions() {
        let mut s = Scheduler::new(10, 10);
        s.push("m1", dest("dead"), rcpts(1), 0, 0);
        s.suspend(&dest("dead"), 1000, "connect refused");
        assert!(s.next("smtp", 10).is_none());
        s.unsuspend_all();
        assert!(s.take_suspended(10).is_empty());
        assert_eq!(s.next("smtp", 10).unwrap().destination, dest("dead"));
    }

    #[test]
    fn etrn_lifts_only_its_destination() {
        let mut s = Scheduler::new(10, 10);
        s.push("m1", dest("a"), rcpts(1), 0, 0);
        s.push("m2", dest("b"), rcpts(1), 0, 0);
        s.suspend(&dest("a"), 1000, "connect refused");
        s.suspend(&dest("b"), 1000, "connect refused");
        s.unsuspend(&dest("a"));
        assert_eq!(s.next("smtp", 10).unwrap().destination, dest("a"));
        assert!(s.next("smtp", 10).is_none(), "b stays suspended");
        let back = s.take_suspended(10);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0.destination, dest("b"));
    }

    #[test]
    fn removing_a_message_drops_its_queued_jobs() {
        let mut s = Scheduler::new(10, 10);
        s.push("m1", dest("a"), rcpts(2), 0, 0);
        s.push("m2", dest("a"), rcpts(1), 0, 0);
        assert_eq!(s.remove_message("m1").len(), 1);
        assert_eq!(s.next("smtp", 0).unwrap().message_id, "m2");
    }
}
