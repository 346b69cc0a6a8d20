//! Unit tests of `spool`.
use super::*;
use crate::queue_file::{encode, Message, Source};
use sluice_proto::envelope::Envelope;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::time::UNIX_EPOCH;

fn spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("var/spool/sluice"));
    spool.create_layout(None).unwrap();
    (dir, spool)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn file_bytes(id: QueueId) -> Vec<u8> {
    let source = Source::Local {
        uid: 0,
        user: "root".into(),
    };
    encode(&Message {
        id,
        arrival: UNIX_EPOCH,
        source: &source,
        envelope: &Envelope::default(),
        content: &[b"hello\n"],
    })
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
fn new_does_no_io_and_names_dirs() {
    let spool = Spool::new("/nonexistent/spool");
    assert_eq!(spool.root(), Path::new("/nonexistent/spool"));
    assert_eq!(
        spool.dir(Area::Queue),
        Path::new("/nonexistent/spool/queue")
    );
    assert_eq!(
        spool.dir(Area::Maildrop),
        Path::new("/nonexistent/spool/maildrop")
    );
    assert_eq!(
        spool.dir(Area::Corrupt),
        Path::new("/nonexistent/spool/corrupt")
    );
    assert_eq!(spool.dir(Area::Tmp), Path::new("/nonexistent/spool/tmp"));
}

#[test]
fn create_layout_sets_modes_and_is_idempotent() {
    let (_dir, spool) = spool();
    assert_eq!(mode(spool.root()), 0o755);
    assert_eq!(mode(&spool.dir(Area::Queue)), 0o700);
    assert_eq!(mode(&spool.dir(Area::Maildrop)), 0o1733);
    assert_eq!(mode(&spool.dir(Area::Corrupt)), 0o700);
    assert_eq!(mode(&spool.dir(Area::Tmp)), 0o700);
    assert_eq!(spool.check_layout(), Vec::<String>::new());

    // Damage the modes, keep a file: a second run repairs and keeps it.
    fs::write(spool.dir(Area::Queue).join("keep"), b"x").unwrap();
    fs::set_permissions(spool.dir(Area::Queue), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(spool.dir(Area::Maildrop), fs::Permissions::from_mode(0o755)).unwrap();
    let problems = spool.check_layout();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("mode 0777, expected 0700"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("mode 0755, expected 1733"),
        "{problems:?}"
    );
    spool.create_layout(None).unwrap();
    assert_eq!(mode(&spool.dir(Area::Queue)), 0o700);
    assert_eq!(mode(&spool.dir(Area::Maildrop)), 0o1733);
    assert!(spool.dir(Area::Queue).join("keep").exists());
    assert!(spool.check_layout().is_empty());
}

#[test]
fn create_layout_chowns_when_asked() {
    let (_dir, spool) = spool();
    let me = fs::metadata(spool.root()).unwrap();
    // As root, hand the spool to another user; otherwise to ourselves.
    let owner = if me.uid() == 0 {
        (4321, 4322)
    } else {
        (me.uid(), me.gid())
    };
    spool.create_layout(Some(owner)).unwrap();
    for dir in std::iter::once(spool.root().to_path_buf())
        .chain(Area::ALL.into_iter().map(|a| spool.dir(a)))
    {
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), owner, "{}", dir.display());
    }
    assert_eq!(mode(&spool.dir(Area::Maildrop)), 0o1733);
}

#[test]
fn check_layout_reports_missing_and_odd_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("nope"));
    let problems = spool.check_layout();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("nope"), "{problems:?}");

    let (_dir, spool) = spool_with_broken_areas();
    let problems = spool.check_layout();
    assert!(problems
        .iter()
        .any(|p| p.contains("corrupt") && p.contains("not a directory")));
    assert!(problems
        .iter()
        .any(|p| p.contains("tmp") && p.contains("No such file")));
    assert_eq!(problems.len(), 2, "{problems:?}");
}

fn spool_with_broken_areas() -> (tempfile::TempDir, Spool) {
    let (dir, spool) = spool();
    fs::remove_dir(spool.dir(Area::Corrupt)).unwrap();
    fs::write(spool.dir(Area::Corrupt), b"not a dir").unwrap();
    fs::remove_dir(spool.dir(Area::Tmp)).unwrap();
    (dir, spool)
}

#[test]
fn create_layout_refuses_symlinks_and_files() {
    let (_dir, broken) = spool_with_broken_areas();
    let err = broken.create_layout(None).unwrap_err();
    assert!(matches!(err, Error::NotDirectory { .. }), "{err}");

    let (dir, spool) = spool();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o777)).unwrap();
    fs::remove_dir(spool.dir(Area::Queue)).unwrap();
    symlink(&elsewhere, spool.dir(Area::Queue)).unwrap();
    let err = spool.create_layout(None).unwrap_err();
    assert!(matches!(err, Error::NotDirectory { .. }), "{err}");
    // The symlink's target was not touched.
    assert_eq!(mode(&elsewhere), 0o777);
    assert!(spool
        .check_layout()
        .iter()
        .any(|p| p.contains("not a directory")));
}

