//! Tests of [`crate::parse`] and [`crate::load`]: defaults, the shipped
//! configs, and that every error names the file, the line and the key.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

const FILE: &str = "/etc/sluice/sluice.ron";

fn ok(text: &str) -> Config {
    match parse(text, Path::new(FILE)) {
        Ok(config) => config,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// Parses `text`, expects a key error, checks its Display shape and returns
/// (line, key, message).
fn key_error(text: &str) -> (usize, String, String) {
    match parse(text, Path::new(FILE)) {
        Err(e @ Error::Key { .. }) => {
            let shown = e.to_string();
            let Error::Key {
                path,
                line,
                key,
                message,
            } = e
            else {
                unreachable!("matched above")
            };
            assert_eq!(path, Path::new(FILE));
            assert_eq!(shown, format!("{FILE}:{line}: key {key}: {message}"));
            (line, key, message)
        }
        other => panic!("expected a key error, got {other:?}\n{text}"),
    }
}

#[test]
fn empty_parens_is_the_default_config() {
    assert_eq!(ok("()"), Config::default());
    assert_eq!(ok("  // nothing set\n(\n)\n"), Config::default());
    assert_eq!(ok("Config()"), Config::default());
}

#[test]
fn a_three_line_file_works() {
    let config = ok("(\n    hostname: \"mx.example\", local_domains: [\"example.org\"],\n)\n");
    assert_eq!(
        config,
        Config {
            hostname: "mx.example".to_owned(),
            local_domains: vec!["example.org".to_owned()],
            ..Config::default()
        }
    );
}

#[test]
fn the_shipped_default_config_shows_the_defaults() {
    assert_eq!(
        ok(include_str!("../../../etc/sluice.ron")),
        Config::default()
    );
}

#[test]
fn the_shipped_dev_config_is_a_loopback_demo() {
    let config = ok(include_str!("../../../etc/dev.ron"));
    assert_eq!(
        config.smtpd.listen,
        vec![SocketAddr::from(([127, 0, 0, 1], 2525))]
    );
    assert_eq!(config.spool_dir, Path::new("dev-spool/spool"));
    assert_eq!(config.run_dir, Path::new("dev-spool/run"));
    assert_eq!(config.local_domains, ["example.test"]);
    assert_eq!(config.relay_domains, ["relay.test"]);
    // Nothing changes user, even when root starts it.
    let mut config = config;
    config.resolve_own_user("alice");
    assert_eq!(config.user, "alice");
    assert_eq!(config.local.virtual_owner, "alice");
}

#[test]
fn an_empty_user_is_the_own_user_and_named_users_stay() {
    let mut config = ok("(user: \"\", local: (virtual_owner: \"vmail2\"))");
    config.resolve_own_user("root");
    assert_eq!(config.user, "root");
    assert_eq!(config.local.virtual_owner, "vmail2");
    // command_user runs commands from the aliases file: never implied.
    let (_, key, _) = key_error("(local: (command_user: \"\"))");
    assert_eq!(key, "local.command_user");
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.spool_dir, Path::new("/var/spool/sluice"));
    assert_eq!(c.smtpd.listen.len(), 2);
    assert_eq!(c.smtpd.listen[1].to_string(), "[::]:25");
    assert_eq!(c.smtpd.trusted_networks[1].to_string(), "::1/128");
    assert_eq!(c.smtpd.command_timeout, Duration::from_secs(300));
    assert_eq!(c.smtp.tls, TlsPolicy::May);
    assert_eq!(c.queue.lifetime, Duration::from_secs(5 * 86400));
    assert_eq!(c.local.mailbox, "~/Maildir/");
    assert_eq!(c.log.tag_prefix, "sluice");
}

#[test]
fn a_file_with_every_key_reads_every_value() {
    let text = r#"(
    hostname: "MX1.example.org",
    spool_dir: "/srv/spool",
    run_dir: "/srv/run",
    daemon_dir: "/usr/lib/sluice",
    user: "mail",
    smtpd: (
        listen: ["127.0.0.1:0", "[::1]:2525"],
        processes: 3,
        trusted_networks: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
        max_message_size: 1000000,
        max_recipients: 50,
        max_line_length: 1000,
        max_errors: 5,
        max_connections: 10,
        command_timeout: "1m",
        data_timeout: "2m",
        session_timeout: "1h",
        bare_newline: "normalize",
        vrfy: false,
        expn: true,
        stop_timeout: "0",
    ),
    local_domains: ["Example.ORG.", ".example.org"],
    relay_domains: ["partner.example"],
    routes: {
        "partner.example": "[10.0.0.5]:25",
        "Lmtp.Example": "lmtp:unix:/run/dovecot/lmtp",
        "*": "smarthost.example:587",
    },
    dns: ( nameservers: ["127.0.0.1:5353", "::1"], timeout: "2s" ),
    smtp: (
        port: 2526,
        tls: "verify",
        connect_timeout: "10s",
        command_timeout: "1m30s",
        helo_name: "out.example.org",
        max_hosts_per_attempt: 2,
        reuse_max_messages: 1,
        reuse_idle: "0",
    ),
    queue: (
        retry_min: "1s",
        retry_max: "10s",
        lifetime: "1w",
        delay_warning: "0",
        max_concurrency_per_destination: 1,
        max_concurrency: 2,
        smtp_agents: 1,
        local_agents: 1,
    ),
    local: ( aliases: "aliases", mailbox: "~/Mailbox", recipient_delimiter: "+-" ),
    log: ( syslog_socket: "/tmp/log", tag_prefix: "mx" ),
)"#;
    let c = ok(text);
    assert_eq!(c.hostname, "MX1.example.org");
    assert_eq!(c.hostname_or("system"), "MX1.example.org");
    assert_eq!(Config::default().hostname_or("system"), "system");
    assert_eq!(c.daemon_dir, Path::new("/usr/lib/sluice"));
    assert_eq!(c.user, "mail");
    assert_eq!(c.smtpd.listen[0].port(), 0);
    assert_eq!(c.smtpd.processes, 3);
    assert!(c.smtpd.trusted_networks[1].contains("192.0.2.7".parse().expect("ip")));
    assert!(!c.smtpd.trusted_networks[1].contains("192.0.2.8".parse().expect("ip")));
    assert_eq!(c.smtpd.max_line_length, 1000);
    assert_eq!(c.smtpd.bare_newline, BareNewline::Normalize);
    assert!(!c.smtpd.vrfy && c.smtpd.expn);
    assert_eq!(c.smtpd.stop_timeout, Duration::ZERO);
    assert_eq!(c.local_domains, ["example.org", ".example.org"]);
    assert_eq!(
        c.routes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["*", "lmtp.example", "partner.example"]
    );
    assert_eq!(
        c.routes["partner.example"],
        NextHop::Smtp {
            host: "10.0.0.5".into(),
            port: 25,
            mx_lookup: false
        }
    );
    assert_eq!(
        c.routes["*"],
        NextHop::Smtp {
            host: "smarthost.example".into(),
            port: 587,
            mx_lookup: true
        }
    );
    assert_eq!(
        c.dns.nameservers[1],
        SocketAddr::from((IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 53))
    );
    assert_eq!(c.dns.timeout, Duration::from_secs(2));
    assert_eq!(c.smtp.tls, TlsPolicy::Verify);
    assert_eq!(c.smtp.command_timeout, Duration::from_secs(90));
    assert_eq!(c.queue.lifetime, Duration::from_secs(7 * 86400));
    assert_eq!(c.queue.delay_warning, Duration::ZERO);
    assert_eq!(c.local.recipient_delimiter, "+-");
    assert_eq!(c.log.syslog_socket, Path::new("/tmp/log"));
    // And it prints back to itself.
    assert_eq!(ok(&c.to_ron_pretty()), c);
}

