//! Unit tests of `pickup`.
use sluice_proto::envelope::Recipient;

use super::*;

fn spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path().join("spool"));
    spool.create_layout(None).expect("layout");
    (dir, spool)
}

fn settings() -> Settings {
    Settings {
        cleanup: sluice_cleanup::Settings {
            hostname: "mx.test".into(),
            hopcount_limit: 50,
            reject_nul: false,
        },
        max_file_size: 4096,
        restrict_sender: false,
        trusted_gid: None,
    }
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// A maildrop file as sendmail writes it, claiming `uid`.
fn maildrop_bytes(uid: u32, sender: &str, content: &[u8]) -> Vec<u8> {
    let envelope = Envelope {
        sender: sender.into(),
        recipients: vec![Recipient {
            address: "rcpt@relay.test".into(),
            notify: None,
            orcpt: None,
        }],
        ..Envelope::default()
    };
    let source = Source::Local {
        uid,
        user: "claimed".into(),
    };
    sluice_spool::encode(&Message {
        id: QueueId::generate(),
        arrival: SystemTime::now(),
        source: &source,
        envelope: &envelope,
        content: &[content],
    })
}

fn drop_file(spool: &Spool, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = spool.dir(Area::Maildrop).join(name);
    fs::write(&path, bytes).expect("write maildrop file");
    path
}

fn queued(spool: &Spool, ids: &[QueueId]) -> Vec<sluice_spool::QueueFile> {
    ids.iter()
        .map(|id| spool.read(*id).expect("picked-up queue file"))
        .collect()
}

#[test]
fn a_forged_uid_is_corrected_to_the_file_owner() {
    let (_dir, spool) = spool();
    let forged = me().wrapping_add(1);
    let bytes = maildrop_bytes(forged, "someone@else.test", b"Subject: hi\r\n\r\nbody\r\n");
    let path = drop_file(&spool, "0000000000000000FAKE", &bytes);
    let ids = pickup_all(&spool, &settings());
    assert_eq!(ids.len(), 1);
    assert!(!path.exists(), "the maildrop file is removed");
    let file = &queued(&spool, &ids)[0];
    assert_eq!(
        file.source,
        Source::Local {
            uid: me(),
            user: user_name(me())
        }
    );
    assert_eq!(file.envelope.sender, "someone@else.test");
    assert_eq!(file.envelope.recipients[0].address, "rcpt@relay.test");
    let text = String::from_utf8_lossy(&file.content).into_owned();
    assert!(
        text.starts_with(&format!(
            "Received: by mx.test (Sluice, from userid {})\r\n",
            me()
        )),
        "{text}"
    );
    assert!(text.contains("\r\nSubject: hi\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");
    // Cleanup's local steps ran on the hand-written file.
    assert!(text.contains("\r\nFrom: someone@else.test\r\n"), "{text}");
    assert!(text.contains("\r\nMessage-ID: <"), "{text}");
    if me() != 0 {
        // An untrusted user chose the sender: the warning names the owner.
        assert!(
            text.contains(&format!(
                "X-Authentication-Warning: mx.test: {} set sender to someone@else.test using -f\r\n",
                user_name(me())
            )),
            "{text}"
        );
    }
}

#[test]
fn the_warning_is_added_once_for_an_untrusted_sender() {
    let (_dir, spool) = spool();
    // Root is always trusted; pretend the owner is not by testing the
    // header logic with a sender that is the owner's own address instead.
    let own = format!("{}@mx.test", user_name(me()));
    let bytes = maildrop_bytes(me(), &own, b"Subject: own\r\n\r\nx\r\n");
    drop_file(&spool, "0000000000000000OWN1", &bytes);
    let ids = pickup_all(&spool, &settings());
    let file = &queued(&spool, &ids)[0];
    let text = String::from_utf8_lossy(&file.content).into_owned();
    assert!(!text.contains("X-Authentication-Warning"), "{text}");
    // A file whose warning is already there (sendmail wrote it) gets no second one.
    let warning = format!(
        "X-Authentication-Warning: mx.test: {} set sender to other@x.test using -f\r\n",
        user_name(me())
    );
    let mut content = warning.into_bytes();
    content.extend_from_slice(b"Subject: w\r\n\r\nx\r\n");
    drop_file(
        &spool,
        "0000000000000000OWN2",
        &maildrop_bytes(me(), "other@x.test", &content),
    );
    let ids = pickup_all(&spool, &settings());
    let text = String::from_utf8_lossy(&queued(&spool, &ids)[0].content).into_owned();
    assert_eq!(
        text.matches("X-Authentication-Warning").count(),
        1,
        "{text}"
    );
}

/// The names in `corrupt/`, without the `.why` notes.
fn corrupt(spool: &Spool) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(spool.dir(Area::Corrupt))
        .expect("corrupt dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".why"))
        .collect();
    names.sort();
    names
}

fn why(spool: &Spool, name: &str) -> String {
    fs::read_to_string(spool.dir(Area::Corrupt).join(format!("{name}.why"))).expect("why note")
}

#[test]
fn extra_envelope_fields_send_the_file_to_corrupt() {
    let (_dir, spool) = spool();
    let bytes = maildrop_bytes(me(), "a@b.test", b"x\r\n");
    let text = String::from_utf8(bytes).expect("utf8");
    let forged = text.replacen(
        "source: local\n",
        "source: local\nclient-addr: 192.0.2.1\n",
        1,
    );
    drop_file(&spool, "EXTRA", forged.as_bytes());
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["EXTRA"]);
    assert!(why(&spool, "EXTRA").contains("client-addr"));
    assert!(spool.list(Area::Queue).expect("list").is_empty());
}

#[test]
fn an_smtp_source_is_refused() {
    let (_dir, spool) = spool();
    let envelope = Envelope {
        sender: "a@b.test".into(),
        recipients: vec![Recipient {
            address: "r@relay.test".into(),
            notify: None,
            orcpt: None,
        }],
        ..Envelope::default()
    };
    let source = Source::Smtp(sluice_proto::envelope::Client {
        addr: [192, 0, 2, 1].into(),
        port: 25,
        hostname: None,
        helo: "forged".into(),
        protocol: sluice_proto::envelope::Protocol::Esmtp,
    });
    let bytes = sluice_spool::encode(&Message {
        id: QueueId::generate(),
        arrival: SystemTime::now(),
        source: &source,
        envelope: &envelope,
        content: &[b"x\r\n"],
    });
    drop_file(&spool, "SMTP", &bytes);
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["SMTP"]);
    assert!(why(&spool, "SMTP").contains("not local"));
}

