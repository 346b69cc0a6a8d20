//! The directory of local recipients: which addresses of `local_domains`
//! exist ([`Directory::lookup`], asked by smtpd at RCPT time) and where
//! mail for one of them goes ([`Directory::expand`], used by
//! `sluice-local`).
//!
//! Resolution of `local+ext@domain`, the local part folded to lower case:
//!
//! 1. the aliases file: `local+ext@domain`, `local+ext`, then without the
//!    extension `local@domain`, `local`; targets are expanded in turn
//!    (recursively, through `:include:` files); a target naming the alias
//!    itself, or written `\name`, is that user's mailbox;
//! 2. the virtual mailbox map: `local+ext@domain`, then `local@domain`;
//! 3. the system user `local` (passwd), and its `~/.forward` when
//!    `local.forward` is on (addresses only; `\name` is the mailbox);
//! 4. `postmaster`, when none of the above knows it, goes to
//!    `local.postmaster`;
//! 5. anything else is unknown: `5.1.1`.
//!
//! An address met again on the way down (`a: b` and `b: a`), or nesting
//! deeper than [`MAX_DEPTH`], is a mail loop (`5.4.6`). Final destinations
//! are listed once each.
//!
//! The aliases file and the virtual map are read again when their size,
//! inode or modification time changes (smtpd is long-lived), at the next
//! question after the change.
//!
//! # Must never
//! Let a `|command` or `/file` target through unless the config enables it
//! and the file it came from (the aliases file, and an include file on the
//! way) is owned by root; take a `.forward` command or file; or answer
//! `Unknown` because a file could not be read (that is `Unavailable`: a
//! temporary failure, never a 550 for a real user).
//!
//! # Security
//! Runs as the `sluice` user in smtpd and as root in `sluice-local`. The
//! aliases file and virtual map are the operator's; include and `.forward`
//! files may be users': see [`crate::system`]. Addresses come from SMTP
//! clients and are only compared, never used as paths.
//!
//! # Errors
//! Bad lines are logged (`file:line: why`) once per load and skipped. A
//! file that cannot be read makes [`Lookup::Unavailable`] and temporary
//! failures; a reload that fails keeps the last good contents.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::aliases::{self, Table, Target};
use crate::system::{Account, ForwardError, Host, System};
use crate::virtual_map::{self, VirtualMap};

/// Deepest nesting of aliases, includes and forwards.
pub const MAX_DEPTH: usize = 20;

/// Largest aliases, include or map file read, in bytes.
const FILE_MAX: u64 = 16 << 20;

/// What the directory needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The aliases file (`local.aliases`); a missing file is an empty one.
    pub aliases: PathBuf,
    /// The virtual mailbox map (`local.virtual_mailboxes`), if any.
    pub virtual_mailboxes: Option<PathBuf>,
    /// Where its relative paths live (`local.virtual_base`), if anywhere.
    pub virtual_base: Option<PathBuf>,
    /// Characters separating a user from an extension (`local.recipient_delimiter`).
    pub recipient_delimiter: String,
    /// Where `postmaster` goes when nothing else knows it (`local.postmaster`).
    pub postmaster: String,
    /// The local domains (`local_domains`, lower case; `.d` = subdomains).
    pub local_domains: Vec<String>,
    /// Honour `~/.forward` (`local.forward`).
    pub forward: bool,
    /// Allow `|command` targets (`local.allow_commands`).
    pub allow_commands: bool,
    /// Allow `/file` targets (`local.allow_files`).
    pub allow_files: bool,
}

