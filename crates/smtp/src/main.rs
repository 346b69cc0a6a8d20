//! `sluice-smtp`: the Sluice outbound SMTP delivery agent.
//!
//! # Synopsis
//! `sluice-smtp [--config FILE] [--syslog]` — started by `sluice-master`
//! (`queue.smtp_agents` of them), never by hand.
//!
//! # Description
//! A long-lived agent. It connects to the queue manager on
//! `run_dir/delivery.sock` (retrying every 200 ms until the socket
//! answers), checks its `Hello` (protocol `sluice-delivery`, version 1),
//! announces itself `Ready` for the `Smtp` transport, then takes one job at
//! a time: a queue ID, a next hop and some recipients. For each job it
//! reads the queue file read-only, checks that every job recipient is the
//! file's recipient at that index, and delivers the message over SMTP with
//! the `sluice_proto::client` session (EHLO, falling back to HELO;
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and DSN when offered; the content
//! dot-stuffed on the wire). It answers with exactly one result per job
//! recipient: delivered (2xx after the content), deferred (4xx, timeouts,
//! connection failures, no route yet) or bounced (5xx).
//!
//! Next hops (RFC 5321 §5.1): a bare recipient domain or an unbracketed
//! route is looked up through `dns.nameservers` (or those of
//! `/etc/resolv.conf`): MX hosts in preference order, shuffled among equal
//! preferences, at most `smtp.max_hosts_per_attempt`, each with its AAAA
//! and A addresses; no MX means the domain's own addresses. `[host]:port`
//! and IP addresses are connected to as written (a bracketed name through
//! the same name servers, or the C library when none are configured). A
//! hop without a port uses `smtp.port`. Null MX (RFC 7505) bounces
//! `5.1.10`, NXDOMAIN bounces `5.1.2`, SERVFAIL and timeouts defer `4.4.3`,
//! and an MX list led by this host (`hostname`, or an address smtpd
//! listens on) bounces `5.4.6`: mail is never sent to ourselves. A host
//! that refuses the connection or greets with 4xx/5xx passes to the next.
//! If no address accepts a connection the recipients are deferred `4.4.1`
//! with no remote MTA, which tells the queue manager the hop is
//! unreachable.
//!
//! LMTP (RFC 2033): a route `lmtp:unix:/path` or `lmtp:[host]:port` is
//! spoken LMTP (LHLO, one reply per recipient after the content), e.g. to
//! a Dovecot mailbox server; its relay is `localhost[/path]` for a socket.
//!
//! STARTTLS (RFC 3207) with rustls, by `smtp.tls` or the next hop's entry
//! in `smtp.tls_policies`: `none`; `may` (the default: TLS when offered,
//! certificate not checked; a failed handshake is retried once in plain
//! text); `encrypt` (TLS or defer `4.7.4`); `verify` (TLS with a
//! certificate valid for the host name that chains to the system's trust
//! anchors or `smtp.tls_ca_file`, else defer `4.7.5`). The handshake is
//! bounded by `smtp.tls_timeout`.
//!
//! Connection reuse: a healthy connection is kept open after a job, up to
//! `smtp.reuse_max_messages` messages and `smtp.reuse_idle` without a
//! job; the next job for the same next hop goes over it after RSET. The
//! job's result tells the queue manager (`open_connection`), and
//! `Closed { next_hop }` when the agent lets it go.
//!
//! Timeouts: `smtp.connect_timeout` for each TCP connection,
//! `smtp.command_timeout` for every other step (greeting, each reply, each
//! content chunk), `smtp.tls_timeout` for a TLS handshake. EHLO uses
//! `smtp.helo_name`, else the host name.
//!
//! If the queue manager goes away (EOF, broken frame) the agent reconnects.
//! On SIGTERM or SIGINT it finishes and reports the job in progress, if
//! any, and exits 0.
//!
//! # Security
//! Runs as the unprivileged `user` (it drops privileges at start when run
//! as root). Server replies are hostile: they reach only the protocol
//! machine, which bounds them, and are passed through `printable` before
//! they are logged or reported. The queue file is opened read-only.
//!
//! # Diagnostics
//! One line per recipient on stderr or syslog (tag `sluice/smtp`):
//! `QUEUEID: to=<rcpt>, relay=host[ip]:port, delay=S, delays=a/b/c/d,
//! dsn=X.Y.Z, status=sent|deferred|bounced (reply or reason)`, where the
//! delays are: before the active queue, in it, connection set-up (name
//! resolution and TCP connect) and the SMTP conversation. One line per
//! SMTP session about TLS: `Verified|Untrusted TLS connection established
//! to host[ip]:port: TLSv1.3 with cipher ...`, or `host[ip]:port: plain
//! text session (no STARTTLS offered)` (or why else). Exit status 1
//! when the config cannot be read, `smtp.tls_ca_file` cannot be used, or
//! the queue manager speaks another protocol version.
//!
//! # Must never
//! Report a recipient delivered without the server's 2xx to the end of the
//! content, answer a job with other than one result per recipient, or exit
//! because of a bad job or a bad peer.
#![forbid(unsafe_code)]

mod agent;
mod connection;
mod delivery;
mod route;
mod tls;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use sluice_ipc::delivery::Transport;
use sluice_proto::client::Timeouts;

/// Command line of `sluice-smtp`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-smtp",
    version,
    about = "Sluice outbound SMTP delivery agent (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sluice_daemon::exit("sluice-smtp", run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let sluice_daemon::Started {
        config, hostname, ..
    } = sluice_daemon::start("smtp", &args.daemon)?;
    // Trust anchors are read while still privileged: a CA file may be
    // readable by root only.
    let tls_contexts = tls::Contexts::new(&config.smtp.tls_ca_file)?;
    sluice_daemon::drop_privileges(&config.user).context("dropping privileges")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let route = route::RouteContext {
        resolver: sluice_dns::Resolver::new(config.dns.nameservers.clone(), config.dns.timeout),
        system_hosts: config.dns.nameservers.is_empty(),
        port: config.smtp.port,
        max_hosts: config.smtp.max_hosts_per_attempt,
        me: route::Me {
            hostname: hostname.clone(),
            listen: config.smtpd.listen.clone(),
        },
    };
    let helo_name = if config.smtp.helo_name.is_empty() {
        hostname
    } else {
        config.smtp.helo_name.clone()
    };
    let settings = delivery::Settings {
        spool: sluice_spool::Spool::new(&config.spool_dir),
        helo_name,
        timeouts: Timeouts::uniform(config.smtp.command_timeout),
        connection: connection::Config {
            connect_timeout: config.smtp.connect_timeout,
            tls: tls_contexts,
            tls_timeout: config.smtp.tls_timeout,
            reuse_max_messages: config.smtp.reuse_max_messages,
        },
        smtp: config.smtp.clone(),
        route,
    };
    let mut agent = agent::Agent {
        settings: &settings,
        reuse_idle: config.smtp.reuse_idle,
        kept: None,
    };
    sluice_ipc::agent::serve(&config.run_dir, Transport::Smtp, &mut agent, &stop)?;
    Ok(())
}
