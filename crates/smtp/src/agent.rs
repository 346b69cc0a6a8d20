//! `sluice-smtp`'s part in the delivery protocol: the shared agent loop
//! (`sluice_ipc::agent`) with one connection to a next hop kept open
//! between jobs for reuse.
//!
//! After a job the agent may keep its connection to the job's next hop
//! open (at most one); its `Done` then carries `open_connection:
//! Some(next_hop)`, else `None`. The next job for that next hop uses it; a
//! job for another next hop closes it first. When no job came for
//! `smtp.reuse_idle`, the agent closes it and sends `Closed { next_hop }`.
//! Losing the queue manager or stopping closes it too.
//!
//! # Must never
//! Keep more than one connection, or one past `smtp.reuse_idle` unused.

use std::time::{Duration, Instant};

use sluice_ipc::agent::Deliverer;
use sluice_ipc::delivery::{AgentMessage, Job, JobResult};

use crate::connection::Connection;
use crate::delivery::{deliver_job, Settings};

/// The SMTP agent's state between jobs.
pub(crate) struct Agent<'a> {
    pub(crate) settings: &'a Settings,
    /// `smtp.reuse_idle`.
    pub(crate) reuse_idle: Duration,
    /// The connection kept open, if any.
    pub(crate) kept: Option<Connection>,
}

impl Deliverer for Agent<'_> {
    fn deliver(&mut self, job: &Job) -> JobResult {
        if self
            .kept
            .as_ref()
            .is_some_and(|c| c.next_hop != job.next_hop)
        {
            if let Some(conn) = self.kept.take() {
                conn.close();
            }
        }
        deliver_job(self.settings, job, &mut self.kept)
    }

    fn wake_at(&self) -> Option<Instant> {
        self.kept.as_ref().map(|c| c.idle_since + self.reuse_idle)
    }

    fn wake(&mut self) -> Option<AgentMessage> {
        let conn = self.kept.take()?;
        let next_hop = conn.next_hop.clone();
        conn.close();
        Some(AgentMessage::Closed { next_hop })
    }

    fn disconnected(&mut self) {
        if let Some(conn) = self.kept.take() {
            conn.close();
        }
    }
}
