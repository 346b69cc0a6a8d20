//! Unit tests of `commit`.
use super::*;
use crate::queue_file::{decode, encode, Source};
use crate::queue_id::QueueId;
use sluice_proto::envelope::{Envelope, Recipient};
use std::time::UNIX_EPOCH;

fn spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool.create_layout(None).unwrap();
    (dir, spool)
}

fn envelope() -> Envelope {
    Envelope {
        sender: "alice@example.net".into(),
        recipients: vec![Recipient {
            address: "bob@example.org".into(),
            notify: None,
            orcpt: None,
        }],
        ..Envelope::default()
    }
}

fn local() -> Source {
    Source::Local {
        uid: 1000,
        user: "alice".into(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn commit_writes_exact_bytes_and_cleans_tmp() {
    let (_dir, spool) = spool();
    let (source, env) = (local(), envelope());
    let pieces: &[&[u8]] = &[b"Received: by test\r\n", b"", b"Subject: x\r\n\r\nbody\r\n"];
    let msg = Message {
        id: QueueId::generate(),
        arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        source: &source,
        envelope: &env,
        content: pieces,
    };
    let path = spool.commit(&msg).unwrap();
    assert_eq!(path, spool.dir(Area::Queue).join(msg.id.to_string()));
    assert_eq!(fs::read(&path).unwrap(), encode(&msg));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
    assert_eq!(spool.list(Area::Queue).unwrap(), vec![msg.id]);
    let file = spool.read(msg.id).unwrap();
    assert_eq!(file.content, pieces.concat());
}

#[test]
fn commit_never_replaces_an_existing_file() {
    let (_dir, spool) = spool();
    let (source, env) = (local(), envelope());
    let id = QueueId::generate();
    let first = Message {
        id,
        arrival: UNIX_EPOCH,
        source: &source,
        envelope: &env,
        content: &[b"first\n"],
    };
    let path = spool.commit(&first).unwrap();
    let second = Message {
        content: &[b"second\n"],
        ..first
    };
    match spool.commit(&second) {
        Err(Error::Exists { path: p }) => assert_eq!(p, path),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), encode(&first));
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
}

#[test]
fn failed_stage_leaves_nothing() {
    let (_dir, spool) = spool();
    // queue/ is gone: staging succeeds, the link fails.
    fs::remove_dir(spool.dir(Area::Queue)).unwrap();
    let err = spool.commit_into(Area::Queue, "X", &[b"data"]).unwrap_err();
    assert!(matches!(err, Error::Io { op: "link", .. }), "{err}");
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
    // tmp/ is gone: the temporary file cannot be created.
    spool.create_layout(None).unwrap();
    fs::remove_dir(spool.dir(Area::Tmp)).unwrap();
    let err = spool.commit_into(Area::Queue, "X", &[b"data"]).unwrap_err();
    assert!(matches!(err, Error::Io { op: "create", .. }), "{err}");
    assert!(names(&spool.dir(Area::Queue)).is_empty());
}

#[test]
fn commit_into_rejects_bad_names() {
    let (_dir, spool) = spool();
    for name in ["", ".", "..", ".hidden", "a/b", "../queue/x", "a\0b"] {
        let err = spool.commit_into(Area::Queue, name, &[b"x"]).unwrap_err();
        assert!(matches!(err, Error::BadName { .. }), "{name:?}: {err}");
    }
    assert!(names(&spool.dir(Area::Queue)).is_empty());
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
}

#[test]
fn many_pieces_are_all_written() {
    let (_dir, spool) = spool();
    // More pieces than IOV_MAX (1024), of assorted sizes.
    let owned: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| vec![(i % 251) as u8; (i % 7) as usize * 100])
        .collect();
    let pieces: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let path = spool.commit_into(Area::Queue, "many", &pieces).unwrap();
    assert_eq!(fs::read(path).unwrap(), owned.concat());
}

#[test]
fn maildrop_commit_stages_inside_maildrop() {
    let (_dir, spool) = spool();
    let (source, env) = (local(), envelope());
    let msg = Message {
        id: QueueId::generate(),
        arrival: UNIX_EPOCH,
        source: &source,
        envelope: &env,
        content: &[b"hi\n"],
    };
    let path = spool.commit_to(Area::Maildrop, &msg).unwrap();
    assert_eq!(path, spool.dir(Area::Maildrop).join(msg.id.to_string()));
    assert_eq!(names(&spool.dir(Area::Maildrop)), vec![msg.id.to_string()]);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
    assert_eq!(spool.list(Area::Maildrop).unwrap(), vec![msg.id]);
    assert_eq!(
        spool.read_in(Area::Maildrop, msg.id).unwrap().content,
        b"hi\n"
    );
}

#[test]
fn clean_tmp_removes_leftovers_only() {
    let (_dir, spool) = spool();
    fs::write(spool.dir(Area::Tmp).join("X.1.2"), b"partial").unwrap();
    fs::write(spool.dir(Area::Tmp).join("Y.1.3"), b"").unwrap();
    let fresh = spool.dir(Area::Maildrop).join(".tmp.A.1.1.tmp");
    fs::write(&fresh, b"being written").unwrap();
    let old = spool.dir(Area::Maildrop).join(".tmp.B.1.1.tmp");
    let file = File::create(&old).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
        .unwrap();
    let dropped = spool.dir(Area::Maildrop).join("B");
    fs::write(&dropped, b"a real submission").unwrap();
    fs::write(spool.dir(Area::Queue).join("Q"), b"queued").unwrap();

    assert_eq!(spool.clean_tmp().unwrap(), 3);
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
    assert!(fresh.exists());
    assert!(!old.exists());
    assert!(dropped.exists());
    assert!(spool.dir(Area::Queue).join("Q").exists());
    assert_eq!(spool.clean_tmp().unwrap(), 0);
}

#[test]
fn move_aside_never_replaces() {
    let (_dir, spool) = spool();
    let corrupt = spool.dir(Area::Corrupt);
    for (i, content) in [b"one", b"two", b"3rd"].iter().enumerate() {
        let from = spool.dir(Area::Queue).join("F");
        fs::write(&from, content).unwrap();
        let to = move_aside(&from, &corrupt, "F").unwrap();
        let expected = match i {
            0 => "F".to_string(),
            n => format!("F.{n}"),
        };
        assert_eq!(to, corrupt.join(expected));
        assert!(!from.exists());
    }
    assert_eq!(fs::read(corrupt.join("F")).unwrap(), b"one");
    assert_eq!(fs::read(corrupt.join("F.2")).unwrap(), b"3rd");
}

#[test]
fn committed_file_decodes() {
    let (_dir, spool) = spool();
    let (source, env) = (local(), envelope());
    let msg = Message {
        id: QueueId::generate(),
        arrival: UNIX_EPOCH,
        source: &source,
        envelope: &env,
        content: &[TRAILER, b"\n\n"],
    };
    let path = spool.commit(&msg).unwrap();
    let file = decode(&fs::read(path).unwrap()).unwrap();
    assert_eq!(file.envelope, env);
    assert_eq!(file.content, [TRAILER, b"\n\n"].concat());
}

#[test]
fn commit_batch_makes_every_file_durable_with_exact_bytes() {
    let (_dir, spool) = spool();
    let env = envelope();
    let src = local();
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    let pieces: Vec<[&[u8]; 1]> = bodies.iter().map(|b| [b.as_slice()]).collect();
    let msgs: Vec<Message<'_>> = pieces
        .iter()
        .map(|p| Message {
            id: QueueId::generate(),
            arrival: UNIX_EPOCH,
            source: &src,
            envelope: &env,
            content: p,
        })
        .collect();
    let results = spool.commit_batch(&msgs);
    assert_eq!(results.len(), 40);
    for (msg, result) in msgs.iter().zip(&results) {
        let path = result.as_ref().expect("committed");
        assert_eq!(fs::read(path).unwrap(), encode(msg));
    }
    assert_eq!(names(&spool.dir(Area::Queue)).len(), 40);
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
}

#[test]
fn commit_batch_fails_one_message_without_harming_the_others() {
    let (_dir, spool) = spool();
    let env = envelope();
    let src = local();
    let taken = QueueId::generate();
    spool
        .commit_into(Area::Queue, &taken.to_string(), &[b"already here"])
        .unwrap();
    let content: [&[u8]; 1] = [b"x\r\n"];
    let ids = [QueueId::generate(), taken, QueueId::generate()];
    let msgs: Vec<Message<'_>> = ids
        .iter()
        .map(|id| Message {
            id: *id,
            arrival: UNIX_EPOCH,
            source: &src,
            envelope: &env,
            content: &content,
        })
        .collect();
    let results = spool.commit_batch(&msgs);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::Exists { .. })));
    assert!(results[2].is_ok());
    assert_eq!(
        fs::read(spool.dir(Area::Queue).join(taken.to_string())).unwrap(),
        b"already here"
    );
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
}