#[test]
fn unknown_top_level_key_names_line_and_key() {
    let (line, key, message) = key_error("(\n    hostname: \"mx\",\n    hostnme: \"x\",\n)");
    assert_eq!((line, key.as_str()), (3, "hostnme"));
    assert!(message.contains("unknown key"), "{message}");
    assert!(
        message.contains("hostname"),
        "lists the known keys: {message}"
    );
}

#[test]
fn unknown_nested_key_names_line_and_dotted_key() {
    let text =
        "(\n    smtpd: (\n        max_recipients: 5,\n\n        max_mesage_size: 10,\n    ),\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (5, "smtpd.max_mesage_size"));
    assert!(message.contains("max_message_size"), "{message}");
}

#[test]
fn bad_socket_address_names_the_list_element() {
    let text =
        "(\n  smtpd: (\n    listen: [\n      \"0.0.0.0:25\",\n      \"0.0.0.0\",\n    ],\n  ),\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (5, "smtpd.listen[1]"));
    assert!(
        message.contains("invalid socket address \"0.0.0.0\""),
        "{message}"
    );
    let (line, key, _) = key_error("(\n dns: ( nameservers: [\"ns1.example\"] ),\n)");
    assert_eq!((line, key.as_str()), (2, "dns.nameservers[0]"));
}

