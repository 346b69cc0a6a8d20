//! The DNS protocol logic, without sockets: building a query, checking that
//! bytes from the network answer it, and reading the records the answer
//! holds for the question (following a bounded CNAME chain).
//!
//! # Must never
//! Accept an answer whose ID, direction, opcode or question differ from the
//! query's, follow more than [`MAX_CNAME`] aliases, or keep more than
//! [`MAX_RECORDS`] records of one answer.
//!
//! # Security
//! Answers are hostile: anyone who can reach the client's port can send
//! one. They are decoded by `hickory-proto` (bounded by the datagram or
//! TCP frame size) and then checked against the query before use.
//!
//! # Errors
//! A reply that does not match is a [`Mismatch`] (the transport ignores it
//! and keeps waiting); a server's error code is a [`Says`] for the caller.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// Aliases followed for one lookup, in one answer or over several.
pub(crate) const MAX_CNAME: usize = 8;
/// Records of one type kept from one answer.
pub(crate) const MAX_RECORDS: usize = 64;
/// The UDP payload size advertised with EDNS(0) (the DNS flag day value).
pub(crate) const UDP_PAYLOAD: u16 = 1232;

/// A query in flight: what an answer must match.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    /// The message ID.
    pub(crate) id: u16,
    /// The name asked about (absolute).
    pub(crate) name: Name,
    /// The type asked for.
    pub(crate) rtype: RecordType,
}

/// Why received bytes are not an answer to the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch(pub(crate) String);

/// A reply that matches the question.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The TC bit is set: ask again over TCP.
    Truncated,
    /// A whole answer.
    Answer(Box<Message>),
}

/// What an answer says about the question's name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Says {
    /// The records (at most [`MAX_RECORDS`]), after any aliases.
    Records(Vec<RData>),
    /// NXDOMAIN.
    NoSuchDomain,
    /// The name exists but has no records of the type.
    NoRecords,
    /// The name is an alias of this one, whose records the answer does not
    /// hold: ask again for it.
    Alias(Name, usize),
    /// SERVFAIL, REFUSED and any other error code, or a CNAME loop.
    Temporary(String),
}

/// Builds a recursive query for `name`/`rtype` with a random ID.
pub(crate) fn build_query(name: &Name, rtype: RecordType) -> Result<(Question, Vec<u8>), String> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    message.edns = Some(edns);
    let bytes = message
        .to_vec()
        .map_err(|e| format!("cannot encode a query for {name}: {e}"))?;
    Ok((
        Question {
            id: message.metadata.id,
            name: name.clone(),
            rtype,
        },
        bytes,
    ))
}

/// Checks that `bytes` answer `question`.
pub(crate) fn check_reply(question: &Question, bytes: &[u8]) -> Result<Reply, Mismatch> {
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        // A truncated answer may be cut inside a record: the header alone
        // decides, when its ID and flags say "response, truncated".
        Err(e) if is_raw_truncated(question.id, bytes) => {
            log::debug!("truncated answer that does not decode ({e}): retrying over TCP");
            return Ok(Reply::Truncated);
        }
        Err(e) => return Err(Mismatch(format!("undecodable reply: {e}"))),
    };
    let meta = &message.metadata;
    if meta.id != question.id {
        return Err(Mismatch(format!(
            "reply ID {} for query ID {}",
            meta.id, question.id
        )));
    }
    if meta.message_type != MessageType::Response || meta.op_code != OpCode::Query {
        return Err(Mismatch("not a response to a standard query".to_owned()));
    }
    match message.queries.as_slice() {
        [q] if q.name == question.name
            && q.query_type == question.rtype
            && q.query_class == DNSClass::IN => {}
        [] if meta.truncation => return Ok(Reply::Truncated),
        _ => return Err(Mismatch("reply to another question".to_owned())),
    }
    if meta.truncation {
        return Ok(Reply::Truncated);
    }
    Ok(Reply::Answer(Box::new(message)))
}

/// The header of `bytes` says: a response with this ID, truncated.
fn is_raw_truncated(id: u16, bytes: &[u8]) -> bool {
    match bytes {
        [hi, lo, flags, ..] if bytes.len() >= 12 => {
            u16::from_be_bytes([*hi, *lo]) == id && flags & 0x80 != 0 && flags & 0x02 != 0
        }
        _ => false,
    }
}

