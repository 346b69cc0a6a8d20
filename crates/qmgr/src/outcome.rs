//! What happens to delivery results: a pure function of the results, the
//! attempts so far, the queue settings and the time (Postfix splits the
//! same decisions over `qmgr_deliver.c`, `qmgr_defer.c` and
//! `qmgr_bounce.c`).
//!
//! Each recipient is delivered, deferred until its next attempt by
//! exponential back-off, or bounced (a 5xx, or a deferral once the message
//! has been queued for the queue lifetime). The decision also names the
//! notices due: a failure notice for bounced recipients that asked for one,
//! a delay notice once the message is `delay_warning` late, a success
//! notice for delivered recipients with NOTIFY=SUCCESS, unless the next hop
//! offered DSN and so took the duty over (RFC 3461 §5.2.2; one relayed to a
//! next hop without DSN is reported `relayed`). Mail from `<>` never
//! gets a notice: its failures go to the postmaster, once, and a failed
//! postmaster notice is discarded.
//!
//! # Must never
//! Do IO (the index, the spool, the log and the clock belong to
//! `queue.rs`), or let a recipient leave the queue bounced without its
//! failure notice: [`Decision::notice_failed`] turns bounces back into
//! deferrals when the notice cannot be queued.

use std::time::Duration;

use sluice_index::State;
use sluice_ipc::delivery::{Handoff, Outcome, RecipientResult};
use sluice_proto::envelope::Notify;

use sluice_cleanup::notice::Kind;

/// The message the results are about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    /// Its arrival.
    pub(crate) arrival_ms: i64,
    /// Its envelope sender (empty for `<>`).
    pub(crate) sender: &'a str,
    /// The sender of the queue manager's own postmaster notices: a message
    /// from it that fails is discarded, never reported again.
    pub(crate) double_bounce_sender: &'a str,
}

/// One recipient's result with what the decision needs about it.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// What the agent (or the queue manager) reported.
    pub(crate) result: RecipientResult,
    /// Failed attempts before this one.
    pub(crate) attempts: u32,
    /// Its NOTIFY parameter (`None`: not given).
    pub(crate) notify: Option<Notify>,
}

/// What becomes of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fate {
    /// Position in the envelope.
    pub(crate) index: u32,
    /// Delivered, deferred or bounced.
    pub(crate) state: State,
    /// For a deferral, when to try again; else now.
    pub(crate) next_attempt_ms: i64,
    /// The reason recorded: `reply (dsn)`.
    pub(crate) error: String,
    /// Deferred past the queue lifetime (logged as expired).
    pub(crate) expired: bool,
}

/// Who a notice goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// The message's sender.
    Sender,
    /// The postmaster (the message came from `<>`).
    Postmaster,
}

/// A notice to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoticeDue {
    /// What it reports.
    pub(crate) kind: Kind,
    /// Who it goes to.
    pub(crate) audience: Audience,
    /// The recipients it reports, by envelope position, in result order.
    pub(crate) recipients: Vec<u32>,
}

/// Everything decided about one batch of results for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// One fate per result, in result order.
    pub(crate) fates: Vec<Fate>,
    /// Notices due. A delay notice is due only if none was sent for this
    /// message before (the caller keeps that flag).
    pub(crate) notices: Vec<NoticeDue>,
    /// A failed postmaster notice whose failure is dropped, not reported.
    pub(crate) discarded: bool,
}

impl Decision {
    /// The failure notice could not be queued: no notice, no bounce. The
    /// recipients it was for are deferred by `retry_min` instead.
    pub(crate) fn notice_failed(&mut self, now_ms: i64, retry_min: Duration) {
        for fate in &mut self.fates {
            if fate.state == State::Bounced {
                fate.state = State::Deferred;
                fate.next_attempt_ms = now_ms + ms(retry_min);
            }
        }
    }
}

/// Whether a recipient asked for (or by default gets) a notice of this
/// kind: without NOTIFY, failure and delay notices only (RFC 3461 4.1);
/// NOTIFY=NEVER, none.
pub(crate) fn wants(notify: Option<Notify>, kind: Kind) -> bool {
    match (notify, kind) {
        (None, Kind::Success) => false,
        (None, Kind::Failure | Kind::Delay) => true,
        (Some(n), Kind::Failure) => n.failure,
        (Some(n), Kind::Delay) => n.delay,
        (Some(n), Kind::Success) => n.success,
    }
}

/// Whether [`decide`] may name a notice for these results: only then does
/// it need each recipient's NOTIFY from the queue file.
pub(crate) fn may_notify(
    results: &[RecipientResult],
    arrival_ms: i64,
    queue: &sluice_config::Queue,
    now_ms: i64,
) -> bool {
    let age = now_ms - arrival_ms;
    let late = !queue.delay_warning.is_zero() && age >= ms(queue.delay_warning);
    late || age >= ms(queue.lifetime) || results.iter().any(|r| r.outcome != Outcome::Deferred)
}

