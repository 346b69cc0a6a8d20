//! The aliases file (aliases(5), the classic `/etc/aliases` format) and the
//! target lists shared by `:include:` files and `~/.forward` (pure code:
//! text in, entries and per-line errors out).
//!
//! ```text
//! # comment
//! postmaster: root
//! team:   alice, bob@example.org,
//!         carol                      <- a line starting with white space continues
//! list:   :include:/etc/sluice/list.txt
//! archive: "|/usr/local/bin/archive --quiet", /var/log/mail.archive
//! ```
//!
//! A logical line is `name: target, target, ...`; a physical line that
//! starts with white space continues the one before; empty lines and lines
//! whose first non-blank character is `#` are ignored. Names are compared
//! without regard to case. A target is an address, `:include:/path`,
//! `|command` (or `"|command with spaces"`), or `/path/of/a/file`.
//!
//! # Must never
//! Panic on any input (a proptest drives random text through [`parse`]),
//! stop at a bad line (it is reported and skipped, the other entries still
//! work), or decide whether a command or file target may run: that is the
//! expansion's question, which knows the file's owner and the config.
//!
//! # Security
//! The aliases file is the operator's, but include files and `.forward`
//! files may be written by users: everything here treats text as hostile,
//! bounds nothing by what it declares, and quotes it only cut short.
//!
//! # Errors
//! Each bad line gives one [`LineError`] naming the file and the line; the
//! caller logs it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where an alias sends mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An address: a local name (`bob`), a full address, or `\bob` (the
    /// mailbox of `bob`, with no further alias or `.forward` expansion).
    Address(String),
    /// `:include:/path`: more targets, read from that file.
    Include(PathBuf),
    /// `|command`: the message on the standard input of `sh -c command`.
    Command(String),
    /// `/path`: the message appended to that file (mbox format).
    File(PathBuf),
}

/// One alias: `name: targets` from line `line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The name, lower case (`postmaster`, or `sales@example.org`).
    pub name: String,
    /// Its targets, in order.
    pub targets: Vec<Target>,
    /// The line where the entry starts (1-based).
    pub line: usize,
}

/// A bad line in a file of aliases, includes or forwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct LineError {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based; for an entry with continuation lines, its first).
    pub line: usize,
    /// What is wrong (hostile text is quoted escaped and cut short).
    pub message: String,
}

/// A parsed aliases file: the good entries by name, and the bad lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    entries: HashMap<String, Alias>,
    /// The lines that were skipped, and why.
    pub errors: Vec<LineError>,
}

impl Table {
    /// The entry for `name` (matched without regard to case).
    pub fn get(&self, name: &str) -> Option<&Alias> {
        self.entries.get(&name.to_lowercase())
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

/// Longest piece of hostile text quoted in an error.
const QUOTE_MAX: usize = 60;

/// `text` escaped and cut short, for error messages.
pub(crate) fn quote(text: &str) -> String {
    let short: String = text.chars().take(QUOTE_MAX).collect();
    let mut out = format!("{short:?}");
    if text.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

/// Logical lines of `text`: (first line number, joined text), comments
/// and empty lines dropped, continuation lines joined with a space.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = line.starts_with([' ', '\t']);
        match out.last_mut() {
            Some((_, joined)) if continues => {
                joined.push(' ');
                joined.push_str(trimmed);
            }
            _ => out.push((i + 1, line.trim_end().to_owned())),
        }
    }
    out
}

/// Parses an aliases file. `path` is only used in errors. A bad line is
/// reported in [`Table::errors`] and skipped; a name given twice keeps its
/// first entry (the later one is an error).
pub fn parse(text: &str, path: &Path) -> Table {
    let mut table = Table::default();
    for (line, logical) in logical_lines(text) {
        let error = |message: String| LineError {
            path: path.to_owned(),
            line,
            message,
        };
        match parse_entry(&logical, line) {
            Err(message) => table.errors.push(error(message)),
            Ok(alias) => {
                if let Some(first) = table.entries.get(&alias.name) {
                    let message = format!(
                        "alias {} is already defined on line {}; this entry is ignored",
                        quote(&alias.name),
                        first.line
                    );
                    table.errors.push(error(message));
                } else {
                    table.entries.insert(alias.name.clone(), alias);
                }
            }
        }
    }
    table
}

fn parse_entry(logical: &str, line: usize) -> Result<Alias, String> {
    if logical.starts_with([' ', '\t']) {
        return Err("continuation line without an entry before it".to_owned());
    }
    let (name, rest) = if let Some(quoted) = logical.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or_else(|| "unterminated quoted alias name".to_owned())?;
        let after = quoted[end + 1..].trim_start();
        let rest = after
            .strip_prefix(':')
            .ok_or_else(|| "missing \":\" after the alias name".to_owned())?;
        (&quoted[..end], rest)
    } else {
        let colon = logical.find(':').ok_or_else(|| {
            format!(
                "missing \":\" after the alias name in {}",
                quote(logical.trim())
            )
        })?;
        (logical[..colon].trim_end(), &logical[colon + 1..])
    };
    if name.is_empty() {
        return Err("empty alias name".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '"' | '\\'))
    {
        return Err(format!(
            "alias name {} contains {c:?}, which a name cannot",
            quote(name)
        ));
    }
    let targets = parse_targets(rest)?;
    if targets.is_empty() {
        return Err(format!("alias {} has no targets", quote(name)));
    }
    Ok(Alias {
        name: name.to_lowercase(),
        targets,
        line,
    })
}

/// Splits at commas outside double quotes.
fn split_list(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated double quote".to_owned());
    }
    items.push(&text[start..]);
    Ok(items)
}

