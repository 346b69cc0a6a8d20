//! smtpd's operator log lines, from the session's events and the
//! connection's end, in the shapes pflogsumm and fail2ban read (made by
//! `sluice_log::line`, never formatted here).
//!
//! # Must never
//! Log peer text that has not passed `sluice_log::printable` (the line
//! builders do it).

use std::net::IpAddr;

use sluice_proto::server::{Event, Session};

/// One event of a session.
pub(crate) fn log_event(event: &Event, session: &Session, addr: IpAddr) {
    let line = |what: &str, stage: &str| sluice_log::line::after(what, stage, None, addr);
    match event {
        Event::Rejected {
            stage,
            reply,
            sender,
            recipient,
            helo,
        } => log::info!(
            "{}",
            sluice_log::line::reject(&sluice_log::line::Rejection {
                stage,
                hostname: None,
                addr,
                reply,
                sender: sender.as_deref(),
                recipient: recipient.as_deref(),
                protocol: session.protocol().keyword(),
                helo: helo.as_deref(),
            })
        ),
        Event::TimedOut { stage } => log::info!("{}", line("timeout", stage)),
        Event::TooManyErrors { stage } => log::warn!("{}", line("too many errors", stage)),
        Event::LineTooLong { stage } => log::warn!("{}", line("line too long", stage)),
        Event::BareNewline { stage } => log::warn!("{}", line("bare <CR> or <LF> received", stage)),
        Event::ImproperPipelining { after } => {
            log::info!("{}", line("improper command pipelining", after));
        }
    }
}

/// The end of a connection: "lost connection after STAGE" if the client
/// left first, then "disconnect from ... COMMAND STATS".
pub(crate) fn log_end(session: &Session, addr: IpAddr, lost: bool) {
    if lost && !session.is_closed() {
        log::info!(
            "{}",
            sluice_log::line::after("lost connection", session.stage(), None, addr)
        );
    }
    let counts: Vec<_> = session.command_stats().iter().collect();
    log::info!("{}", sluice_log::line::disconnect(None, addr, &counts));
}
