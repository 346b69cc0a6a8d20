//! The event loop: accepts connections, moves bytes between sockets and
//! session machines, hands each ask of a session to `routing` (which sends
//! it to its answerer and routes the answer back by (connection, ask id)),
//! runs the timers of sessions, connections and asks, enforces the
//! per-process connection cap and drains on SIGTERM.
//!
//! # Must never
//! Wait on a client, another process or NSS (every socket is non-blocking;
//! lookups and fsyncs run on their own threads), or buffer without bound
//! for a client that does not read its replies.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_config::Config;
use sluice_proto::server::Output;
use sluice_spool::Spool;

use crate::anvil::Anvil;
use crate::committer::Committer;
use crate::connection::{self, Connection, Read};
use crate::qmgr::Qmgr;
use crate::recipients::Recipients;
use crate::{events, settings};

mod routing;

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const ANVIL: Token = Token(2);
const FIRST_LISTENER: usize = 3;
const FIRST_CONNECTION: usize = 1 << 16;
const READ_CHUNK: usize = 64 * 1024;

/// The running server.
pub(crate) struct Server {
    poll: Poll,
    signals: Signals,
    listeners: Vec<TcpListener>,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    session_config: Arc<sluice_proto::server::Config>,
    config: Config,
    hostname: String,
    committer: Committer,
    recipients: Recipients,
    anvil: Anvil,
    qmgr: Qmgr,
    /// Set on SIGTERM: when to give up on sessions still running.
    stopping: Option<Instant>,
    read_buf: Vec<u8>,
}

impl Server {
    pub(crate) fn new(
        config: Config,
        hostname: String,
        listeners: Vec<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(FIRST_LISTENER + i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let directory =
            sluice_mailbox::Directory::new(sluice_mailbox::Settings::from_config(&config));
        Ok(Server {
            poll,
            signals,
            listeners: mio_listeners,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            session_config: Arc::new(settings::session_config(&config, &hostname)),
            committer: Committer::start(
                Spool::new(&config.spool_dir),
                sluice_cleanup::Settings::from_config(&config, &hostname),
                Arc::clone(&waker),
            )?,
            recipients: Recipients::start(directory, waker)?,
            anvil: Anvil::new(
                config.run_dir.join(sluice_ipc::anvil::SOCKET),
                ANVIL,
                &config.smtpd,
                &hostname,
            ),
            qmgr: Qmgr::new(&config.run_dir),
            config,
            hostname,
            stopping: None,
            read_buf: vec![0; READ_CHUNK],
        })
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.stopping {
                if self.connections.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "stop timeout: dropping {} session(s) still running",
                        self.connections.len()
                    );
                    return Ok(());
                }
            }
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.handle_signals(),
                    WAKER => self.answered(),
                    ANVIL => {
                        for (token, opinion) in self.anvil.results(self.poll.registry()) {
                            self.looked_up(token, opinion);
                        }
                    }
                    Token(t) if (FIRST_LISTENER..FIRST_CONNECTION).contains(&t) => {
                        self.accept(t - FIRST_LISTENER);
                    }
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_readable() {
                            self.read(token);
                        }
                    }
                }
            }
            self.expire(Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.connections
            .values()
            .flat_map(|c| [c.session.poll_timeout(), Some(c.drop_at)])
            .flatten()
            .chain(self.committer.asks.next_deadline())
            .chain(self.recipients.asks.next_deadline())
            .chain(self.anvil.asks.next_deadline())
            .chain(self.stopping)
            .min()
    }

    fn handle_signals(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            match signal {
                SIGTERM | SIGINT if self.stopping.is_none() => self.begin_stop(),
                // The master replaces daemons on reload; nothing to re-read here.
                _ => {}
            }
        }
    }

    fn begin_stop(&mut self) {
        let now = Instant::now();
        self.stopping = Some(now + self.config.smtpd.stop_timeout);
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let tokens: Vec<Token> = self.connections.keys().copied().collect();
        log::info!("stopping: {} session(s) in flight", tokens.len());
        for token in tokens {
            if let Some(c) = self.connections.get_mut(&token) {
                c.session.handle_shutdown(now);
            }
            self.drive(token);
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            if self.connections.len() >= self.config.smtpd.max_connections {
                connection::refuse(&mut stream, peer.ip(), &self.hostname);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONNECTION);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("register: {e}");
                continue;
            }
            let c = Connection::accept(stream, peer, &self.config, &self.session_config);
            self.connections.insert(token, c);
            self.drive(token);
        }
    }

    fn read(&mut self, token: Token) {
        while let Some(c) = self.connections.get_mut(&token) {
            match c.read(&mut self.read_buf, Instant::now()) {
                Read::Fed => self.drive(token),
                Read::Idle => break,
            }
        }
        self.finish_if_done(token);
    }

    /// Takes every output of the machine: replies to the out buffer, asks
    /// to their answerers, log events to the log.
    fn drive(&mut self, token: Token) {
        loop {
            let Some(c) = self.connections.get_mut(&token) else {
                return;
            };
            let Some(output) = c.session.poll_output() else {
                break;
            };
            match output {
                Output::Send(bytes) => c.out.extend_from_slice(&bytes),
                Output::Log(event) => events::log_event(&event, &c.session, c.peer.ip()),
                Output::Close => c.close(Instant::now(), self.config.smtpd.command_timeout),
                Output::Ask(ask) => self.ask(token, ask),
            }
        }
        self.flush(token);
    }

    fn flush(&mut self, token: Token) {
        let Some(c) = self.connections.get_mut(&token) else {
            return;
        };
        let resume = c.flush();
        self.finish_if_done(token);
        if resume {
            // Reading stopped at the high-water mark; the readiness event
            // was consumed then, so read again now.
            self.read(token);
        }
    }

    fn finish_if_done(&mut self, token: Token) {
        if !self
            .connections
            .get(&token)
            .is_some_and(Connection::is_done)
        {
            return;
        }
        if let Some(mut c) = self.connections.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.committer.asks.close(token);
            self.recipients.asks.close(token);
            self.anvil.release(self.poll.registry(), token);
            events::log_end(&c.session, c.peer.ip(), c.eof);
        }
    }

    fn expire(&mut self, now: Instant) {
        // Every connection has a deadline, in every state: past it, it is
        // dropped (unsent replies and all).
        let gone: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.drop_at <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in gone {
            if let Some(c) = self.connections.get_mut(&token) {
                c.eof = true;
            }
            self.finish_if_done(token);
        }
        let due: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            if let Some(c) = self.connections.get_mut(&token) {
                c.session.handle_timeout(now);
            }
            self.drive(token);
        }
        self.expire_asks(now);
    }
}