impl Settings {
    /// The settings in `config`.
    pub fn from_config(config: &sluice_config::Config) -> Settings {
        let l = &config.local;
        Settings {
            aliases: l.aliases.clone(),
            virtual_mailboxes: (!l.virtual_mailboxes.as_os_str().is_empty())
                .then(|| l.virtual_mailboxes.clone()),
            virtual_base: (!l.virtual_base.as_os_str().is_empty()).then(|| l.virtual_base.clone()),
            recipient_delimiter: l.recipient_delimiter.clone(),
            postmaster: l.postmaster.clone(),
            local_domains: config.local_domains.clone(),
            forward: l.forward,
            allow_commands: l.allow_commands,
            allow_files: l.allow_files,
        }
    }
}

/// The answer to "does this local address exist?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Mail for it can be delivered (an alias, a virtual mailbox, a system
    /// user, or the postmaster).
    Deliverable,
    /// No such recipient: smtpd answers `550 5.1.1`.
    Unknown,
    /// The directory could not be read (a file or the passwd database):
    /// smtpd answers `451 4.3.0`, never 550.
    Unavailable,
}

/// Where mail for a local address ends up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A system user's mailbox (`local.mailbox`), written as that user.
    Mailbox {
        /// The address delivered to (for `Delivered-To:`), lower case.
        address: String,
        /// The user.
        account: Account,
    },
    /// A virtual mailbox, written as `local.virtual_owner`.
    Virtual {
        /// The address delivered to, lower case.
        address: String,
        /// The mailbox (ending in `/`: a Maildir).
        path: PathBuf,
    },
    /// Not local: to be queued again for this address.
    Remote {
        /// The address as the alias or `.forward` wrote it.
        address: String,
    },
    /// `|command`, run as `local.command_user`.
    Command {
        /// The alias it came from.
        address: String,
        /// The command line for `sh -c`.
        command: String,
    },
    /// `/file`, appended to as `local.command_user`.
    File {
        /// The alias it came from.
        address: String,
        /// The file.
        path: PathBuf,
    },
}

/// Permanent or temporary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Bounce.
    Permanent,
    /// Try again later.
    Temporary,
}

/// A part of an expansion that cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The address (or alias) that failed.
    pub address: String,
    /// Bounce or defer.
    pub severity: Severity,
    /// The enhanced status code (`5.1.1`, `5.4.6`, `4.3.0`, ...).
    pub dsn: &'static str,
    /// Why, for the log and the bounce.
    pub reason: String,
}

/// Where mail for one recipient goes: its destinations, and what failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Final destinations, each once, in the order met.
    pub destinations: Vec<Destination>,
    /// What could not be resolved.
    pub failures: Vec<Failure>,
}

/// Identity of a file's contents, to notice changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    }
}

/// One loaded file: its contents, stamp and owner.
#[derive(Debug)]
struct Loaded<T> {
    value: Arc<T>,
    /// The stamp of what `value` holds; `None`: read again next time.
    stamp: Option<Stamp>,
    owner: Option<u32>,
    /// `value` was read from the file (or the file is absent and that is
    /// fine): failures then keep it.
    good: bool,
    /// Set while reading fails and there is nothing good to keep.
    failed: Option<String>,
    /// The last problem logged, so that each is logged once.
    last_error: Option<String>,
}

impl<T: Default> Loaded<T> {
    fn unread() -> Loaded<T> {
        Loaded {
            value: Arc::new(T::default()),
            stamp: None,
            owner: None,
            good: false,
            failed: Some("not read yet".to_owned()),
            last_error: None,
        }
    }

    fn fail(&mut self, reason: String) {
        if self.last_error.as_deref() != Some(reason.as_str()) {
            if self.good {
                log::warn!("{reason}; keeping what was read before");
            } else {
                log::warn!("{reason}");
            }
            self.last_error = Some(reason.clone());
        }
        self.stamp = None;
        if !self.good {
            self.failed = Some(reason);
        }
    }
}