/// Decides the fate of each result and the notices due.
pub(crate) fn decide(
    message: Message<'_>,
    inputs: &[Input],
    queue: &sluice_config::Queue,
    now_ms: i64,
) -> Decision {
    let age = now_ms - message.arrival_ms;
    let expired = age >= ms(queue.lifetime);
    let mut fates = Vec::with_capacity(inputs.len());
    for input in inputs {
        let r = &input.result;
        let error = format!("{} ({})", r.reply, r.dsn);
        let (state, next_attempt_ms) = match r.outcome {
            Outcome::Delivered => (State::Delivered, now_ms),
            Outcome::Bounced => (State::Bounced, now_ms),
            Outcome::Deferred if expired => (State::Bounced, now_ms),
            Outcome::Deferred => {
                let wait =
                    crate::retry::backoff(input.attempts + 1, queue.retry_min, queue.retry_max);
                (State::Deferred, now_ms + ms(wait))
            }
        };
        fates.push(Fate {
            index: r.index,
            state,
            next_attempt_ms,
            error,
            expired: expired && r.outcome == Outcome::Deferred,
        });
    }

    let with = |state: State, kind: Kind| -> Vec<u32> {
        inputs
            .iter()
            .zip(&fates)
            .filter(|(input, fate)| fate.state == state && wants(input.notify, kind))
            // RFC 3461 §5.2.2: a next hop that took NOTIFY owes the report.
            .filter(|(input, _)| kind != Kind::Success || input.result.handoff != Handoff::PassedOn)
            .map(|(_, fate)| fate.index)
            .collect()
    };
    let mut notices = Vec::new();
    let mut discarded = false;
    if message.sender.is_empty() {
        // A notice (or other mail from <>) that cannot be delivered: tell
        // the postmaster about every failed recipient, whatever its NOTIFY.
        let failed: Vec<u32> = fates
            .iter()
            .filter(|f| f.state == State::Bounced)
            .map(|f| f.index)
            .collect();
        if !failed.is_empty() {
            notices.push(NoticeDue {
                kind: Kind::Failure,
                audience: Audience::Postmaster,
                recipients: failed,
            });
        }
    } else if message.sender == message.double_bounce_sender {
        discarded = fates.iter().any(|f| f.state == State::Bounced);
    } else {
        let warn_after = queue.delay_warning;
        let late = !warn_after.is_zero() && age >= ms(warn_after);
        for (state, kind, due) in [
            (State::Bounced, Kind::Failure, true),
            (State::Deferred, Kind::Delay, late),
            (State::Delivered, Kind::Success, true),
        ] {
            let recipients = if due { with(state, kind) } else { Vec::new() };
            if !recipients.is_empty() {
                notices.push(NoticeDue {
                    kind,
                    audience: Audience::Sender,
                    recipients,
                });
            }
        }
    }
    Decision {
        fates,
        notices,
        discarded,
    }
}