/// Parses a comma-separated list of targets (the right side of an alias,
/// or one line of an include or `.forward` file). Empty items (`a,,b`, a
/// trailing comma) are skipped.
pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for item in split_list(text)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        targets.push(parse_target(item)?);
    }
    Ok(targets)
}

fn parse_target(item: &str) -> Result<Target, String> {
    // A wholly quoted target loses its quotes: "|cmd with spaces".
    let unquoted = match item.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') => inner,
        _ => item,
    };
    if let Some(command) = unquoted.strip_prefix('|') {
        let command = command.trim();
        if command.is_empty() {
            return Err("empty command after \"|\"".to_owned());
        }
        return Ok(Target::Command(command.to_owned()));
    }
    if let Some(path) = unquoted
        .get(..9)
        .filter(|head| head.eq_ignore_ascii_case(":include:"))
        .and_then(|_| unquoted.get(9..))
    {
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!(
                ":include: needs an absolute path, not {}",
                quote(path)
            ));
        }
        return Ok(Target::Include(PathBuf::from(path)));
    }
    if unquoted.starts_with('/') {
        if unquoted.ends_with('/') {
            return Err(format!("file target {} names a directory", quote(unquoted)));
        }
        return Ok(Target::File(PathBuf::from(unquoted)));
    }
    let address = item;
    if let Some(c) = address
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ':'))
    {
        if !address.starts_with('"') {
            return Err(format!(
                "address {} contains {c:?}; quote commands and files with spaces",
                quote(address)
            ));
        }
    }
    let bare = address.strip_prefix('\\').unwrap_or(address);
    if bare.is_empty() || bare.starts_with('@') || bare.ends_with('@') {
        return Err(format!("bad address {}", quote(address)));
    }
    Ok(Target::Address(address.to_owned()))
}

/// Parses an include or `.forward` file: targets separated by commas or
/// lines; comments and empty lines ignored. Bad lines are reported and
/// skipped.
pub fn parse_list_file(text: &str, path: &Path) -> (Vec<Target>, Vec<LineError>) {
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_targets(line) {
            Ok(mut t) => targets.append(&mut t),
            Err(message) => errors.push(LineError {
                path: path.to_owned(),
                line: i + 1,
                message,
            }),
        }
    }
    (targets, errors)
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(a) => f.write_str(a),
            Target::Include(p) => write!(f, ":include:{}", p.display()),
            Target::Command(c) => write!(f, "|{c}"),
            Target::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(text: &str) -> Table {
        parse(text, Path::new("/etc/aliases"))
    }

    fn addr(a: &str) -> Target {
        Target::Address(a.to_owned())
    }

    #[test]
    fn lists_continuations_comments_and_case() {
        let t = table(
            "# the team\n\
             Team: alice, bob@example.org,\n\
             \tcarol\n\
             \n\
             \x20  # a comment inside is fine\n\
             root: admin\r\n",
        );
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let team = t.get("TEAM").unwrap();
        assert_eq!(team.name, "team");
        assert_eq!(team.line, 2);
        assert_eq!(
            team.targets,
            [addr("alice"), addr("bob@example.org"), addr("carol")]
        );
        assert_eq!(t.get("root").unwrap().targets, [addr("admin")]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn includes_commands_and_files() {
        let t = table(
            "list: :include:/etc/list, :INCLUDE: /etc/other\n\
             archive: \"|/usr/bin/archive --quiet\", |/bin/true, /var/log/archive\n",
        );
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(
            t.get("list").unwrap().targets,
            [
                Target::Include("/etc/list".into()),
                Target::Include("/etc/other".into())
            ]
        );
        assert_eq!(
            t.get("archive").unwrap().targets,
            [
                Target::Command("/usr/bin/archive --quiet".into()),
                Target::Command("/bin/true".into()),
                Target::File("/var/log/archive".into()),
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named_and_the_rest_still_works() {
        let t = table("a: b\nthis line has no colon\nc: d\n: e\nf:\nc: again\ng: h i\n");
        assert_eq!(t.get("a").unwrap().targets, [addr("b")]);
        assert_eq!(t.get("c").unwrap().targets, [addr("d")]);
        let lines: Vec<usize> = t.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7]);
        assert_eq!(
            t.errors[0].to_string(),
            "/etc/aliases:2: missing \":\" after the alias name in \"this line has no colon\""
        );
        assert!(t.errors[3].message.contains("already defined on line 3"));
        assert!(t.get("g").is_none());
    }

    #[test]
    fn a_continuation_line_first_is_an_error() {
        let t = table("  leading: x\nb: c\n");
        assert_eq!(t.errors.len(), 1);
        assert_eq!(t.errors[0].line, 1);
        assert!(t.get("b").is_some());
    }

    #[test]
    fn relative_includes_and_unterminated_quotes_are_refused() {
        let t = table("a: :include:list\nb: \"|cmd\nc: x\n");
        assert_eq!(t.errors.len(), 2, "{:?}", t.errors);
        assert!(t.get("c").is_some());
    }

    #[test]
    fn list_files_take_commas_and_lines() {
        let (targets, errors) = parse_list_file(
            "# forward\nalice, \\bob\n\ncarol@example.org\nbad <addr>\n",
            Path::new("/home/x/.forward"),
        );
        assert_eq!(
            targets,
            [addr("alice"), addr("\\bob"), addr("carol@example.org")]
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 5);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "[a-z:,|/\"\\\\#@ \t\r\n.+-]{0,200}") {
            let t = parse(&text, Path::new("x"));
            for e in &t.errors {
                prop_assert!(e.line >= 1);
            }
            let _ = parse_list_file(&text, Path::new("x"));
        }

        #[test]
        fn parse_never_panics_on_any_string(text in any::<String>()) {
            let _ = parse(&text, Path::new("x"));
            let _ = parse_list_file(&text, Path::new("x"));
        }
    }
}