/// Reads `path` again if it changed. `missing_ok`: a missing file is an
/// empty one (the aliases file), else it is a failure (a configured map).
fn refresh<T: Default>(
    loaded: &mut Loaded<T>,
    path: &Path,
    missing_ok: bool,
    parse: impl FnOnce(&str) -> T,
    report: impl FnOnce(&T),
) {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => {
            if !loaded.good || loaded.owner.is_some() {
                *loaded = Loaded {
                    value: Arc::new(T::default()),
                    stamp: None,
                    owner: None,
                    good: true,
                    failed: None,
                    last_error: None,
                };
            }
            return;
        }
        Err(e) => {
            loaded.fail(format!("cannot read {}: {e}", path.display()));
            return;
        }
    };
    let stamp = stamp_of(&meta);
    if loaded.stamp == Some(stamp) {
        return;
    }
    match read_text(path) {
        Ok(text) => {
            let value = parse(&text);
            report(&value);
            *loaded = Loaded {
                value: Arc::new(value),
                stamp: Some(stamp),
                owner: Some(meta.uid()),
                good: true,
                failed: None,
                last_error: None,
            };
        }
        Err(e) => loaded.fail(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads a text file of at most [`FILE_MAX`] bytes (invalid UTF-8 is
/// replaced, so that a stray byte spoils one line, not the file).
/// Reads an `:include:` file and its owner, whose uid decides whether its
/// commands and files may run: one open, never through a symbolic link,
/// and the owner from `fstat` on that descriptor, so that the file read is
/// the file whose owner was checked (a link swapped in between cannot lend
/// root's trust to a user's file).
fn read_include(path: &Path) -> std::io::Result<(String, u32)> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(FILE_MAX).read_to_end(&mut bytes)?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), meta.uid()))
}

pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(FILE_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Debug)]
struct Tables {
    aliases: Loaded<Table>,
    virtual_map: Loaded<VirtualMap>,
}

/// A consistent view of the files for one question.
struct View {
    aliases: Arc<Table>,
    /// The aliases file is owned by root: its commands and files may run.
    aliases_trusted: bool,
    virtual_map: Arc<VirtualMap>,
    unavailable: Option<String>,
}

/// The local recipients. Cheap to ask: files are re-read only when they
/// change. Shareable between threads.
#[derive(Debug)]
pub struct Directory<S: System = Host> {
    settings: Settings,
    system: S,
    tables: Mutex<Tables>,
}

impl Directory<Host> {
    /// A directory of the real system's users.
    pub fn new(settings: Settings) -> Directory<Host> {
        Directory::with_system(settings, Host)
    }
}

/// How one address is to be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Aliases, virtual, user, `.forward`, postmaster.
    Full,
    /// Skip the aliases (a self-reference); `.forward` still applies.
    NoAlias,
    /// The mailbox only (`\name`).
    MailboxOnly,
}

struct Walk<'a> {
    view: &'a View,
    out: Expansion,
    seen: HashSet<Destination>,
    stack: Vec<String>,
}

impl Walk<'_> {
    fn push(&mut self, d: Destination) {
        if self.seen.insert(d.clone()) {
            self.out.destinations.push(d);
        }
    }

    fn fail(&mut self, address: &str, severity: Severity, dsn: &'static str, reason: String) {
        self.out.failures.push(Failure {
            address: address.to_owned(),
            severity,
            dsn,
            reason,
        });
    }
}

/// `local@domain` split at the last `@`; the domain lower case.
fn split(address: &str) -> (&str, String) {
    match address.rsplit_once('@') {
        Some((local, domain)) => (local, domain.trim_end_matches('.').to_ascii_lowercase()),
        None => (address, String::new()),
    }
}

