//! Finds the line of each key in a RON text, for error messages.
//!
//! ron reports where its reader stopped, and serde_path_to_error reports
//! which key was being read; neither knows where a key found wrong *after*
//! deserializing (say `queue.retry_min` above `queue.retry_max`) was written.
//! This module walks the text once, loosely, and maps every dotted key
//! (`smtpd.trusted_networks[1]`, `routes["partner.example"]`) to the line of
//! its key or list element. It also notes keys written twice, which ron
//! silently lets the last one win for maps.
//!
//! # Must never
//! Panic, loop or recurse without bound, whatever the text: it runs on text
//! that has just failed to parse.
//!
//! # Security
//! Pure code over the operator's config file.
//!
//! # Errors
//! None: text it cannot follow is skipped, and a key it did not find has no
//! line (callers fall back to the nearest enclosing key).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

/// How deep the walk follows nesting; the config is 3 levels deep.
const MAX_DEPTH: usize = 64;

/// Top-level keys whose values are maps: their keys print as `routes["a"]`
/// even when they look like identifiers, so they never pass for fields.
const MAPS: [&str; 1] = ["routes"];

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A struct field or a map key.
    Name(String),
    /// A list element.
    Index(usize),
}

/// A dotted key such as `smtpd.trusted_networks[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// This path with a field or map key appended.
    pub(crate) fn name(&self, name: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Name(name.to_owned()));
        path
    }

    /// This path with a list index appended.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// The enclosing key, or `None` at the top.
    fn parent(&self) -> Option<KeyPath> {
        let mut path = self.clone();
        path.0.pop().map(|_| path)
    }

    /// Whether the last step is the field or map key `name`.
    pub(crate) fn ends_with(&self, name: &str) -> bool {
        matches!(self.0.last(), Some(Segment::Name(last)) if last == name)
    }

    /// Whether this is the top level (no key at all).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&serde_path_to_error::Path> for KeyPath {
    fn from(path: &serde_path_to_error::Path) -> KeyPath {
        use serde_path_to_error::Segment as S;
        let mut out = KeyPath::default();
        for segment in path {
            match segment {
                S::Seq { index } => out.0.push(Segment::Index(*index)),
                S::Map { key } => out.0.push(Segment::Name(key.clone())),
                S::Enum { variant } => out.0.push(Segment::Name(variant.clone())),
                S::Unknown => {}
            }
        }
        out
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            let in_map = n == 1
                && matches!(self.0.first(), Some(Segment::Name(top)) if MAPS.contains(&top.as_str()));
            match segment {
                Segment::Name(name) if is_identifier(name) && !in_map => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(name)?;
                }
                Segment::Name(name) => write!(f, "[{name:?}]")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The lines of the keys of one text.
#[derive(Debug, Default)]
pub(crate) struct KeyLines {
    /// Rendered key → line of its first occurrence.
    lines: BTreeMap<String, usize>,
    /// Keys written again: (rendered key, line of the repeat), in text order.
    repeats: Vec<(String, usize)>,
}

impl KeyLines {
    /// The line where `key` is written, if it is.
    pub(crate) fn line_of(&self, key: &KeyPath) -> Option<usize> {
        self.lines.get(&key.to_string()).copied()
    }

    /// The line of `key`, else of its nearest enclosing key that is written,
    /// else 1.
    pub(crate) fn nearest_line(&self, key: &KeyPath) -> usize {
        let mut key = Some(key.clone());
        while let Some(k) = key {
            if let Some(line) = self.line_of(&k) {
                return line;
            }
            key = k.parent();
        }
        1
    }

    /// The first key written twice, with the line of the repeat.
    pub(crate) fn first_repeat(&self) -> Option<(&str, usize)> {
        self.repeats.first().map(|(k, l)| (k.as_str(), *l))
    }
}

/// Finds the line of every key in `text`.
pub(crate) fn locate_keys(text: &str) -> KeyLines {
    let mut walk = Walk {
        tokens: tokenize(text),
        at: 0,
        found: KeyLines::default(),
    };
    walk.skip_attributes();
    walk.value(&KeyPath::default(), 0);
    walk.found
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open(char),
    Close(char),
    Colon,
    Comma,
    Str(String),
    Atom(String),
}

/// Splits RON text into tokens with their line numbers (1-based).
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        let start_line = line;
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == Some('/') => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0usize;
                while let Some(c) = at(i) {
                    if c == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if c == '*' && at(i + 1) == Some('/') {
                        depth = depth.saturating_sub(1);
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(c == '\n');
                        i += 1;
                    }
                }
            }
            '(' | '[' | '{' => {
                tokens.push((Token::Open(c), line));
                i += 1;
            }
            ')' | ']' | '}' => {
                tokens.push((Token::Close(c), line));
                i += 1;
            }
            ':' => {
                tokens.push((Token::Colon, line));
                i += 1;
            }
            ',' => {
                tokens.push((Token::Comma, line));
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                while let Some(c) = at(i) {
                    i += 1;
                    match c {
                        c if c == quote => break,
                        '\\' => {
                            let escaped = at(i).unwrap_or('\\');
                            i += 1;
                            line += usize::from(escaped == '\n');
                            value.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                        }
                        c => {
                            line += usize::from(c == '\n');
                            value.push(c);
                        }
                    }
                }
                tokens.push((Token::Str(value), start_line));
            }
            'r' if matches!(at(i + 1), Some('"' | '#'))
                && raw_string_hashes(&chars, i + 1).is_some() =>
            {
                let hashes = raw_string_hashes(&chars, i + 1).unwrap_or(0);
                i += 2 + hashes;
                let mut value = String::new();
                while let Some(c) = at(i) {
                    if c == '"' && (1..=hashes).all(|h| at(i + h) == Some('#')) {
                        i += 1 + hashes;
                        break;
                    }
                    line += usize::from(c == '\n');
                    value.push(c);
                    i += 1;
                }
                tokens.push((Token::Str(value), start_line));
            }
            _ => {
                let mut value = String::new();
                while let Some(c) = at(i) {
                    if c.is_whitespace() || "()[]{}:,\"".contains(c) {
                        break;
                    }
                    if c == '/' && matches!(at(i + 1), Some('/' | '*')) {
                        break;
                    }
                    value.push(c);
                    i += 1;
                }
                tokens.push((Token::Atom(value), start_line));
            }
        }
    }
    tokens
}

