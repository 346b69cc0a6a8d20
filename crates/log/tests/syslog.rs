//! The syslog sink really speaks syslog: facility mail, the sluice tag, one
//! datagram per record, on a socket this test owns.

use std::os::unix::net::UnixDatagram;

#[test]
fn records_reach_a_syslog_socket_with_facility_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.sock");
    let server = UnixDatagram::bind(&path).expect("bind");
    sluice_log::init(
        "sluice/test",
        "host.example",
        sluice_log::Sink::Syslog(path.clone()),
        log::LevelFilter::Info,
    )
    .expect("init");
    log::info!("{}", sluice_log::line::removed("ABC123"));
    log::warn!("disk\nfull");
    let mut buf = [0u8; 1024];
    let n = server.recv(&mut buf).expect("recv");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    // <PRI> = facility mail (2) * 8 + severity info (6) = 22
    assert!(first.starts_with("<22>"), "{first}");
    assert!(first.contains("sluice/test["), "{first}");
    assert!(first.ends_with("ABC123: removed"), "{first}");
    let n = server.recv(&mut buf).expect("recv");
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    // severity warning (4): 2*8+4 = 20
    assert!(second.starts_with("<20>"), "{second}");
    assert!(second.ends_with("warning: disk full"), "{second}");
}
