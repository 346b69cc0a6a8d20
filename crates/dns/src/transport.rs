//! The socket part: one query to one name server, over UDP, and again over
//! TCP when the UDP answer is truncated.
//!
//! # Must never
//! Wait without a deadline, or take a datagram from another address than
//! the server's (the UDP socket is connected, so the kernel filters).
//!
//! # Security
//! Replies that do not match the query (see [`crate::message::check_reply`])
//! are ignored on UDP and keep the wait going until the deadline; reads
//! are bounded by [`UDP_BUFFER`] and by the 16-bit TCP frame length.
//!
//! # Errors
//! A timeout, a refused port or any IO error is a `String` reason; the
//! resolver moves on to the next server.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use crate::message::{check_reply, Question, Reply};

/// Largest datagram read (the advertised EDNS size is smaller).
pub(crate) const UDP_BUFFER: usize = 4096;

/// Asks `server`; returns the checked answer.
pub(crate) fn exchange(
    server: SocketAddr,
    question: &Question,
    query: &[u8],
    timeout: Duration,
) -> Result<Message, String> {
    match exchange_udp(server, question, query, timeout)? {
        Reply::Answer(m) => Ok(*m),
        Reply::Truncated => {
            log::debug!(
                "{server}: truncated answer for {}, asking over TCP",
                question.name
            );
            match exchange_tcp(server, question, query, timeout)? {
                Reply::Answer(m) => Ok(*m),
                Reply::Truncated => Err("truncated answer over TCP".to_owned()),
            }
        }
    }
}

fn left(deadline: Instant) -> Option<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    (!d.is_zero()).then_some(d)
}

fn exchange_udp(
    server: SocketAddr,
    question: &Question,
    query: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    let deadline = Instant::now() + timeout;
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let io = |e: io::Error| format!("{server} (udp): {e}");
    let socket = UdpSocket::bind((local, 0)).map_err(io)?;
    socket.connect(server).map_err(io)?;
    socket.send(query).map_err(io)?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let Some(wait) = left(deadline) else {
            return Err(format!("{server} (udp): timed out"));
        };
        socket.set_read_timeout(Some(wait)).map_err(io)?;
        match socket.recv(&mut buf) {
            Ok(n) => match check_reply(question, &buf[..n]) {
                Ok(reply) => return Ok(reply),
                Err(why) => log::debug!("{server}: ignoring a reply: {}", why.0),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("{server} (udp): timed out"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
}

fn exchange_tcp(
    server: SocketAddr,
    question: &Question,
    query: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    let deadline = Instant::now() + timeout;
    let io = |e: io::Error| format!("{server} (tcp): {e}");
    let timed_out = || format!("{server} (tcp): timed out");
    let len = u16::try_from(query.len()).map_err(|_| "query too long".to_owned())?;
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(io)?;
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?))
        .map_err(io)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    stream.write_all(&frame).map_err(io)?;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), String> {
        let mut got = 0;
        while got < buf.len() {
            let wait = left(deadline).ok_or_else(timed_out)?;
            stream.set_read_timeout(Some(wait)).map_err(io)?;
            match stream.read(&mut buf[got..]) {
                Ok(0) => return Err(format!("{server} (tcp): connection closed")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out())
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    };
    let mut head = [0u8; 2];
    read_exact(&mut head)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(head))];
    read_exact(&mut body)?;
    check_reply(question, &body).map_err(|m| format!("{server} (tcp): {}", m.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{build_query, parse_name};
    use hickory_proto::op::{OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::net::TcpListener;

    /// The reply a server sends to `query`: with `id_delta` added to the ID,
    /// the TC bit, and one A record.
    fn reply_to(query: &[u8], id_delta: u16, truncated: bool) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::response(q.metadata.id.wrapping_add(id_delta), OpCode::Query);
        m.metadata.response_code = ResponseCode::NoError;
        m.metadata.truncation = truncated;
        let asked = q.queries[0].clone();
        m.add_query(Query::query(asked.name.clone(), asked.query_type));
        if !truncated {
            m.add_answer(Record::from_rdata(
                asked.name,
                60,
                RData::A(A::new(127, 0, 0, 9)),
            ));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn udp_ignores_mismatched_replies_and_truncation_moves_to_tcp() {
        // One port, both protocols: UDP answers truncated after a forged
        // reply; TCP answers in full.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(server).unwrap();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            udp.send_to(&reply_to(&buf[..n], 1, false), from).unwrap();
            udp.send_to(&reply_to(&buf[..n], 0, true), from).unwrap();
        });
        let tcp_thread = std::thread::spawn(move || {
            let (mut s, _) = tcp.accept().unwrap();
            let mut head = [0u8; 2];
            s.read_exact(&mut head).unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(head))];
            s.read_exact(&mut query).unwrap();
            let reply = reply_to(&query, 0, false);
            let mut frame = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
            frame.extend_from_slice(&reply);
            s.write_all(&frame).unwrap();
        });
        let (q, bytes) = build_query(&parse_name("big.test").unwrap(), RecordType::A).unwrap();
        let answer = exchange(server, &q, &bytes, Duration::from_secs(10)).unwrap();
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(answer.metadata.id, q.id);
        udp_thread.join().unwrap();
        tcp_thread.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_fails() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (q, bytes) = build_query(&parse_name("slow.test").unwrap(), RecordType::A).unwrap();
        let err = exchange(
            silent.local_addr().unwrap(),
            &q,
            &bytes,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.ends_with("(udp): timed out"), "{err}");
        drop(silent);
        // Nobody listens on a freshly closed port: refused (or timed out).
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = exchange(closed, &q, &bytes, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("(udp)"), "{err}");
    }
}