/// If `chars[from..]` is `#*"` (the rest of a raw string opener), the count
/// of `#`.
fn raw_string_hashes(chars: &[char], from: usize) -> Option<usize> {
    let hashes = chars.get(from..)?.iter().take_while(|c| **c == '#').count();
    (chars.get(from + hashes) == Some(&'"')).then_some(hashes)
}

struct Walk {
    tokens: Vec<(Token, usize)>,
    at: usize,
    found: KeyLines,
}

impl Walk {
    fn peek(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.tokens.get(self.at).map_or(1, |(_, l)| *l)
    }

    fn record(&mut self, key: &KeyPath, line: usize) {
        let key = key.to_string();
        match self.found.lines.entry(key) {
            Entry::Occupied(seen) => self.found.repeats.push((seen.key().clone(), line)),
            Entry::Vacant(new) => {
                new.insert(line);
            }
        }
    }

    /// Skips `#![enable(...)]` attributes before the value.
    fn skip_attributes(&mut self) {
        while matches!(self.peek(0), Some(Token::Atom(a)) if a.starts_with('#')) {
            self.at += 1;
            if self.peek(0) == Some(&Token::Open('[')) {
                self.skip_group();
            }
        }
    }

    /// Skips a bracketed group, nested ones included.
    fn skip_group(&mut self) {
        let mut depth = 0usize;
        while let Some(token) = self.peek(0) {
            match token {
                Token::Open(_) => depth += 1,
                Token::Close(_) => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.at += 1;
            if depth == 0 {
                return;
            }
        }
    }

    /// Walks one value whose key is `path`.
    fn value(&mut self, path: &KeyPath, depth: usize) {
        if depth > MAX_DEPTH {
            self.skip_group();
            return;
        }
        match self.peek(0) {
            Some(Token::Atom(_)) if self.peek(1) == Some(&Token::Open('(')) => {
                self.at += 2;
                self.body(path, ')', depth);
            }
            Some(Token::Open(open)) => {
                let close = match open {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                self.at += 1;
                self.body(path, close, depth);
            }
            Some(Token::Str(_) | Token::Atom(_)) => self.at += 1,
            _ => {}
        }
    }

    /// Walks the inside of `(...)`, `[...]` or `{...}` up to `close`.
    fn body(&mut self, path: &KeyPath, close: char, depth: usize) {
        let mut index = 0;
        loop {
            let before = self.at;
            let line = self.line();
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some(Token::Close(_)), _) => {
                    self.at += 1;
                    return;
                }
                (Some(Token::Atom(key) | Token::Str(key)), Some(Token::Colon)) if close != ']' => {
                    let key = path.name(key);
                    self.record(&key, line);
                    self.at += 2;
                    self.value(&key, depth + 1);
                }
                _ => {
                    let key = path.index(index);
                    index += 1;
                    self.record(&key, line);
                    self.value(&key, depth + 1);
                }
            }
            if self.peek(0) == Some(&Token::Comma) {
                self.at += 1;
            }
            if self.at == before {
                self.at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(parts: &[&str]) -> KeyPath {
        parts
            .iter()
            .fold(KeyPath::default(), |path, part| match part.parse() {
                Ok(index) => path.index(index),
                Err(_) => path.name(part),
            })
    }

    #[test]
    fn renders_keys_like_the_docs() {
        assert_eq!(
            key(&["smtpd", "trusted_networks", "1"]).to_string(),
            "smtpd.trusted_networks[1]"
        );
        assert_eq!(
            key(&["routes", "partner.example"]).to_string(),
            "routes[\"partner.example\"]"
        );
        assert_eq!(key(&["routes", "*"]).to_string(), "routes[\"*\"]");
        assert_eq!(key(&["routes", "local"]).to_string(), "routes[\"local\"]");
        assert_eq!(key(&["hostname"]).to_string(), "hostname");
    }

    #[test]
    fn finds_the_line_of_each_key() {
        let text = r##"#![enable(implicit_some)]
// a comment with ( and [ and "
Config(
    hostname: "mx, (1)",   /* block
       comment */ spool_dir: r#"/var/"spool"#,
    smtpd: (
        listen: ["0.0.0.0:25",
            "[::]:25"],
    ),
    routes: {
        "partner.example": "[10.0.0.5]:25",
        "*": "smarthost:587",
    },
    routes: {},
)
"##;
        let lines = locate_keys(text);
        assert_eq!(lines.line_of(&key(&["hostname"])), Some(4));
        assert_eq!(lines.line_of(&key(&["spool_dir"])), Some(5));
        assert_eq!(lines.line_of(&key(&["smtpd"])), Some(6));
        assert_eq!(lines.line_of(&key(&["smtpd", "listen"])), Some(7));
        assert_eq!(lines.line_of(&key(&["smtpd", "listen", "0"])), Some(7));
        assert_eq!(lines.line_of(&key(&["smtpd", "listen", "1"])), Some(8));
        assert_eq!(
            lines.line_of(&key(&["routes", "partner.example"])),
            Some(11)
        );
        assert_eq!(lines.line_of(&key(&["routes", "*"])), Some(12));
        assert_eq!(lines.line_of(&key(&["queue"])), None);
        assert_eq!(lines.nearest_line(&key(&["smtpd", "processes"])), 6);
        assert_eq!(lines.nearest_line(&key(&["queue", "retry_min"])), 1);
        assert_eq!(lines.first_repeat(), Some(("routes", 14)));
    }

    proptest! {
        #[test]
        fn never_panics(text in "[a-z\"'#r/*(){}\\[\\]:,\\\\ \n]{0,64}") {
            let _ = locate_keys(&text);
        }
    }
}