#[test]
fn bad_cidr_ranges_name_the_element_and_reason() {
    let text = "(\n    smtpd: (\n        trusted_networks: [\n            \"127.0.0.0/8\",\n            \"10.0.0.0/33\",\n        ],\n    ),\n)";
    let err = parse(text, Path::new(FILE)).expect_err("bad prefix");
    assert_eq!(
        err.to_string(),
        "/etc/sluice/sluice.ron:5: key smtpd.trusted_networks[1]: invalid CIDR range \"10.0.0.0/33\": prefix length over 32"
    );
    for (range, why) in [
        ("10.0.0.1/8", "host bits set"),
        ("garbage", "is not an IP address"),
        ("10.0.0.0/eight", "is not a number"),
        ("::/200", "prefix length over 128"),
    ] {
        let text = format!("(smtpd: (\ntrusted_networks: [\n\"::1\", \"{range}\"]))");
        let (line, key, message) = key_error(&text);
        assert_eq!(
            (line, key.as_str()),
            (3, "smtpd.trusted_networks[1]"),
            "{range}"
        );
        assert!(message.contains(why), "{range}: {message}");
    }
}

#[test]
fn bad_duration_names_line_and_key() {
    let text = "(\n    queue: (\n        retry_min: \"5 minutes\",\n    ),\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (3, "queue.retry_min"));
    assert!(
        message.starts_with("invalid duration \"5 minutes\""),
        "{message}"
    );
    for bad in ["", "-1s", "10", "1d1w", "99999999999999999999w"] {
        let (line, key, _) = key_error(&format!("(\nsmtpd: (\nstop_timeout: \"{bad}\"))"));
        assert_eq!((line, key.as_str()), (3, "smtpd.stop_timeout"), "{bad:?}");
    }
    let (line, key, _) = key_error("(\nsmtpd: (\ncommand_timeout: 300))");
    assert_eq!((line, key.as_str()), (3, "smtpd.command_timeout"));
}

#[test]
fn bad_domains_name_the_element() {
    let text = "(\n    local_domains: [\"example.org\",\n        \"exa mple.org\"],\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (3, "local_domains[1]"));
    assert!(
        message.contains("invalid domain \"exa mple.org\""),
        "{message}"
    );
    let (line, key, _) = key_error("(\n\n relay_domains: [\"a..b\"])");
    assert_eq!((line, key.as_str()), (3, "relay_domains[0]"));
    let (line, key, message) =
        key_error("(\n local_domains: [\"a.example\"],\n relay_domains: [\"A.example.\"])");
    assert_eq!((line, key.as_str()), (3, "relay_domains[0]"));
    assert!(message.contains("also in local_domains"), "{message}");
    let (line, key, _) = key_error("(\nhostname: \"mx_1.example\")");
    assert_eq!((line, key.as_str()), (2, "hostname"));
}

#[test]
fn bad_routes_name_the_route() {
    let text = "(\n    routes: {\n        \"ok.example\": \"[10.0.0.5]:25\",\n        \"partner.example\": \"[10.0.0.5:25\",\n    },\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (4, "routes[\"partner.example\"]"));
    assert!(
        message.starts_with("invalid route \"[10.0.0.5:25\""),
        "{message}"
    );
    let text = "(\n    routes: {\n        \"*\": \"smarthost:0\",\n    },\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (3, "routes[\"*\"]"));
    assert!(message.contains("bad port"), "{message}");
    let (line, key, message) = key_error("(\n routes: {\n  \"local\": 5 })");
    assert_eq!((line, key.as_str()), (3, "routes[\"local\"]"));
    assert_eq!(message, "expected string");
    let text = "(\n    routes: {\n        \"bad domain\": \"smarthost\",\n    },\n)";
    let (line, key, message) = key_error(text);
    assert_eq!((line, key.as_str()), (3, "routes[\"bad domain\"]"));
    assert!(message.contains("invalid domain"), "{message}");
    let text = "(\n routes: {\n \"Example.org\": \"a\",\n \"example.org.\": \"b\",\n },\n)";
    let (line, key, message) = key_error(text);
    assert_eq!(line, 4, "{key}: {message}");
    assert!(message.contains("already given"), "{message}");
}

