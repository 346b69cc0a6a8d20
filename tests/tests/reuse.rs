//! End-to-end test of outbound connection reuse (issue #4): the real
//! master, smtpd, qmgr and smtp agents relay 100 messages to one sink,
//! which counts its connections: agents keep a connection to the next hop
//! open between jobs (RSET between messages) instead of one per message.

use std::collections::HashMap;
use std::time::Duration;

use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, wait_up_to, Instance, Mail};

#[test]
fn a_hundred_messages_to_one_hop_share_few_connections() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"reuse.test\"],\n    routes: {{ \"reuse.test\": \"{}\" }},\n    \
         smtp: ( reuse_max_messages: 100, reuse_idle: \"10s\" ),\n    \
         queue: ( smtp_agents: 3 ),",
        sink.route()
    ));
    let addr = sluice.start();
    let mails: Vec<Mail> = (0..100)
        .map(|i| Mail {
            from: "sender@client.test".into(),
            to: vec![format!("r{i}@reuse.test")],
            data: message(&format!("reuse-{i}"), &["one of a hundred"]),
        })
        .collect();
    let sent = send_with_python(addr, 5, &mails);
    assert!(sent.iter().all(|o| o.ok), "all accepted");
    wait_up_to(Duration::from_secs(120), "100 messages at the sink", || {
        sink.count() >= 100
    });
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        assert_eq!(m.to.len(), 1);
        *seen.entry(m.to[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 100, "every recipient arrived");
    assert!(seen.values().all(|&n| n == 1), "each exactly once");
    let connections = sink.connections();
    eprintln!("100 messages over {connections} connections");
    assert!(
        connections < 30,
        "{connections} connections for 100 messages"
    );
    assert_eq!(sluice.log_count("status=sent"), 100);
}