/// Reads the records for `name`/`rtype` from an answer, following aliases
/// (`followed` of them were already followed before this answer).
pub(crate) fn read_answer(
    message: &Message,
    name: &Name,
    rtype: RecordType,
    followed: usize,
) -> Says {
    match message.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Says::NoSuchDomain,
        other => return Says::Temporary(format!("server answered {other}")),
    }
    let mut owner = name.clone();
    let mut followed = followed;
    loop {
        let records: Vec<RData> = message
            .answers
            .iter()
            .filter(|r| r.name == owner && r.dns_class == DNSClass::IN)
            .filter(|r| r.data.record_type() == rtype)
            .take(MAX_RECORDS)
            .map(|r| r.data.clone())
            .collect();
        if !records.is_empty() {
            return Says::Records(records);
        }
        let alias = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == owner && r.dns_class == DNSClass::IN => {
                Some(target.0.clone())
            }
            _ => None,
        });
        match alias {
            Some(target) => {
                followed += 1;
                if followed > MAX_CNAME {
                    return Says::Temporary(format!(
                        "more than {MAX_CNAME} aliases (CNAME) from {name}"
                    ));
                }
                owner = target;
            }
            None if owner == *name => return Says::NoRecords,
            None => return Says::Alias(owner, followed),
        }
    }
}

/// The mail exchangers of MX records: (preference, exchange name without
/// the final dot, lower case). The root name stays `""`.
pub(crate) fn mx_records(records: &[RData]) -> Vec<(u16, String)> {
    records
        .iter()
        .filter_map(|r| match r {
            RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange))),
            _ => None,
        })
        .collect()
}