#[test]
fn a_map_key_written_twice_is_an_error() {
    let text = "(\n routes: {\n  \"a.example\": \"x\",\n  \"a.example\": \"y\",\n },\n)";
    let (line, key, message) = key_error(text);
    assert_eq!(
        (line, key.as_str(), message.as_str()),
        (4, "routes[\"a.example\"]", "written twice")
    );
    let text = "(\n smtp: ( port: 25,\n  port: 26 ),\n)";
    let (line, key, message) = key_error(text);
    assert_eq!(
        (line, key.as_str(), message.as_str()),
        (3, "smtp.port", "written twice")
    );
}

#[test]
fn wrong_types_and_keywords_name_the_key() {
    let (line, key, _) = key_error("(\n smtpd: (\n  processes: \"two\"))");
    assert_eq!((line, key.as_str()), (3, "smtpd.processes"));
    let (line, key, _) = key_error("(\n smtp: (\n  port: 70000))");
    assert_eq!((line, key.as_str()), (3, "smtp.port"));
    let (line, key, message) = key_error("(\n smtp: (\n  tls: \"maybe\"))");
    assert_eq!((line, key.as_str()), (3, "smtp.tls"));
    assert!(
        message.contains("\"none\", \"may\", \"encrypt\", \"verify\""),
        "{message}"
    );
    let (line, key, _) = key_error("(\n\n smtpd: ( bare_newline: \"fix\" ))");
    assert_eq!((line, key.as_str()), (3, "smtpd.bare_newline"));
    let (line, key, _) = key_error("(\nsmtpd: [1])");
    assert_eq!((line, key.as_str()), (2, "smtpd"));
}

#[test]
fn checks_across_keys_blame_a_key_the_file_writes() {
    // retry_min is written, retry_max is the default 1h.
    let (line, key, message) =
        key_error("(\n queue: (\n  lifetime: \"1d\",\n  retry_min: \"2h\",\n ),\n)");
    assert_eq!((line, key.as_str()), (4, "queue.retry_min"));
    assert_eq!(message, "retry_min (2h) is longer than retry_max (1h)");
    // Only retry_max is written: blame it.
    let (line, key, _) = key_error("(\n queue: (\n\n  retry_max: \"1m\",\n ),\n)");
    assert_eq!((line, key.as_str()), (4, "queue.retry_max"));
    let (line, key, message) = key_error("(\n smtpd: (\n  listen: [],\n ),\n)");
    assert_eq!((line, key.as_str()), (3, "smtpd.listen"));
    assert!(message.contains("at least one"), "{message}");
    let (line, key, _) = key_error("(\n smtpd: ( processes: 0 ))");
    assert_eq!((line, key.as_str()), (2, "smtpd.processes"));
    let (line, key, _) = key_error("(\n\n\n spool_dir: \"\")");
    assert_eq!((line, key.as_str()), (4, "spool_dir"));
    let (line, key, _) = key_error("(\n smtpd: ( max_line_length: 999 ))");
    assert_eq!((line, key.as_str()), (2, "smtpd.max_line_length"));
    let (line, key, _) = key_error("(\n local: ( recipient_delimiter: \"a\" ))");
    assert_eq!((line, key.as_str()), (2, "local.recipient_delimiter"));
    let (line, key, _) = key_error("(\n dns: (\n timeout: \"0\" ))");
    assert_eq!((line, key.as_str()), (3, "dns.timeout"));
}

