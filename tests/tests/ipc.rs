//! End-to-end tests of the queue manager's sockets (issue #20 item 8,
//! issue #9 defect 7): a peer that floods the queue manager with frames,
//! or never stops sending, gets its share of the loop and no more, so
//! another peer's request is still answered.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_e2e::{wait_for, Instance, DEADLINE};
use sluice_ipc::client::Client;
use sluice_ipc::qmgr::{self, Action, Request, Response, Target};

/// A peer of `qmgr.sock` that writes new-mail hints (for a file that does
/// not exist), a mebibyte at a time, until told to stop; it counts what it
/// wrote.
struct Flood {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(sluice: &Instance) -> Flood {
        let mut stream = UnixStream::connect(qmgr::socket(&sluice.run_dir)).expect("connect");
        let frame = sluice_ipc::encode(&Request::NewMail {
            queue_id: sluice_spool::QueueId::generate().to_string(),
        })
        .expect("encode");
        let chunk = frame.repeat((1 << 20) / frame.len());
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                stream
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                while !stop.load(Ordering::Relaxed) {
                    match stream.write(&chunk) {
                        Ok(n) => {
                            written.fetch_add(n, Ordering::Relaxed);
                            // The rest of a partly written chunk, so that
                            // the stream stays framed.
                            let _ = stream
                                .write_all(&chunk[n..])
                                .map(|()| written.fetch_add(chunk.len() - n, Ordering::Relaxed));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("the flooding peer was cut off: {e}"),
                    }
                }
            })
        };
        Flood {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flooding peer");
        }
    }
}

#[test]
fn a_flooding_peer_does_not_delay_another_peers_request() {
    let mut sluice = Instance::new("");
    sluice.start();
    wait_for("the queue manager's socket", || {
        qmgr::socket(&sluice.run_dir).exists()
    });
    let floods = [Flood::start(&sluice), Flood::start(&sluice)];
    // Megabytes of tiny frames are in (the old loop read them all, then
    // decoded them in quadratic time, answering no one meanwhile).
    wait_for("8 MiB of hints from the flooding peers", || {
        floods.iter().map(Flood::written).sum::<usize>() >= 8 << 20
    });
    for _ in 0..3 {
        let before: Vec<usize> = floods.iter().map(Flood::written).collect();
        let mut client = Client::connect(&qmgr::socket(&sluice.run_dir), &qmgr::hello(), DEADLINE)
            .expect("another peer connects and is greeted while the flood goes on");
        let answer: Response = client
            .call(&Request::Change {
                action: Action::Flush,
                target: Target::All,
            })
            .expect("another peer's request is answered while the flood goes on");
        assert_eq!(answer, Response::Done { messages: 0 });
        // The floods never paused: each sent more while that was answered,
        // and each is still served (the queue manager reads on).
        wait_for("the flooding peers to be read further", || {
            floods
                .iter()
                .zip(&before)
                .all(|(f, b)| f.written() > b + (1 << 20))
        });
    }
    for flood in floods {
        flood.stop();
    }
    assert_eq!(sluice.daemon_pids("sluice-qmgr").len(), 1);
    assert_eq!(
        sluice.log_count("sluice-qmgr pid"),
        0,
        "the queue manager never died"
    );
}