impl<S: System> Directory<S> {
    /// A directory whose accounts come from `system` (tests use a fake).
    pub fn with_system(settings: Settings, system: S) -> Directory<S> {
        Directory {
            settings,
            system,
            tables: Mutex::new(Tables {
                aliases: Loaded::unread(),
                virtual_map: Loaded::unread(),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Is `domain` one of the local domains?
    pub fn is_local_domain(&self, domain: &str) -> bool {
        sluice_proto::domain::is_in_list(&self.settings.local_domains, domain)
    }

    /// The files as they are now, re-read if they changed.
    fn view(&self) -> View {
        let mut tables = match self.tables.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let aliases_path = self.settings.aliases.clone();
        refresh(
            &mut tables.aliases,
            &aliases_path,
            true,
            |text| aliases::parse(text, &aliases_path),
            |table| {
                for e in &table.errors {
                    log::warn!("{e}");
                }
            },
        );
        if let Some(path) = &self.settings.virtual_mailboxes {
            refresh(
                &mut tables.virtual_map,
                path,
                false,
                |text| virtual_map::parse(text, path, self.settings.virtual_base.as_deref()),
                |map| {
                    for e in &map.errors {
                        log::warn!("{e}");
                    }
                },
            );
        } else {
            tables.virtual_map.good = true;
            tables.virtual_map.failed = None;
        }
        let unavailable = tables
            .aliases
            .failed
            .clone()
            .or_else(|| tables.virtual_map.failed.clone());
        View {
            aliases: Arc::clone(&tables.aliases.value),
            aliases_trusted: tables.aliases.owner == Some(0),
            virtual_map: Arc::clone(&tables.virtual_map.value),
            unavailable,
        }
    }

    /// The bad lines of the aliases file and the virtual map as they are
    /// now, for `sluice check`.
    pub fn problems(&self) -> Vec<String> {
        let view = self.view();
        let mut out: Vec<String> = view.unavailable.iter().cloned().collect();
        out.extend(view.aliases.errors.iter().map(ToString::to_string));
        out.extend(view.virtual_map.errors.iter().map(ToString::to_string));
        out
    }

    /// The local part and its base without the extension, if it has one.
    fn candidates(&self, local: &str) -> (String, Option<String>) {
        let local = local.to_lowercase();
        let base = local
            .find(|c| self.settings.recipient_delimiter.contains(c))
            .filter(|&i| i > 0)
            .map(|i| local[..i].to_owned());
        (local, base)
    }

    /// Does `address` exist? For addresses in `local_domains` or without a
    /// domain (`<postmaster>`); any other domain is `Unknown` here.
    pub fn lookup(&self, address: &str) -> Lookup {
        let view = self.view();
        if view.unavailable.is_some() {
            return Lookup::Unavailable;
        }
        let (local, domain) = split(address);
        if !domain.is_empty() && !self.is_local_domain(&domain) {
            return Lookup::Unknown;
        }
        let (full, base) = self.candidates(local);
        for cand in std::iter::once(&full).chain(base.as_ref()) {
            let qualified = format!("{cand}@{domain}");
            if view.aliases.get(&qualified).is_some()
                || view.aliases.get(cand).is_some()
                || view.virtual_map.get(&qualified).is_some()
            {
                return Lookup::Deliverable;
            }
        }
        let user = base.as_ref().unwrap_or(&full);
        if user == "postmaster" {
            return Lookup::Deliverable;
        }
        match self.system.account(user) {
            Ok(Some(_)) => Lookup::Deliverable,
            Ok(None) => Lookup::Unknown,
            Err(e) => {
                log::warn!("{e}");
                Lookup::Unavailable
            }
        }
    }

    /// Where mail for `address` goes.
    pub fn expand(&self, address: &str) -> Expansion {
        let view = self.view();
        let mut walk = Walk {
            view: &view,
            out: Expansion::default(),
            seen: HashSet::new(),
            stack: Vec::new(),
        };
        if let Some(reason) = &view.unavailable {
            walk.fail(address, Severity::Temporary, "4.3.0", reason.clone());
            return walk.out;
        }
        self.resolve(&mut walk, address, "", Mode::Full);
        walk.out
    }

    fn resolve(&self, walk: &mut Walk<'_>, address: &str, context_domain: &str, mode: Mode) {
        let (local, mut domain) = split(address);
        if domain.is_empty() {
            domain = context_domain.to_owned();
        } else if !self.is_local_domain(&domain) {
            // An alias or .forward names it: it enters the queue, so it
            // passes the grammar every other address passes.
            if let Err(e) = sluice_proto::address::check_stored(address) {
                let reason = format!("bad address syntax in a forward: {e}");
                walk.fail(address, Severity::Permanent, "5.1.3", reason);
                return;
            }
            walk.push(Destination::Remote {
                address: address.to_owned(),
            });
            return;
        }
        let (full, base) = self.candidates(local);
        let qualified = |l: &str| {
            if domain.is_empty() {
                l.to_owned()
            } else {
                format!("{l}@{domain}")
            }
        };
        let key = qualified(&full);
        if walk.stack.len() >= MAX_DEPTH {
            let reason = format!("aliases nested deeper than {MAX_DEPTH} at <{key}>");
            walk.fail(&key, Severity::Permanent, "5.4.6", reason);
            return;
        }
        if mode == Mode::Full && walk.stack.contains(&key) {
            let mut path = walk.stack.clone();
            path.push(key.clone());
            let reason = format!("mail forwarding loop: {}", path.join(" -> "));
            walk.fail(&key, Severity::Permanent, "5.4.6", reason);
            return;
        }
        if mode == Mode::Full {
            for cand in std::iter::once(&full).chain(base.as_ref()) {
                let alias = walk
                    .view
                    .aliases
                    .get(&qualified(cand))
                    .or_else(|| walk.view.aliases.get(cand))
                    .cloned();
                if let Some(alias) = alias {
                    walk.stack.push(key.clone());
                    let trusted = walk.view.aliases_trusted;
                    for target in &alias.targets {
                        self.target(walk, target, &domain, &alias.name, trusted);
                    }
                    walk.stack.pop();
                    return;
                }
            }
        }
        for cand in std::iter::once(&full).chain(base.as_ref()) {
            if domain.is_empty() {
                break;
            }
            if let Some(path) = walk.view.virtual_map.get(&qualified(cand)) {
                walk.push(Destination::Virtual {
                    address: qualified(cand),
                    path: path.to_owned(),
                });
                return;
            }
        }
        let user = base.clone().unwrap_or_else(|| full.clone());
        match self.system.account(&user) {
            Ok(Some(account)) => {
                if mode != Mode::MailboxOnly && self.settings.forward {
                    match self.system.read_forward(&account) {
                        Ok(Some(text)) => {
                            if self.forward(walk, &account, &text, &key, &domain) {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e @ ForwardError::Unsafe { .. }) => log::warn!("{e}"),
                        Err(e @ ForwardError::Io { .. }) => {
                            walk.fail(&key, Severity::Temporary, "4.3.0", e.to_string());
                            return;
                        }
                    }
                }
                walk.push(Destination::Mailbox {
                    address: key,
                    account,
                });
            }
            Ok(None) if user == "postmaster" && mode == Mode::Full => {
                walk.stack.push(key);
                let postmaster = self.settings.postmaster.clone();
                self.resolve(walk, &postmaster, &domain, Mode::Full);
                walk.stack.pop();
            }
            Ok(None) => {
                let reason = format!("<{key}>: no such user here");
                walk.fail(&key, Severity::Permanent, "5.1.1", reason);
            }
            Err(reason) => walk.fail(&key, Severity::Temporary, "4.3.0", reason),
        }
    }

    /// Follows `account`'s `.forward`. False when it names nothing (then
    /// the mailbox is used).
    fn forward(
        &self,
        walk: &mut Walk<'_>,
        account: &Account,
        text: &str,
        key: &str,
        domain: &str,
    ) -> bool {
        let path = account.home.join(".forward");
        let (targets, errors) = aliases::parse_list_file(text, &path);
        for e in &errors {
            log::warn!("{e}");
        }
        let mut any = false;
        walk.stack.push(key.to_owned());
        for target in &targets {
            match target {
                Target::Address(a) => {
                    any = true;
                    self.address_target(walk, a, domain, &account.name, Mode::MailboxOnly);
                }
                other => log::warn!(
                    "{}: {other} ignored: a .forward may only name addresses",
                    path.display()
                ),
            }
        }
        walk.stack.pop();
        any
    }

    /// An address target of an alias or `.forward` whose own name is
    /// `name`; naming itself resolves with `self_mode`.
    fn address_target(
        &self,
        walk: &mut Walk<'_>,
        address: &str,
        domain: &str,
        name: &str,
        self_mode: Mode,
    ) {
        if let Some(user) = address.strip_prefix('\\') {
            self.resolve(walk, user, domain, Mode::MailboxOnly);
            return;
        }
        let (local, target_domain) = split(address);
        let same_domain = target_domain.is_empty() || target_domain == domain;
        let name_local = name.split_once('@').map_or(name, |(l, _)| l);
        if same_domain && local.to_lowercase() == name_local {
            // `bob: bob, archive` and a `.forward` naming its own user.
            self.resolve(walk, address, domain, self_mode);
        } else {
            self.resolve(walk, address, domain, Mode::Full);
        }
    }

    fn target(
        &self,
        walk: &mut Walk<'_>,
        target: &Target,
        domain: &str,
        name: &str,
        trusted: bool,
    ) {
        let qualified = if domain.is_empty() || name.contains('@') {
            name.to_owned()
        } else {
            format!("{name}@{domain}")
        };
        match target {
            Target::Address(a) => self.address_target(walk, a, domain, name, Mode::NoAlias),
            Target::Include(path) => self.include(walk, path, domain, name, trusted),
            Target::Command(command) => {
                if let Some(why) = self.refusal(trusted, self.settings.allow_commands, "commands") {
                    walk.fail(&qualified, Severity::Permanent, "5.7.1", why);
                } else {
                    walk.push(Destination::Command {
                        address: qualified,
                        command: command.clone(),
                    });
                }
            }
            Target::File(path) => {
                if let Some(why) = self.refusal(trusted, self.settings.allow_files, "files") {
                    walk.fail(&qualified, Severity::Permanent, "5.7.1", why);
                } else {
                    walk.push(Destination::File {
                        address: qualified,
                        path: path.clone(),
                    });
                }
            }
        }
    }

    fn refusal(&self, trusted: bool, enabled: bool, what: &str) -> Option<String> {
        if !enabled {
            Some(format!(
                "delivery to {what} is turned off (local.allow_{what})"
            ))
        } else if !trusted {
            Some(format!(
                "delivery to {what} refused: the file that names it is not owned by root"
            ))
        } else {
            None
        }
    }

    fn include(&self, walk: &mut Walk<'_>, path: &Path, domain: &str, name: &str, trusted: bool) {
        let key = format!(":include:{}", path.display());
        if walk.stack.contains(&key) {
            let reason = format!("{} includes itself", path.display());
            walk.fail(name, Severity::Permanent, "5.4.6", reason);
            return;
        }
        let (text, owner) = match read_include(path) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("cannot read include file {}: {e}", path.display());
                log::warn!("{reason}");
                let (severity, dsn) = if e.kind() == std::io::ErrorKind::NotFound {
                    (Severity::Permanent, "5.3.0")
                } else {
                    (Severity::Temporary, "4.3.0")
                };
                walk.fail(name, severity, dsn, reason);
                return;
            }
        };
        let (targets, errors) = aliases::parse_list_file(&text, path);
        for e in &errors {
            log::warn!("{e}");
        }
        walk.stack.push(key);
        for target in &targets {
            self.target(walk, target, domain, name, trusted && owner == 0);
        }
        walk.stack.pop();
    }
}

#[cfg(test)]
mod tests;