#[test]
fn syntax_errors_give_line_and_column() {
    let text = "(\n    hostname: \"mx\"\n    spool_dir: \"/x\",\n)";
    match parse(text, Path::new("cfg.ron")) {
        Err(Error::Syntax {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, Path::new("cfg.ron"));
            assert_eq!(line, 3, "{message}");
            assert_eq!(column, 5, "{message}");
            let shown = parse(text, Path::new("cfg.ron"))
                .expect_err("same")
                .to_string();
            assert_eq!(shown, format!("cfg.ron:3:5: {message}"));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let empty = parse(" \n", Path::new(FILE)).expect_err("empty");
    assert_eq!(
        empty.to_string(),
        format!("{FILE}:1:1: the file is empty (write `()` for all the defaults)")
    );
    let wrong = parse(
        "(\n hostname: \"mx\"\n spool_dir: \"/x\",\n)",
        Path::new("x.ron"),
    );
    assert_eq!(
        wrong.expect_err("comma").to_string(),
        "x.ron:3:2: expected comma"
    );
    for (text, line) in [
        ("", 1),
        ("5", 1),
        ("(\n hostname: \"mx\",\n", 3),
        ("(\n smtpd: ( listen: [\"[::]:25\" \"[::]:26\"] ))", 2),
        ("()\n()", 2),
        ("(\n hostname: \"unterminated\n)", 2),
    ] {
        match parse(text, Path::new(FILE)) {
            Err(Error::Syntax { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn domains_are_lower_cased_without_the_root_dot() {
    let c = ok("(local_domains: [\"Example.ORG.\"], relay_domains: [\".Partner.Example\"])");
    assert_eq!(c.local_domains, ["example.org"]);
    assert_eq!(c.relay_domains, [".partner.example"]);
}

#[test]
fn load_reads_the_file_and_names_it_on_failure() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sluice.ron");
    assert_eq!(
        load(&path).expect("shipped config loads"),
        Config::default()
    );
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-config.ron");
    match load(&missing) {
        Err(e @ Error::Io { .. }) => {
            assert!(
                e.to_string()
                    .starts_with(&format!("{}: ", missing.display())),
                "{e}"
            );
        }
        other => panic!("expected an IO error, got {other:?}"),
    }
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000).prop_map(Duration::from_secs),
        (0u64..10_000_000).prop_map(Duration::from_millis),
    ]
}

fn nonzero_duration() -> impl Strategy<Value = Duration> {
    (1u64..10_000_000).prop_map(Duration::from_millis)
}

fn any_domain() -> impl Strategy<Value = String> {
    "\\.?[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z]{2,6}){0,2}"
}

fn any_host() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}(\\.[a-z]{2,6}){0,2}"
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ]
}

fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any_ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn any_cidr() -> impl Strategy<Value = Cidr> {
    (any_ip(), 0u8..=128).prop_map(|(ip, prefix)| match ip {
        IpAddr::V4(v4) => {
            let prefix = prefix % 33;
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let addr = IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask));
            Cidr::new(addr, prefix).expect("host bits cleared")
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            let addr = IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask));
            Cidr::new(addr, prefix).expect("host bits cleared")
        }
    })
}

fn any_next_hop() -> impl Strategy<Value = NextHop> {
    prop_oneof![
        (any_host(), 1u16.., any::<bool>()).prop_map(|(host, port, mx_lookup)| NextHop::Smtp {
            host,
            port,
            mx_lookup
        }),
        (any_ip(), 1u16..).prop_map(|(ip, port)| NextHop::Smtp {
            host: ip.to_string(),
            port,
            mx_lookup: false
        }),
        "/[a-z/]{1,20}".prop_map(|p| NextHop::LmtpUnix { path: p.into() }),
        (any_host(), 1u16..).prop_map(|(host, port)| NextHop::LmtpInet { host, port }),
    ]
}

