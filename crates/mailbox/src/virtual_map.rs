//! The virtual mailbox map (`local.virtual_mailboxes`): mailboxes for
//! addresses that have no Unix account, all owned by one configured user
//! (pure code: text in, entries and per-line errors out).
//!
//! ```text
//! # address               mailbox (ending in "/": a Maildir, else mbox)
//! alice@example.org       /var/mail/vhosts/example.org/alice/
//! bob@example.org         /var/mail/vhosts/example.org/bob.mbox
//! ```
//!
//! One entry per line: a full address (matched without regard to case),
//! white space, an absolute path. Empty lines and `#` comments are ignored.
//!
//! # Must never
//! Panic on any input, stop at a bad line (it is reported and skipped), or
//! accept a relative path or one with `..` (a mailbox must stay where the
//! operator put it).
//!
//! # Security
//! The map is the operator's file; it decides where the virtual owner
//! writes, so paths are checked strictly.
//!
//! # Errors
//! Each bad line gives one [`LineError`] naming the file and line.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::aliases::{quote, LineError};

/// A parsed virtual mailbox map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualMap {
    entries: HashMap<String, PathBuf>,
    /// The lines that were skipped, and why.
    pub errors: Vec<LineError>,
}

impl VirtualMap {
    /// The mailbox of `address` (lower-cased before the lookup).
    pub fn get(&self, address: &str) -> Option<&Path> {
        self.entries
            .get(&address.to_lowercase())
            .map(PathBuf::as_path)
    }

    /// How many entries were read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry was read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses a virtual mailbox map; `path` is only used in errors. A relative
/// mailbox path is taken under `base` (Postfix's `virtual_mailbox_base`),
/// and is an error when there is no base.
pub fn parse(text: &str, path: &Path, base: Option<&Path>) -> VirtualMap {
    let mut map = VirtualMap::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| LineError {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let mut fields = line.split_whitespace();
        let (Some(address), Some(mailbox), None) = (fields.next(), fields.next(), fields.next())
        else {
            map.errors.push(error(format!(
                "expected \"address  /path\", got {}",
                quote(line)
            )));
            continue;
        };
        let valid_address = address
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
        if !valid_address {
            map.errors.push(error(format!(
                "{} is not a full address (user@domain)",
                quote(address)
            )));
            continue;
        }
        let mailbox_path = Path::new(mailbox);
        let has_parent = mailbox_path
            .components()
            .any(|c| matches!(c, Component::ParentDir));
        let resolved = match (mailbox_path.is_absolute(), base) {
            _ if has_parent => None,
            (true, _) => Some(PathBuf::from(mailbox)),
            // Joined as text, to keep the trailing "/" that marks a Maildir.
            (false, Some(base)) => Some(PathBuf::from(format!(
                "{}/{mailbox}",
                base.display().to_string().trim_end_matches('/')
            ))),
            (false, None) => None,
        };
        let Some(resolved) = resolved else {
            map.errors.push(error(format!(
                "mailbox {} must be an absolute path without \"..\" (or a relative one under local.virtual_base)",
                quote(mailbox)
            )));
            continue;
        };
        let key = address.to_lowercase();
        if map.entries.contains_key(&key) {
            map.errors.push(error(format!(
                "{} is listed twice; this line is ignored",
                quote(address)
            )));
            continue;
        }
        map.entries.insert(key, resolved);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_comments_and_errors() {
        let map = parse(
            "# map\nAlice@Example.org  /srv/mail/alice/\nbob@example.org\t/srv/mail/bob.mbox\n\
             carol /srv/carol/\ndave@example.org relative/\nerin@example.org /a/../b\n\
             alice@example.org /other/\nx@y /a /b\n",
            Path::new("/etc/sluice/virtual"),
            None,
        );
        assert_eq!(
            map.get("ALICE@example.ORG"),
            Some(Path::new("/srv/mail/alice/"))
        );
        assert_eq!(
            map.get("bob@example.org"),
            Some(Path::new("/srv/mail/bob.mbox"))
        );
        assert_eq!(map.len(), 2);
        let lines: Vec<usize> = map.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8]);
        assert!(map.errors[0]
            .to_string()
            .starts_with("/etc/sluice/virtual:4: "));
    }

    #[test]
    fn relative_paths_live_under_the_base() {
        let text = "a@x.test  a/\nb@x.test /abs/b\nc@x.test ../c/\n";
        let map = parse(text, Path::new("v"), Some(Path::new("/srv/mail/")));
        assert_eq!(map.get("a@x.test"), Some(Path::new("/srv/mail/a/")));
        assert!(map
            .get("a@x.test")
            .is_some_and(|p| p.to_string_lossy().ends_with('/')));
        assert_eq!(map.get("b@x.test"), Some(Path::new("/abs/b")));
        assert_eq!(map.get("c@x.test"), None, "no escaping the base with ..");
        assert_eq!(map.errors.len(), 1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = parse(&text, Path::new("x"), Some(Path::new("/base")));
        }
    }
}