#[test]
fn removed_queue_files_are_emptied_and_reused() {
    use std::os::unix::fs::MetadataExt as _;
    let (_dir, spool) = spool();
    let env = envelope();
    let src = local();
    let first: [&[u8]; 1] = [b"first message, rather long\r\n"];
    let id = QueueId::generate();
    let msg = Message {
        id,
        arrival: UNIX_EPOCH,
        source: &src,
        envelope: &env,
        content: &first,
    };
    let path = spool.commit(&msg).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    spool.remove(id).unwrap();
    assert!(!path.exists());
    let free = names(&spool.dir(Area::Tmp));
    assert_eq!(free, [format!("free.{id}")]);
    assert_eq!(
        fs::metadata(spool.dir(Area::Tmp).join(&free[0]))
            .unwrap()
            .len(),
        0,
        "no mail left behind"
    );
    // The next commit takes that file: same inode, exact new bytes.
    let second: [&[u8]; 1] = [b"2nd\r\n"];
    let id2 = QueueId::generate();
    let msg2 = Message {
        id: id2,
        arrival: UNIX_EPOCH,
        source: &src,
        envelope: &env,
        content: &second,
    };
    let path2 = spool.commit(&msg2).unwrap();
    assert_eq!(fs::metadata(&path2).unwrap().ino(), inode);
    assert_eq!(fs::read(&path2).unwrap(), encode(&msg2));
    assert!(names(&spool.dir(Area::Tmp)).is_empty());
}

#[test]
fn trim_keeps_at_most_the_given_number_of_emptied_files() {
    let (_dir, spool) = spool();
    let env = envelope();
    let src = local();
    let content: [&[u8]; 1] = [b"x\r\n"];
    let ids: Vec<QueueId> = (0..5).map(|_| QueueId::generate()).collect();
    for id in &ids {
        spool
            .commit(&Message {
                id: *id,
                arrival: UNIX_EPOCH,
                source: &src,
                envelope: &env,
                content: &content,
            })
            .unwrap();
    }
    for id in &ids {
        spool.remove(*id).unwrap();
    }
    assert_eq!(names(&spool.dir(Area::Tmp)).len(), 5);
    assert_eq!(spool.trim_free(2), 3);
    assert_eq!(names(&spool.dir(Area::Tmp)).len(), 2);
}
