//! The operator's changes to the queue (hold, release, flush, delete,
//! requeue from the queue tool, and ETRN's flush): what each does to the
//! index, the spool's hold markers and the active queue.
//!
//! # Must never
//! Keep a hold only in the index (the marker in `hold/` is what survives
//! an index rebuild), or release a held message on a flush.

use sluice_ipc::qmgr::{Action, Target};
use sluice_spool::QueueId;

use sluice_index::{State, Update};

use super::{now_ms, Queue};
use crate::route;
use crate::scheduler::Destination;

impl Queue {
    /// ETRN: deferred mail for `domain` is due now.
    pub(crate) fn etrn(&mut self, domain: &str) -> anyhow::Result<u64> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let ids = self.index.in_domain(&domain)?;
        self.index.make_due(&ids, Some(&domain), now_ms())?;
        // Only the named domain's next hop is revived: other destinations
        // keep their back-off (issue 9 defect 6).
        let route = route::resolve(&self.config, &format!("postmaster@{domain}"));
        self.scheduler.unsuspend(&Destination {
            transport: route.transport.to_owned(),
            next_hop: route.next_hop,
        });
        Ok(ids.len() as u64)
    }

    /// An operator's change; returns how many messages it touched.
    pub(crate) fn change(&mut self, action: Action, target: &Target) -> anyhow::Result<u64> {
        let ids = self.select(target)?;
        let now = now_ms();
        match action {
            Action::Flush => {
                let domain = match target {
                    Target::Domain(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                };
                self.index.make_due(&ids, domain.as_deref(), now)?;
                self.scheduler.unsuspend_all();
            }
            Action::Hold => {
                // The spool's marker first: it is what survives the index.
                for id in &ids {
                    if let Ok(qid) = id.parse::<QueueId>() {
                        self.spool.set_hold(qid, true)?;
                    }
                }
                self.index.set_hold(&ids, true)?;
                for id in &ids {
                    self.unqueue(id, now)?;
                }
            }
            Action::Release => {
                for id in &ids {
                    if let Ok(qid) = id.parse::<QueueId>() {
                        self.spool.set_hold(qid, false)?;
                    }
                }
                self.index.set_hold(&ids, false)?;
                self.index.make_due(&ids, None, now)?;
            }
            Action::Requeue => {
                for id in &ids {
                    self.unqueue(id, now)?;
                    for (index, address) in self.index.waiting(id)? {
                        let route = route::resolve(&self.config, &address);
                        self.index
                            .reroute(id, index, route.transport, &route.next_hop)?;
                    }
                }
                self.index.make_due(&ids, None, now)?;
            }
            Action::Delete => {
                for id in &ids {
                    self.scheduler.remove_message(id);
                    self.in_flight.retain(|_, j| &j.message_id != id);
                    if let Ok(qid) = id.parse::<QueueId>() {
                        if let Err(e) = self.spool.remove(qid) {
                            if !e.is_not_found() {
                                log::warn!("{id}: cannot remove the queue file: {e}");
                                continue;
                            }
                        }
                    }
                    if let Ok(qid) = id.parse::<QueueId>() {
                        if let Err(e) = self.spool.set_hold(qid, false) {
                            log::warn!("{id}: cannot remove the hold marker: {e}");
                        }
                    }
                    self.index.forget(id)?;
                    log::info!("{id}: removed by the operator");
                }
            }
        }
        Ok(ids.len() as u64)
    }

    /// Message IDs matching an operator's target.
    fn select(&self, target: &Target) -> anyhow::Result<Vec<String>> {
        Ok(match target {
            Target::All => self.index.ids()?.into_iter().collect(),
            Target::Ids(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    if self.index.contains(id)? {
                        out.push(id.clone());
                    }
                }
                out
            }
            Target::Domain(domain) => self
                .index
                .in_domain(domain.trim_end_matches('.').to_ascii_lowercase().as_str())?,
        })
    }

    /// Takes a message's jobs out of the active queue (hold, requeue); its
    /// recipients wait in the index again.
    fn unqueue(&mut self, message_id: &str, now: i64) -> anyhow::Result<()> {
        for job in self.scheduler.remove_message(message_id) {
            let updates: Vec<Update<'_>> = job
                .recipients
                .iter()
                .map(|(index, _)| Update {
                    index: *index,
                    state: State::Deferred,
                    next_attempt_ms: now,
                    error: None,
                })
                .collect();
            self.index.record(message_id, &updates, false)?;
        }
        Ok(())
    }
}
