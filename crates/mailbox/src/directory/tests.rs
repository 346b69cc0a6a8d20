//! Unit tests of `directory`.
use std::collections::HashMap;
use std::io::Write as _;

use super::*;

/// Made-up accounts and `.forward` files.
#[derive(Default)]
struct Fake {
    users: HashMap<String, Account>,
    forwards: HashMap<String, String>,
    broken_passwd: bool,
}

impl Fake {
    fn with_users(names: &[&str]) -> Fake {
        let mut fake = Fake::default();
        for (i, name) in names.iter().enumerate() {
            fake.users.insert(
                (*name).to_owned(),
                Account {
                    name: (*name).to_owned(),
                    uid: 1000 + i as u32,
                    gid: 1000 + i as u32,
                    home: PathBuf::from(format!("/home/{name}")),
                },
            );
        }
        fake
    }
}

impl System for Fake {
    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        if self.broken_passwd {
            return Err("passwd is down".to_owned());
        }
        Ok(self.users.get(name).cloned())
    }

    fn read_forward(&self, account: &Account) -> Result<Option<String>, ForwardError> {
        Ok(self.forwards.get(&account.name).cloned())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    settings: Settings,
}

impl Setup {
    fn new(aliases: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::write(&path, aliases).unwrap();
        Setup {
            settings: Settings {
                aliases: path,
                virtual_mailboxes: None,
                virtual_base: None,
                recipient_delimiter: "+".to_owned(),
                postmaster: "root".to_owned(),
                local_domains: vec!["local.test".to_owned(), ".sub.test".to_owned()],
                forward: true,
                allow_commands: false,
                allow_files: false,
            },
            dir,
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn directory(&self, fake: Fake) -> Directory<Fake> {
        Directory::with_system(self.settings.clone(), fake)
    }
}

fn mailbox(address: &str, user: &str) -> String {
    format!("mailbox {address} as {user}")
}

/// Destinations and failures as short strings, for readable asserts.
fn show(e: &Expansion) -> (Vec<String>, Vec<String>) {
    let d = e
        .destinations
        .iter()
        .map(|d| match d {
            Destination::Mailbox { address, account } => mailbox(address, &account.name),
            Destination::Virtual { address, path } => {
                format!("virtual {address} at {}", path.display())
            }
            Destination::Remote { address } => format!("remote {address}"),
            Destination::Command { address, command } => format!("command {command} for {address}"),
            Destination::File { address, path } => {
                format!("file {} for {address}", path.display())
            }
        })
        .collect();
    let f = e
        .failures
        .iter()
        .map(|f| format!("{} {}", f.dsn, f.address))
        .collect();
    (d, f)
}

#[test]
fn lists_and_nested_aliases_expand_to_mailboxes_and_remote_addresses() {
    let s = Setup::new(
        "team: alice, leads, partner@remote.test\nleads: bob, carol@local.test\n\
         everyone: team, leads\n",
    );
    let d = s.directory(Fake::with_users(&["alice", "bob", "carol"]));
    let (dest, fail) = show(&d.expand("team@local.test"));
    assert_eq!(
        dest,
        [
            mailbox("alice@local.test", "alice"),
            mailbox("bob@local.test", "bob"),
            mailbox("carol@local.test", "carol"),
            "remote partner@remote.test".to_owned(),
        ]
    );
    assert!(fail.is_empty(), "{fail:?}");
    // Reached twice (through team and through leads): delivered once.
    let (dest, _) = show(&d.expand("everyone@local.test"));
    assert_eq!(dest.len(), 4, "{dest:?}");
}

#[test]
fn include_files_are_read_and_their_loops_caught() {
    let s = Setup::new("");
    let list = s.file("list", "# members\nalice, bob\ncarol\n");
    let looped = s.dir.path().join("self");
    std::fs::write(&looped, format!(":include:{}\n", looped.display())).unwrap();
    let text = format!(
        "list: :include:{}\nself: :include:{}\nmissing: :include:{}/none\n",
        list.display(),
        looped.display(),
        s.dir.path().display()
    );
    s.file("aliases", &text);
    let d = s.directory(Fake::with_users(&["alice", "bob", "carol"]));
    let (dest, fail) = show(&d.expand("list@local.test"));
    assert_eq!(dest.len(), 3, "{dest:?}");
    assert!(fail.is_empty());
    let e = d.expand("self@local.test");
    assert!(e.destinations.is_empty());
    assert_eq!(e.failures[0].dsn, "5.4.6");
    assert!(e.failures[0].reason.contains("includes itself"));
    let e = d.expand("missing@local.test");
    assert_eq!(
        (e.failures[0].severity, e.failures[0].dsn),
        (Severity::Permanent, "5.3.0")
    );
}

#[test]
fn alias_loops_bounce_with_the_path() {
    let s = Setup::new("a: b\nb: c\nc: a\nme: me, bob\n");
    let d = s.directory(Fake::with_users(&["me", "bob"]));
    let e = d.expand("a@local.test");
    assert!(e.destinations.is_empty());
    assert_eq!(e.failures.len(), 1);
    let f = &e.failures[0];
    assert_eq!((f.severity, f.dsn), (Severity::Permanent, "5.4.6"));
    assert_eq!(
        f.reason,
        "mail forwarding loop: a@local.test -> b@local.test -> c@local.test -> a@local.test"
    );
    // Naming oneself is not a loop: it is one's own mailbox.
    let (dest, fail) = show(&d.expand("me@local.test"));
    assert_eq!(
        dest,
        [
            mailbox("me@local.test", "me"),
            mailbox("bob@local.test", "bob")
        ]
    );
    assert!(fail.is_empty());
}

#[test]
fn deep_nesting_is_a_loop_too() {
    let text: String = (0..30).map(|i| format!("n{i}: n{}\n", i + 1)).collect();
    let s = Setup::new(&text);
    let d = s.directory(Fake::with_users(&["n30"]));
    let e = d.expand("n0@local.test");
    assert!(e.destinations.is_empty());
    assert_eq!(e.failures[0].dsn, "5.4.6");
    assert!(e.failures[0].reason.contains("deeper than 20"));
}

#[test]
fn delimiter_and_case() {
    let s = Setup::new("Sales: bob\nsales+urgent: carol\n");
    let d = s.directory(Fake::with_users(&["bob", "carol", "alice"]));
    for (address, want) in [
        ("SALES@Local.Test", mailbox("bob@local.test", "bob")),
        ("sales+misc@local.test", mailbox("bob@local.test", "bob")),
        (
            "Sales+Urgent@local.test",
            mailbox("carol@local.test", "carol"),
        ),
        (
            "ALICE+lists@LOCAL.TEST",
            mailbox("alice+lists@local.test", "alice"),
        ),
    ] {
        let (dest, fail) = show(&d.expand(address));
        assert_eq!(dest, [want], "{address}");
        assert!(fail.is_empty(), "{address}: {fail:?}");
        assert_eq!(d.lookup(address), Lookup::Deliverable, "{address}");
    }
    // "+x" alone is not an extension of an empty user.
    assert_eq!(d.lookup("+x@local.test"), Lookup::Unknown);
    assert_eq!(d.lookup("nobody+x@local.test"), Lookup::Unknown);
}

#[test]
fn no_delimiter_means_no_extensions() {
    let mut s = Setup::new("");
    s.settings.recipient_delimiter = String::new();
    let d = s.directory(Fake::with_users(&["bob"]));
    assert_eq!(d.lookup("bob@local.test"), Lookup::Deliverable);
    assert_eq!(d.lookup("bob+x@local.test"), Lookup::Unknown);
}

#[test]
fn postmaster_is_always_deliverable() {
    let s = Setup::new("");
    let d = s.directory(Fake::with_users(&["root"]));
    for address in [
        "postmaster",
        "Postmaster@local.test",
        "postmaster@x.sub.test",
    ] {
        assert_eq!(d.lookup(address), Lookup::Deliverable, "{address}");
    }
    let (dest, _) = show(&d.expand("postmaster@local.test"));
    assert_eq!(dest, [mailbox("root@local.test", "root")]);
    let (dest, _) = show(&d.expand("postmaster"));
    assert_eq!(dest, [mailbox("root", "root")]);
    // An alias wins over the configured address.
    s.file("aliases", "postmaster: alice\n");
    let d = s.directory(Fake::with_users(&["root", "alice"]));
    let (dest, _) = show(&d.expand("POSTMASTER@local.test"));
    assert_eq!(dest, [mailbox("alice@local.test", "alice")]);
    // The configured address may be remote.
    let mut s = Setup::new("");
    s.settings.postmaster = "admin@remote.test".to_owned();
    let d = s.directory(Fake::default());
    let (dest, _) = show(&d.expand("postmaster@local.test"));
    assert_eq!(dest, ["remote admin@remote.test"]);
}

#[test]
fn unknown_users_and_other_domains() {
    let s = Setup::new("");
    let d = s.directory(Fake::with_users(&["bob"]));
    assert_eq!(d.lookup("ghost@local.test"), Lookup::Unknown);
    assert_eq!(d.lookup("bob@elsewhere.test"), Lookup::Unknown);
    let e = d.expand("ghost@local.test");
    assert_eq!(e.failures[0].dsn, "5.1.1");
    assert_eq!(
        e.failures[0].reason,
        "<ghost@local.test>: no such user here"
    );
}

#[test]
fn a_broken_line_spoils_only_itself() {
    let s = Setup::new("a: bob\nthis is broken\nc: carol\n");
    let d = s.directory(Fake::with_users(&["bob", "carol"]));
    let problems = d.problems();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .ends_with("aliases:2: missing \":\" after the alias name in \"this is broken\""),
        "{problems:?}"
    );
    assert_eq!(show(&d.expand("a@local.test")).0.len(), 1);
    assert_eq!(show(&d.expand("c@local.test")).0.len(), 1);
}

#[test]
fn files_are_read_again_when_they_change() {
    let s = Setup::new("old: bob\n");
    let d = s.directory(Fake::with_users(&["bob"]));
    assert_eq!(d.lookup("old@local.test"), Lookup::Deliverable);
    assert_eq!(d.lookup("new@local.test"), Lookup::Unknown);
    // A longer file: its size changes even within one mtime tick.
    s.file("aliases", "new: bob\n# and a comment\n");
    assert_eq!(d.lookup("new@local.test"), Lookup::Deliverable);
    assert_eq!(d.lookup("old@local.test"), Lookup::Unknown);
    // A missing aliases file is an empty one.
    std::fs::remove_file(&s.settings.aliases).unwrap();
    assert_eq!(d.lookup("new@local.test"), Lookup::Unknown);
    assert_eq!(d.lookup("bob@local.test"), Lookup::Deliverable);
}

#[test]
fn virtual_mailboxes_and_an_unreadable_map() {
    let mut s = Setup::new("info: alice@local.test\n");
    let map = s.file(
        "virtual",
        "alice@local.test /srv/mail/alice/\nbob@local.test /srv/mail/bob\n",
    );
    s.settings.virtual_mailboxes = Some(map.clone());
    let d = s.directory(Fake::default());
    let (dest, fail) = show(&d.expand("Info@local.test"));
    assert_eq!(dest, ["virtual alice@local.test at /srv/mail/alice/"]);
    assert!(fail.is_empty());
    let (dest, _) = show(&d.expand("bob+tag@local.test"));
    assert_eq!(dest, ["virtual bob@local.test at /srv/mail/bob"]);
    assert_eq!(d.lookup("bob@local.test"), Lookup::Deliverable);
    assert_eq!(d.lookup("carol@local.test"), Lookup::Unknown);
    // Once read, a map that disappears keeps its last contents...
    std::fs::remove_file(&map).unwrap();
    assert_eq!(d.lookup("bob@local.test"), Lookup::Deliverable);
    // ...but a map never read makes every answer temporary, never a 550.
    let d = s.directory(Fake::default());
    assert_eq!(d.lookup("carol@local.test"), Lookup::Unavailable);
    let e = d.expand("bob@local.test");
    assert_eq!(
        (e.failures[0].severity, e.failures[0].dsn),
        (Severity::Temporary, "4.3.0")
    );
}

#[test]
fn a_passwd_failure_is_temporary() {
    let s = Setup::new("");
    let mut fake = Fake::with_users(&["bob"]);
    fake.broken_passwd = true;
    let d = s.directory(fake);
    assert_eq!(d.lookup("bob@local.test"), Lookup::Unavailable);
    assert_eq!(d.expand("bob@local.test").failures[0].dsn, "4.3.0");
}

#[test]
fn forward_files_take_addresses_and_the_backslash() {
    let s = Setup::new("");
    let mut fake = Fake::with_users(&["alice", "bob", "carol"]);
    fake.forwards.insert(
        "alice".into(),
        "# keep a copy\n\\alice, bob, away@remote.test\n|/bin/evil\n".into(),
    );
    fake.forwards
        .insert("bob".into(), "Bob\ncarol@local.test\n".into());
    fake.forwards.insert("carol".into(), "alice\n".into());
    let d = s.directory(fake);
    let (dest, fail) = show(&d.expand("alice@local.test"));
    assert_eq!(
        dest,
        [
            mailbox("alice@local.test", "alice"),
            mailbox("bob@local.test", "bob"),
            "remote away@remote.test".to_owned(),
        ]
    );
    // bob -> carol -> alice is a loop back to alice.
    assert_eq!(fail, ["5.4.6 alice@local.test"]);
}

#[test]
fn forward_can_be_turned_off() {
    let mut s = Setup::new("");
    s.settings.forward = false;
    let mut fake = Fake::with_users(&["alice"]);
    fake.forwards
        .insert("alice".into(), "away@remote.test\n".into());
    let d = s.directory(fake);
    let (dest, _) = show(&d.expand("alice@local.test"));
    assert_eq!(dest, [mailbox("alice@local.test", "alice")]);
}

#[test]
fn commands_and_files_need_the_switch_and_a_root_owned_file() {
    let mut s = Setup::new("log: /var/log/x, \"|/bin/cat -u\"\n");
    let d = s.directory(Fake::default());
    let e = d.expand("log@local.test");
    assert!(e.destinations.is_empty());
    assert_eq!(e.failures.len(), 2);
    assert!(e.failures.iter().all(|f| f.dsn == "5.7.1"));
    assert!(e.failures[0].reason.contains("local.allow_files"));
    s.settings.allow_commands = true;
    s.settings.allow_files = true;
    let d = s.directory(Fake::default());
    let e = d.expand("log@local.test");
    if nix::unistd::Uid::effective().is_root() {
        let (dest, fail) = show(&e);
        assert_eq!(
            dest,
            [
                "file /var/log/x for log@local.test",
                "command /bin/cat -u for log@local.test"
            ]
        );
        assert!(fail.is_empty());
        // The same file owned by someone else: refused.
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&s.settings.aliases, Some(nobody.uid), None).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&s.settings.aliases)
            .unwrap();
        f.write_all(b"# touched\n").unwrap();
        let e = d.expand("log@local.test");
        assert!(e.destinations.is_empty());
        assert!(e.failures[0].reason.contains("not owned by root"));
    } else {
        assert!(e.destinations.is_empty());
        assert!(e.failures[0].reason.contains("not owned by root"));
    }
}

#[test]
fn an_include_file_is_never_read_through_a_symbolic_link() {
    // The include file's owner decides whether its commands may run, so
    // the file read must be the file checked: a link is refused.
    let s = Setup::new("");
    let list = s.file("list", "alice, bob\n");
    let link = s.dir.path().join("link");
    std::os::unix::fs::symlink(&list, &link).unwrap();
    s.file("aliases", &format!("list: :include:{}\n", link.display()));
    let d = s.directory(Fake::with_users(&["alice", "bob"]));
    let e = d.expand("list@local.test");
    assert!(e.destinations.is_empty(), "{:?}", e.destinations);
    assert!(
        e.failures[0].reason.contains("cannot read include file"),
        "{}",
        e.failures[0].reason
    );
}
