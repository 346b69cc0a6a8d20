//! Group commit keeps the durability invariant (issue #5): with many
//! sessions committing together and smtpd killed with SIGKILL at random
//! moments, every message that got a 250 is in the queue afterwards.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail};

#[test]
fn every_250_survives_kill_9_of_smtpd_at_random_moments() {
    // The next hop defers everything, so accepted mail stays in queue/.
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{}\" }}, \
         queue: ( retry_min: \"1h\", retry_max: \"2h\" ),",
        sink.route()
    ));
    let addr = sluice.start();
    let mails: Vec<Mail> = (0..600)
        .map(|i| Mail {
            from: format!("s{i}@client.test"),
            to: vec![format!("r{i}@relay.test")],
            data: message(&format!("gc-{i}"), &["group commit"]),
        })
        .collect();
    let sender = std::thread::spawn(move || send_with_python(addr, 50, &mails));
    // Kill an smtpd at pseudo-random moments while the sessions run.
    let mut seed = u64::from(std::process::id()) | 1;
    let mut kills = 0;
    while !sender.is_finished() && kills < 12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 250));
        let pids = sluice.smtpd_pids();
        if let Some(pid) = pids.get((seed as usize / 7) % pids.len().max(1)) {
            if kill(*pid, Signal::SIGKILL).is_ok() {
                kills += 1;
            }
        }
    }
    let outcomes = sender.join().expect("sender");
    let acknowledged: Vec<String> = outcomes
        .iter()
        .filter(|o| o.ok)
        .filter_map(|o| o.queue_id())
        .collect();
    eprintln!(
        "{} kills; {} of {} messages acknowledged",
        kills,
        acknowledged.len(),
        outcomes.len()
    );
    assert!(kills > 0, "the test must kill something");
    assert!(!acknowledged.is_empty());
    wait_for("smtpd back", || sluice.smtpd_pids().len() == 2);
    let queued = sluice.files_in("queue");
    for id in &acknowledged {
        assert!(
            queued.contains(id),
            "acknowledged {id} is missing from queue/"
        );
        let file = sluice.queue_file(id);
        assert!(file.content.ends_with(b"group commit\r\n"));
    }
}