#[test]
fn a_truncated_file_goes_to_corrupt() {
    let (_dir, spool) = spool();
    let bytes = maildrop_bytes(me(), "a@b.test", b"Subject: cut\r\n\r\nbody\r\n");
    drop_file(&spool, "CUT", &bytes[..bytes.len() - 10]);
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["CUT"]);
}

#[test]
fn a_symlink_is_refused_and_its_target_untouched() {
    let (dir, spool) = spool();
    let target = dir.path().join("target");
    fs::write(
        &target,
        maildrop_bytes(me(), "a@b.test", b"Subject: t\r\n\r\nx\r\n"),
    )
    .expect("target");
    std::os::unix::fs::symlink(&target, spool.dir(Area::Maildrop).join("LINK")).expect("symlink");
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["LINK"]);
    assert!(why(&spool, "LINK").contains("symbolic link"));
    assert!(target.exists());
    assert!(spool.list(Area::Queue).expect("list").is_empty());
}

#[test]
fn a_hard_link_a_fifo_and_an_oversized_file_are_refused() {
    let (dir, spool) = spool();
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, maildrop_bytes(me(), "a@b.test", b"x\r\n")).expect("file");
    fs::hard_link(&elsewhere, spool.dir(Area::Maildrop).join("HARD")).expect("link");
    nix::unistd::mkfifo(
        &spool.dir(Area::Maildrop).join("FIFO"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    let big = vec![b'x'; 5000];
    drop_file(&spool, "BIG", &maildrop_bytes(me(), "a@b.test", &big));
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["BIG", "FIFO", "HARD"]);
    assert!(why(&spool, "HARD").contains("hard links"));
    assert!(why(&spool, "FIFO").contains("not a regular file"));
    assert!(why(&spool, "BIG").contains("over the limit"));
    assert!(elsewhere.exists(), "the linked file is left alone");
}

#[test]
fn no_recipients_goes_to_corrupt_and_temporary_names_wait() {
    let (_dir, spool) = spool();
    let source = Source::Local {
        uid: me(),
        user: user_name(me()),
    };
    let bytes = sluice_spool::encode(&Message {
        id: QueueId::generate(),
        arrival: SystemTime::now(),
        source: &source,
        envelope: &Envelope::default(),
        content: &[b"x\r\n"],
    });
    drop_file(&spool, "NORCPT", &bytes);
    drop_file(&spool, ".tmp.WRITING.1.0.tmp", b"half");
    assert!(pickup_all(&spool, &settings()).is_empty());
    assert_eq!(corrupt(&spool), ["NORCPT"]);
    assert!(spool
        .dir(Area::Maildrop)
        .join(".tmp.WRITING.1.0.tmp")
        .exists());
}

#[test]
fn restrict_sender_refuses_an_untrusted_chosen_sender() {
    let (_dir, spool) = spool();
    let restricted = Settings {
        restrict_sender: true,
        ..settings()
    };
    drop_file(
        &spool,
        "CHOSEN",
        &maildrop_bytes(me(), "boss@corp.test", b"x\r\n"),
    );
    let ids = pickup_all(&spool, &restricted);
    if me() == 0 {
        // Root is trusted.
        assert_eq!(ids.len(), 1);
    } else {
        assert!(ids.is_empty());
        assert_eq!(corrupt(&spool), ["CHOSEN"]);
    }
}
