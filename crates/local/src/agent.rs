//! `sluice-local`'s part in the delivery protocol: the shared agent loop
//! (`sluice_ipc::agent`) answering each job with `deliver_job`.
//!
//! # Must never
//! Leave a job without an answer: `deliver_job` gives one result per
//! recipient whatever happens.

use sluice_ipc::agent::Deliverer;
use sluice_ipc::delivery::{Job, JobResult};

use crate::delivery::{deliver_job, Settings};

/// The local agent: no state between jobs.
pub(crate) struct Agent<'a> {
    pub(crate) settings: &'a Settings,
}

impl Deliverer for Agent<'_> {
    fn deliver(&mut self, job: &Job) -> JobResult {
        deliver_job(self.settings, job)
    }
}