fn any_config() -> impl Strategy<Value = Config> {
    let top = (
        prop_oneof![Just(String::new()), any_host()],
        "/[a-z]{1,10}",
        "[a-z]{1,10}(/[a-z]{1,5})?",
        "(/[a-z]{1,10})?",
        "[a-z_][a-z0-9_-]{0,8}",
        proptest::collection::vec(any_domain(), 0..4),
        proptest::collection::vec(any_domain(), 0..4),
        proptest::collection::btree_map(
            prop_oneof![Just("*".to_owned()), any_domain()],
            any_next_hop(),
            0..4,
        ),
    );
    let smtpd = (
        proptest::collection::vec(any_socket_addr(), 1..4),
        (
            1usize..64,
            1u64..u64::MAX,
            1usize..100_000,
            1000usize..1_000_000,
            1u32..1000,
            1usize..100_000,
        ),
        proptest::collection::vec(any_cidr(), 0..4),
        (
            nonzero_duration(),
            nonzero_duration(),
            nonzero_duration(),
            any_duration(),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<u32>(), any::<u32>(), any::<bool>()),
    )
        .prop_map(
            |(
                listen,
                (processes, size, rcpts, line, errors, conns),
                trusted,
                (cmd, data, session, stop),
                (normalize, vrfy, expn, dsn_success_untrusted),
                (client_limit, client_rate, exempt),
            )| Smtpd {
                listen,
                processes,
                trusted_networks: trusted,
                max_message_size: size,
                max_recipients: rcpts,
                max_line_length: line,
                max_errors: errors,
                max_connections: conns,
                client_connection_limit: client_limit,
                client_connection_rate_limit: client_rate,
                client_limits_exempt_trusted: exempt,
                command_timeout: cmd,
                data_timeout: data,
                session_timeout: session,
                bare_newline: if normalize {
                    BareNewline::Normalize
                } else {
                    BareNewline::Reject
                },
                vrfy,
                expn,
                dsn_success_untrusted,
                stop_timeout: stop,
            },
        );
    let rest = (
        (
            proptest::collection::vec(any_socket_addr(), 0..3),
            nonzero_duration(),
        )
            .prop_map(|(nameservers, timeout)| Dns {
                nameservers,
                timeout,
            }),
        (
            1u16..,
            0usize..4,
            nonzero_duration(),
            nonzero_duration(),
            prop_oneof![Just(String::new()), any_host()],
            1usize..10,
            1usize..1000,
            any_duration(),
        )
            .prop_map(
                |(port, tls, connect, command, helo, hosts, reuse, idle)| Smtp {
                    port,
                    tls: [
                        TlsPolicy::None,
                        TlsPolicy::May,
                        TlsPolicy::Encrypt,
                        TlsPolicy::Verify,
                    ][tls],
                    connect_timeout: connect,
                    command_timeout: command,
                    helo_name: helo,
                    max_hosts_per_attempt: hosts,
                    reuse_max_messages: reuse,
                    reuse_idle: idle,
                    tls_policies: [("[mx.example]:2525".to_owned(), TlsPolicy::Verify)]
                        .into_iter()
                        .take(tls % 2)
                        .collect(),
                    tls_ca_file: PathBuf::new(),
                    tls_timeout: connect,
                },
            ),
        (
            nonzero_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
            (1usize..100, 1usize..1000, 1usize..64, 1usize..64),
        )
            .prop_map(
                |(min, extra, lifetime, warn, (per_dest, total, smtp, local))| Queue {
                    retry_min: min,
                    retry_max: min + extra,
                    lifetime,
                    delay_warning: warn,
                    max_concurrency_per_destination: per_dest,
                    max_concurrency: total,
                    smtp_agents: smtp,
                    local_agents: local,
                },
            ),
        ("/[a-z]{1,10}", "~?/[A-Za-z]{1,10}/?", "[+=._-]{0,3}").prop_map(
            |(aliases, mailbox, delim)| Local {
                aliases: aliases.into(),
                mailbox,
                recipient_delimiter: delim,
                ..Local::default()
            },
        ),
        ("/[a-z/]{1,10}", "[a-z][a-z0-9/-]{0,8}").prop_map(|(socket, tag)| Log {
            syslog_socket: socket.into(),
            tag_prefix: tag,
        }),
    );
    (top, smtpd, rest).prop_map(
        |(
            (hostname, spool, run, daemon, user, local, relay, routes),
            smtpd,
            (dns, smtp, queue, local_cfg, log),
        )| {
            let relay = relay.into_iter().filter(|d| !local.contains(d)).collect();
            Config {
                hostname,
                spool_dir: spool.into(),
                run_dir: run.into(),
                daemon_dir: daemon.into(),
                user,
                smtpd,
                local_domains: local,
                relay_domains: relay,
                routes,
                dns,
                smtp,
                queue,
                local: local_cfg,
                log,
                hopcount_limit: 50,
                nul_bytes: NulBytes::Strip,
            }
        },
    )
}