#[test]
fn read_moves_a_corrupt_file_to_corrupt() {
    let (_dir, spool) = spool();
    let id = QueueId::generate();
    let path = spool.path(Area::Queue, id);
    let mut bytes = file_bytes(id);
    bytes.truncate(bytes.len() - 1);
    fs::write(&path, &bytes).unwrap();

    let err = spool.read(id).unwrap_err();
    let Error::Corrupt {
        path: moved,
        reason,
    } = err
    else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!(moved, spool.path(Area::Corrupt, id));
    assert!(reason.contains("missing end marker"), "{reason}");
    assert!(!path.exists());
    assert_eq!(fs::read(&moved).unwrap(), bytes);
    let why = fs::read_to_string(format!("{}.why", moved.display())).unwrap();
    assert_eq!(why, format!("{reason}\n"));
    assert!(spool.list(Area::Queue).unwrap().is_empty());
    assert_eq!(spool.list(Area::Corrupt).unwrap(), vec![id]);
}

#[test]
fn read_rejects_a_file_under_another_id() {
    let (_dir, spool) = spool();
    let (id, other) = (QueueId::generate(), QueueId::generate());
    fs::write(spool.path(Area::Queue, id), file_bytes(other)).unwrap();
    let err = spool.read(id).unwrap_err();
    match err {
        Error::Corrupt { path, reason } => {
            assert_eq!(path, spool.path(Area::Corrupt, id));
            assert!(reason.contains(&other.to_string()), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn read_of_missing_file_is_not_found() {
    let (_dir, spool) = spool();
    let err = spool.read(QueueId::generate()).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(names(&spool.dir(Area::Corrupt)).is_empty());
}

#[test]
fn list_sorts_and_ignores_foreign_names() {
    let (_dir, spool) = spool();
    let ids: Vec<QueueId> = (0..5).map(|_| QueueId::generate()).collect();
    for id in ids.iter().rev() {
        fs::write(spool.path(Area::Queue, *id), file_bytes(*id)).unwrap();
    }
    for foreign in ["README", ".tmp", "0000", &ids[0].to_string().to_lowercase()] {
        fs::write(spool.dir(Area::Queue).join(foreign), b"").unwrap();
    }
    assert_eq!(spool.list(Area::Queue).unwrap(), ids);
    spool.remove(ids[2]).unwrap();
    assert!(spool.remove(ids[2]).unwrap_err().is_not_found());
    let left = spool.list(Area::Queue).unwrap();
    assert_eq!(left, [ids[0], ids[1], ids[3], ids[4]]);
    assert!(spool.list(Area::Maildrop).unwrap().is_empty());
}

#[test]
fn quarantine_keeps_every_copy() {
    let (_dir, spool) = spool();
    let id = QueueId::generate();
    let first = spool.path(Area::Queue, id);
    fs::write(&first, b"one").unwrap();
    let a = spool.quarantine(&first, "bad one").unwrap();
    fs::write(&first, b"two").unwrap();
    let b = spool.quarantine(&first, "bad two").unwrap();
    assert_ne!(a, b);
    assert_eq!(fs::read(a).unwrap(), b"one");
    assert_eq!(fs::read(b).unwrap(), b"two");
    let err = spool.quarantine(Path::new("/"), "root").unwrap_err();
    assert!(matches!(err, Error::BadName { .. }), "{err}");
}

#[test]
fn hold_markers_are_set_read_and_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path());
    spool.create_layout(None).expect("layout");
    let id = QueueId::generate();
    assert!(!spool.is_held(id));
    spool.set_hold(id, true).expect("hold");
    assert!(spool.is_held(id));
    assert_eq!(spool.list(Area::Hold).expect("list"), [id]);
    spool.set_hold(id, true).expect("hold again");
    spool.set_hold(id, false).expect("release");
    assert!(!spool.is_held(id));
    spool.set_hold(id, false).expect("release again");
}

#[test]
fn read_never_follows_a_symbolic_link_in_queue() {
    // sluice-local reads queue files as root; `queue/` is the daemons'
    // user's: a link there must not make root read another file.
    let (dir, spool) = spool();
    let id = QueueId::generate();
    let victim = dir.path().join("victim");
    fs::write(&victim, file_bytes(id)).unwrap();
    symlink(&victim, spool.path(Area::Queue, id)).unwrap();
    let err = spool.read(id).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(spool.list(Area::Corrupt).unwrap().is_empty());
}

#[test]
fn quarantine_never_writes_its_note_through_a_symbolic_link() {
    // A link planted where the `.why` note goes must not make root
    // overwrite the file it points to.
    let (dir, spool) = spool();
    let id = QueueId::generate();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    symlink(
        &victim,
        format!("{}.why", spool.path(Area::Corrupt, id).display()),
    )
    .unwrap();
    let path = spool.path(Area::Queue, id);
    fs::write(&path, b"not a queue file").unwrap();
    let moved = spool.quarantine(&path, "bad").unwrap();
    assert!(moved.exists());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}