/// A duration in milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    fn queue() -> sluice_config::Queue {
        sluice_config::Queue {
            retry_min: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            ..sluice_config::Queue::default()
        }
    }

    fn message(sender: &str) -> Message<'_> {
        Message {
            arrival_ms: 0,
            sender,
            double_bounce_sender: "double-bounce@mx.test",
        }
    }

    fn input(index: u32, outcome: Outcome, attempts: u32, notify: Option<Notify>) -> Input {
        let (dsn, reply) = match outcome {
            Outcome::Delivered => ("2.0.0", "250 ok"),
            Outcome::Deferred => ("4.2.0", "451 later"),
            Outcome::Bounced => ("5.1.1", "550 no such user"),
        };
        Input {
            result: RecipientResult {
                index,
                outcome,
                dsn: dsn.into(),
                reply: reply.into(),
                remote_mta: Some("mx.remote.test".into()),
                handoff: Handoff::Final,
            },
            attempts,
            notify,
        }
    }

    fn notify(success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify {
            success,
            failure,
            delay,
        })
    }

    const NEVER: Option<Notify> = Some(Notify {
        success: false,
        failure: false,
        delay: false,
    });

    fn states(d: &Decision) -> Vec<State> {
        d.fates.iter().map(|f| f.state).collect()
    }

    #[test]
    fn the_queue_file_is_needed_only_when_a_notice_may_be_due() {
        let q = queue();
        let deferred = [input(0, Outcome::Deferred, 0, None).result];
        assert!(!may_notify(&deferred, 0, &q, HOUR));
        assert!(may_notify(&deferred, 0, &q, 4 * HOUR));
        let never_warn = sluice_config::Queue {
            delay_warning: Duration::ZERO,
            ..queue()
        };
        assert!(!may_notify(&deferred, 0, &never_warn, 4 * HOUR));
        assert!(may_notify(&deferred, 0, &never_warn, 5 * DAY));
        for outcome in [Outcome::Delivered, Outcome::Bounced] {
            assert!(may_notify(&[input(0, outcome, 0, None).result], 0, &q, 0));
        }
    }

    #[test]
    fn delivered_is_done_and_reports_nothing_by_default() {
        let d = decide(
            message("s@x.test"),
            &[input(0, Outcome::Delivered, 3, None)],
            &queue(),
            HOUR,
        );
        assert_eq!(
            d.fates,
            [Fate {
                index: 0,
                state: State::Delivered,
                next_attempt_ms: HOUR,
                error: "250 ok (2.0.0)".into(),
                expired: false,
            }]
        );
        assert!(d.notices.is_empty());
        assert!(!d.discarded);
    }

    #[test]
    fn a_4xx_is_deferred_by_back_off_from_its_attempts() {
        let q = queue();
        for (attempts, wait_s) in [(0, 300), (1, 600), (3, 2400), (9, 3600)] {
            let d = decide(
                message("s@x.test"),
                &[input(2, Outcome::Deferred, attempts, None)],
                &q,
                HOUR,
            );
            assert_eq!(states(&d), [State::Deferred]);
            assert_eq!(d.fates[0].next_attempt_ms, HOUR + wait_s * 1000);
            assert_eq!(d.fates[0].error, "451 later (4.2.0)");
            assert!(!d.fates[0].expired);
            assert!(d.notices.is_empty(), "not late yet: {d:?}");
        }
    }

    #[test]
    fn a_5xx_bounces_with_a_failure_notice_to_the_sender() {
        let d = decide(
            message("s@x.test"),
            &[
                input(0, Outcome::Bounced, 0, None),
                input(1, Outcome::Delivered, 0, None),
                input(2, Outcome::Bounced, 0, notify(false, true, false)),
            ],
            &queue(),
            HOUR,
        );
        assert_eq!(
            states(&d),
            [State::Bounced, State::Delivered, State::Bounced]
        );
        assert_eq!(
            d.notices,
            [NoticeDue {
                kind: Kind::Failure,
                audience: Audience::Sender,
                recipients: vec![0, 2],
            }]
        );
    }

    #[test]
    fn deferred_past_the_lifetime_expires_into_a_bounce() {
        let q = queue();
        let d = decide(
            message("s@x.test"),
            &[
                input(0, Outcome::Deferred, 40, None),
                input(1, Outcome::Delivered, 40, None),
            ],
            &q,
            5 * DAY,
        );
        assert_eq!(states(&d), [State::Bounced, State::Delivered]);
        assert!(d.fates[0].expired);
        assert!(!d.fates[1].expired);
        assert_eq!(d.fates[0].next_attempt_ms, 5 * DAY);
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, Kind::Failure);
        assert_eq!(d.notices[0].recipients, [0]);
        // A millisecond earlier it was still a deferral (with a delay
        // notice: it is long past delay_warning).
        let d = decide(
            message("s@x.test"),
            &[input(0, Outcome::Deferred, 40, None)],
            &q,
            5 * DAY - 1,
        );
        assert_eq!(states(&d), [State::Deferred]);
        assert_eq!(d.notices[0].kind, Kind::Delay);
    }

    #[test]
    fn delay_notice_once_late_and_only_to_those_who_want_it() {
        let q = queue();
        let inputs = [
            input(0, Outcome::Deferred, 1, None),
            input(1, Outcome::Deferred, 1, notify(false, true, false)),
            input(2, Outcome::Deferred, 1, notify(true, true, true)),
        ];
        let early = decide(message("s@x.test"), &inputs, &q, 4 * HOUR - 1);
        assert!(early.notices.is_empty());
        let late = decide(message("s@x.test"), &inputs, &q, 4 * HOUR);
        assert_eq!(
            late.notices,
            [NoticeDue {
                kind: Kind::Delay,
                audience: Audience::Sender,
                recipients: vec![0, 2],
            }]
        );
        let never = sluice_config::Queue {
            delay_warning: Duration::ZERO,
            ..q
        };
        assert!(decide(message("s@x.test"), &inputs, &never, DAY)
            .notices
            .is_empty());
    }

    #[test]
    fn notify_flags_pick_each_notice() {
        // (notify, outcome) -> kinds of notice for that one recipient.
        let cases: [(Option<Notify>, Outcome, &[Kind]); 9] = [
            (None, Outcome::Delivered, &[]),
            (None, Outcome::Bounced, &[Kind::Failure]),
            (None, Outcome::Deferred, &[Kind::Delay]),
            (NEVER, Outcome::Delivered, &[]),
            (NEVER, Outcome::Bounced, &[]),
            (NEVER, Outcome::Deferred, &[]),
            (
                notify(true, false, false),
                Outcome::Delivered,
                &[Kind::Success],
            ),
            (notify(true, false, false), Outcome::Bounced, &[]),
            (
                notify(false, false, true),
                Outcome::Deferred,
                &[Kind::Delay],
            ),
        ];
        for (flags, outcome, kinds) in cases {
            let d = decide(
                message("s@x.test"),
                &[input(0, outcome, 0, flags)],
                &queue(),
                5 * HOUR,
            );
            let got: Vec<Kind> = d.notices.iter().map(|n| n.kind).collect();
            assert_eq!(got, kinds, "{flags:?} {outcome:?}");
            assert!(d.notices.iter().all(|n| n.audience == Audience::Sender));
        }
    }

    #[test]
    fn success_reports_follow_what_the_next_hop_took() {
        let success = notify(true, true, false);
        let with = |index, handoff| Input {
            result: RecipientResult {
                handoff,
                ..input(index, Outcome::Delivered, 0, success).result
            },
            ..input(index, Outcome::Delivered, 0, success)
        };
        let d = decide(
            message("s@x.test"),
            &[
                with(0, Handoff::PassedOn),
                with(1, Handoff::Relayed),
                with(2, Handoff::Final),
            ],
            &queue(),
            HOUR,
        );
        assert_eq!(
            d.notices,
            [NoticeDue {
                kind: Kind::Success,
                audience: Audience::Sender,
                recipients: vec![1, 2],
            }]
        );
        let d = decide(
            message("s@x.test"),
            &[with(0, Handoff::PassedOn)],
            &queue(),
            HOUR,
        );
        assert!(d.notices.is_empty(), "{d:?}");
        assert_eq!(states(&d), [State::Delivered]);
    }

    #[test]
    fn success_failure_and_delay_in_one_batch_are_three_notices() {
        let all = notify(true, true, true);
        let d = decide(
            message("s@x.test"),
            &[
                input(0, Outcome::Delivered, 0, all),
                input(1, Outcome::Bounced, 0, all),
                input(2, Outcome::Deferred, 0, all),
            ],
            &queue(),
            5 * HOUR,
        );
        let got: Vec<(Kind, Vec<u32>)> = d
            .notices
            .iter()
            .map(|n| (n.kind, n.recipients.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::Failure, vec![1]),
                (Kind::Delay, vec![2]),
                (Kind::Success, vec![0]),
            ]
        );
    }

    #[test]
    fn null_sender_is_never_notified_its_failures_go_to_the_postmaster() {
        let all = notify(true, true, true);
        let d = decide(
            message(""),
            &[
                input(0, Outcome::Delivered, 0, all),
                input(1, Outcome::Deferred, 0, all),
                input(2, Outcome::Bounced, 0, NEVER),
            ],
            &queue(),
            DAY,
        );
        assert_eq!(
            states(&d),
            [State::Delivered, State::Deferred, State::Bounced]
        );
        assert_eq!(
            d.notices,
            [NoticeDue {
                kind: Kind::Failure,
                audience: Audience::Postmaster,
                recipients: vec![2],
            }]
        );
        let d = decide(
            message(""),
            &[input(0, Outcome::Deferred, 0, all)],
            &queue(),
            DAY,
        );
        assert!(d.notices.is_empty(), "no delay notice about <>: {d:?}");
    }

    #[test]
    fn a_failed_postmaster_notice_is_discarded_not_reported() {
        let d = decide(
            message("double-bounce@mx.test"),
            &[input(0, Outcome::Bounced, 0, None)],
            &queue(),
            HOUR,
        );
        assert_eq!(states(&d), [State::Bounced]);
        assert!(d.notices.is_empty());
        assert!(d.discarded);
        let d = decide(
            message("double-bounce@mx.test"),
            &[input(0, Outcome::Deferred, 0, None)],
            &queue(),
            DAY,
        );
        assert!(d.notices.is_empty() && !d.discarded);
    }

    #[test]
    fn a_notice_that_cannot_be_queued_turns_bounces_into_deferrals() {
        let mut d = decide(
            message("s@x.test"),
            &[
                input(0, Outcome::Bounced, 0, None),
                input(1, Outcome::Delivered, 0, None),
            ],
            &queue(),
            HOUR,
        );
        d.notice_failed(HOUR, Duration::from_secs(300));
        assert_eq!(states(&d), [State::Deferred, State::Delivered]);
        assert_eq!(d.fates[0].next_attempt_ms, HOUR + 300_000);
        assert_eq!(d.fates[1].next_attempt_ms, HOUR);
    }
}
