//! The queue manager out of file descriptors (issue #9 defect 7): EMFILE
//! only pauses accepting; it is never fatal. A test binary of its own, so
//! that the lowered limit it starts the daemons with touches no other test.

use std::os::unix::net::UnixStream;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use sluice_e2e::{wait_for, Instance, DEADLINE};
use sluice_ipc::client::Client;
use sluice_ipc::qmgr::{self, Action, Request, Response, Target};

#[test]
fn running_out_of_descriptors_only_pauses_accepting() {
    let mut sluice = Instance::new("");
    // The daemons inherit a soft limit of 64 descriptors (smtpd raises
    // its own; the queue manager keeps it): connections beyond it meet
    // EMFILE, as 1,100 did under the default limit of 1024.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, 64, hard).expect("lower the limit");
    sluice.start();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("restore the limit");
    let socket = qmgr::socket(&sluice.run_dir);
    wait_for("the queue manager's socket", || socket.exists());
    let qmgr_pid = sluice.daemon_pids("sluice-qmgr");
    assert_eq!(qmgr_pid.len(), 1);
    let held: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    wait_for("the queue manager to run out of descriptors", || {
        sluice.log_count("pausing new connections") > 0
    });
    drop(held);
    wait_for("the queue manager to answer again", || {
        Client::connect(&socket, &qmgr::hello(), DEADLINE)
            .and_then(|mut c| {
                c.call::<_, Response>(&Request::Change {
                    action: Action::Flush,
                    target: Target::All,
                })
            })
            .is_ok_and(|r| r == Response::Done { messages: 0 })
    });
    assert_eq!(
        sluice.log_count("pausing new connections"),
        1,
        "logged once"
    );
    assert_eq!(sluice.daemon_pids("sluice-qmgr"), qmgr_pid);
    assert_eq!(sluice.log_count("fatal"), 0, "{}", sluice.log());
}