proptest! {
    #[test]
    fn print_then_parse_round_trips(config in any_config()) {
        let text = config.to_ron_pretty();
        let parsed = parse(&text, Path::new("printed.ron"));
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed, text);
        prop_assert_eq!(parsed.ok(), Some(config));
    }

    #[test]
    fn parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = parse(&text, Path::new("fuzz.ron"));
    }

    #[test]
    fn parse_never_panics_on_ron_like_text(text in "[ \n(){}\\[\\]:,\"'/*#r!a-z0-9._-]{0,80}") {
        let _ = parse(&text, Path::new("fuzz.ron"));
    }

    #[test]
    fn parse_never_panics_on_mangled_configs(cut in 0usize..4000, len in 0usize..40, junk in "[ \n(){}\\[\\]:,\"/*a-z0-9]{0,6}") {
        let full = include_str!("../../../etc/sluice.ron");
        let mut text: String = full.chars().take(cut).collect();
        text.push_str(&junk);
        text.extend(full.chars().skip(cut + len));
        if let Err(e) = parse(&text, Path::new(FILE)) {
            // Whatever broke, the message names the file and a line.
            let shown = e.to_string();
            prop_assert!(shown.starts_with(&format!("{FILE}:")), "{}", shown);
        }
    }
}

#[test]
fn local_delivery_keys_have_defaults_and_are_checked() {
    let c = Config::default();
    assert_eq!(c.local.postmaster, "root");
    assert_eq!(c.local.virtual_mailboxes, Path::new(""));
    assert_eq!(c.local.virtual_owner, "vmail");
    assert!(c.local.forward);
    assert!(!c.local.allow_commands && !c.local.allow_files);
    assert_eq!(c.local.command_user, "nobody");
    let c = ok(
        "(local: ( virtual_mailboxes: \"/etc/sluice/virtual\", virtual_owner: \"mail\", \
                postmaster: \"admin@example.org\", forward: false, allow_commands: true, \
                allow_files: true, command_user: \"mailer\", mailbox: \"/var/mail/%u\" ))",
    );
    assert_eq!(c.local.virtual_mailboxes, Path::new("/etc/sluice/virtual"));
    assert_eq!(
        (c.local.postmaster.as_str(), c.local.command_user.as_str()),
        ("admin@example.org", "mailer")
    );
    let (line, key, message) = key_error("(\n local: (\n  mailbox: \"Maildir/\" ))");
    assert_eq!((line, key.as_str()), (3, "local.mailbox"));
    assert!(message.contains("must start with"), "{message}");
    let (line, key, _) = key_error("(\n local: ( postmaster: \"a b\" ))");
    assert_eq!((line, key.as_str()), (2, "local.postmaster"));
    let (line, key, _) = key_error("(\n\n local: ( virtual_owner: \"v mail\" ))");
    assert_eq!((line, key.as_str()), (3, "local.virtual_owner"));
    let (line, key, _) = key_error("(\n local: ( command_user: \"no body\" ))");
    assert_eq!((line, key.as_str()), (2, "local.command_user"));
}

#[test]
fn tls_policies_ca_file_and_handshake_limit() {
    let c = ok("(smtp: (\n  tls_policies: { \"[MX.Partner.example]:2525\": \"verify\", \"bank.example\": \"encrypt\" },\n  tls_ca_file: \"/etc/sluice/ca.pem\",\n  tls_timeout: \"10s\",\n))");
    assert_eq!(
        c.smtp.tls_policies["[mx.partner.example]:2525"],
        TlsPolicy::Verify,
        "keys are lower-cased"
    );
    assert_eq!(c.smtp.tls_policies["bank.example"], TlsPolicy::Encrypt);
    assert_eq!(c.smtp.tls_ca_file, Path::new("/etc/sluice/ca.pem"));
    assert_eq!(c.smtp.tls_timeout, Duration::from_secs(10));
    assert_eq!(ok(&c.to_ron_pretty()), c);

    let (line, key, message) =
        key_error("(smtp: (\n tls_policies: {\n \"x.example\": \"sometimes\" }))");
    assert_eq!(
        (line, key.as_str()),
        (3, "smtp.tls_policies[\"x.example\"]")
    );
    assert!(
        message.contains("invalid TLS policy \"sometimes\""),
        "{message}"
    );
    let (line, key, message) =
        key_error("(smtp: (\n tls_policies: {\n \"[unclosed\": \"verify\" }))");
    assert_eq!(
        (line, key.as_str()),
        (3, "smtp.tls_policies[\"[unclosed\"]")
    );
    assert!(
        message.contains("a key is a next hop or a host"),
        "{message}"
    );
    let (line, key, _) = key_error("(smtp: (\n tls_timeout: \"0\"))");
    assert_eq!((line, key.as_str()), (2, "smtp.tls_timeout"));
}