/// The addresses of A and AAAA records.
pub(crate) fn addresses(records: &[RData]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match r {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// A name as text: ASCII (IDNA), lower case, no final dot; `""` for the root.
pub(crate) fn name_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a domain or host name as an absolute DNS name.
pub(crate) fn parse_name(text: &str) -> Result<Name, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() {
        return Err("empty name".to_owned());
    }
    let mut name = Name::from_utf8(trimmed).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX};
    use hickory_proto::rr::Record;

    fn name(s: &str) -> Name {
        parse_name(s).unwrap()
    }

    fn answer_to(question: &Question, code: ResponseCode, answers: Vec<Record>) -> Message {
        let mut m = Message::response(question.id, OpCode::Query);
        m.metadata.response_code = code;
        m.add_query(Query::query(question.name.clone(), question.rtype));
        for a in answers {
            m.add_answer(a);
        }
        m
    }

    fn record(owner: &str, data: RData) -> Record {
        Record::from_rdata(name(owner), 300, data)
    }

    #[test]
    fn international_names_are_asked_in_their_a_labels() {
        assert_eq!(name_text(&name("Bücher.example.")), "xn--bcher-kva.example");
        assert_eq!(
            name_text(&name("mx.xn--bcher-kva.example")),
            "mx.xn--bcher-kva.example"
        );
        let (_, wire) = build_query(&name("bücher.example"), RecordType::MX).expect("a query");
        let needle = b"\x0dxn--bcher-kva\x07example\x00";
        assert!(
            wire.windows(needle.len()).any(|w| w == needle),
            "the question goes out in A-labels"
        );
    }

    #[test]
    fn a_query_asks_one_recursive_question_with_edns() {
        let (q, bytes) = build_query(&name("Example.Test"), RecordType::MX).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, q.id);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name, name("example.test"));
        assert_eq!(m.queries[0].query_type, RecordType::MX);
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(UDP_PAYLOAD));
    }

    #[test]
    fn replies_must_match_id_direction_and_question() {
        let (q, query_bytes) = build_query(&name("example.test"), RecordType::A).unwrap();
        let good = answer_to(&q, ResponseCode::NoError, vec![]);
        assert!(matches!(
            check_reply(&q, &good.to_vec().unwrap()),
            Ok(Reply::Answer(_))
        ));
        // The question as written by a server with other letter case.
        let mut cased = good.clone();
        cased.queries[0].name = name("EXAMPLE.test");
        assert!(check_reply(&q, &cased.to_vec().unwrap()).is_ok());

        let mut other_id = good.clone();
        other_id.metadata.id = q.id.wrapping_add(1);
        let mut other_name = good.clone();
        other_name.queries[0].name = name("evil.test");
        let mut other_type = good.clone();
        other_type.queries[0].query_type = RecordType::AAAA;
        let mut two = good.clone();
        two.add_query(Query::query(name("x.test"), RecordType::A));
        for bad in [other_id, other_name, other_type, two] {
            assert!(check_reply(&q, &bad.to_vec().unwrap()).is_err(), "{bad:?}");
        }
        // Our own query echoed back is not a response.
        assert!(check_reply(&q, &query_bytes).is_err());
        for junk in [&b""[..], b"\x00\x01", &[0xff; 40]] {
            assert!(check_reply(&q, junk).is_err());
        }
    }

    #[test]
    fn truncated_replies_ask_for_tcp_even_when_cut_short() {
        let (q, _) = build_query(&name("big.test"), RecordType::MX).unwrap();
        let mut m = answer_to(&q, ResponseCode::NoError, vec![]);
        m.metadata.truncation = true;
        let bytes = m.to_vec().unwrap();
        assert!(matches!(check_reply(&q, &bytes), Ok(Reply::Truncated)));
        // Header says 1 answer, but the bytes stop inside the question.
        let mut cut = bytes[..14].to_vec();
        cut[7] = 1;
        assert!(matches!(check_reply(&q, &cut), Ok(Reply::Truncated)));
        // A cut reply with another ID is ignored.
        cut[0] ^= 0xff;
        assert!(check_reply(&q, &cut).is_err());
    }

    #[test]
    fn answers_are_read_through_a_bounded_cname_chain() {
        let (q, _) = build_query(&name("www.example.test"), RecordType::A).unwrap();
        let a = |o: &str, ip: [u8; 4]| record(o, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])));
        let cname = |o: &str, t: &str| record(o, RData::CNAME(CNAME(name(t))));

        let direct = answer_to(
            &q,
            ResponseCode::NoError,
            vec![a("www.example.test", [127, 0, 0, 2])],
        );
        let got = read_answer(&direct, &q.name, RecordType::A, 0);
        assert_eq!(got, Says::Records(vec![RData::A(A::new(127, 0, 0, 2))]));
        assert_eq!(
            addresses(&[
                RData::A(A::new(127, 0, 0, 2)),
                RData::AAAA(AAAA::new(0, 0, 0, 0, 0, 0, 0, 1))
            ]),
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );

        let chained = answer_to(
            &q,
            ResponseCode::NoError,
            vec![
                cname("www.example.test", "host.example.test"),
                a("unrelated.test", [10, 0, 0, 1]),
                a("host.example.test", [127, 0, 0, 3]),
            ],
        );
        assert_eq!(
            read_answer(&chained, &q.name, RecordType::A, 0),
            Says::Records(vec![RData::A(A::new(127, 0, 0, 3))])
        );

        let dangling = answer_to(
            &q,
            ResponseCode::NoError,
            vec![cname("www.example.test", "far.test")],
        );
        assert_eq!(
            read_answer(&dangling, &q.name, RecordType::A, 0),
            Says::Alias(name("far.test"), 1)
        );

        let looped = answer_to(
            &q,
            ResponseCode::NoError,
            vec![
                cname("www.example.test", "b.test"),
                cname("b.test", "www.example.test"),
            ],
        );
        assert!(matches!(
            read_answer(&looped, &q.name, RecordType::A, 0),
            Says::Temporary(t) if t.contains("aliases")
        ));
        // Records of another type at the name are "no records".
        let other = answer_to(
            &q,
            ResponseCode::NoError,
            vec![record(
                "www.example.test",
                RData::MX(MX::new(1, name("x.test"))),
            )],
        );
        assert_eq!(
            read_answer(&other, &q.name, RecordType::A, 0),
            Says::NoRecords
        );
    }

    #[test]
    fn response_codes_decide_before_records() {
        let (q, _) = build_query(&name("gone.test"), RecordType::MX).unwrap();
        let nx = answer_to(&q, ResponseCode::NXDomain, vec![]);
        assert_eq!(
            read_answer(&nx, &q.name, RecordType::MX, 0),
            Says::NoSuchDomain
        );
        for code in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
        ] {
            let m = answer_to(&q, code, vec![]);
            assert!(matches!(
                read_answer(&m, &q.name, RecordType::MX, 0),
                Says::Temporary(_)
            ));
        }
    }

    #[test]
    fn mx_records_read_as_preference_and_lower_case_name() {
        let records = vec![
            RData::MX(MX::new(20, name("MX2.Example.Test"))),
            RData::MX(MX::new(0, Name::root())),
        ];
        assert_eq!(
            mx_records(&records),
            vec![(20, "mx2.example.test".to_owned()), (0, String::new())]
        );
        assert!(parse_name("").is_err());
        assert!(parse_name(".").is_err());
        assert!(parse_name(&"a".repeat(64)).is_err());
        assert_eq!(
            name_text(&parse_name("b\u{fc}cher.test.").unwrap()),
            "xn--bcher-kva.test"
        );
    }
}
