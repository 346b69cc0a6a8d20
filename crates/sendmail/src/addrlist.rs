//! RFC 5322 address lists (3.4), for `-t` and for command-line recipients:
//! mailboxes with or without display names, quoted strings, comments
//! (nested), groups (`team: a@x, b@y;`, `undisclosed-recipients:;`), the
//! obsolete route syntax and empty list elements (4.4).
//!
//! Only the addr-spec of each mailbox is returned, with comments and
//! folding white space removed; display names and group names are dropped.
//! Checking the address against the SMTP grammar is the caller's job.
//!
//! # Must never
//! Take a display name, a comment or a group name for an address, or
//! split an address at a comma inside quotes, a comment or angle brackets.
//!
//! # Security
//! Input is a header written by any local user. Parsing is linear and
//! never recurses (comment nesting is a counter).
//!
//! # Errors
//! [`ListError`] for an unterminated quote, comment, bracket or group.

/// Why an address list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A quoted string, comment, domain literal or angle address that does
    /// not end.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// A character that cannot appear there.
    #[error("unexpected {0:?}")]
    Unexpected(char),
    /// Words side by side outside angle brackets: a name without an
    /// address (`Joe Bloggs`), or a local part with a space.
    #[error("words without an address in angle brackets")]
    Phrase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom, a quoted string (quotes kept) or a domain literal.
    Word(String),
    /// One of `<>@,;:.`.
    Special(char),
}

fn tokenize(s: &str) -> Result<Vec<Token>, ListError> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => return Err(ListError::Unterminated("comment")),
                    }
                }
            }
            '"' => {
                let mut word = String::from('"');
                loop {
                    match chars.next() {
                        Some('\\') => {
                            word.push('\\');
                            word.push(
                                chars
                                    .next()
                                    .ok_or(ListError::Unterminated("quoted string"))?,
                            );
                        }
                        Some('"') => break,
                        // Folding inside quotes is removed (RFC 5322 3.2.4).
                        Some('\r' | '\n') => {}
                        Some(ch) => word.push(ch),
                        None => return Err(ListError::Unterminated("quoted string")),
                    }
                }
                word.push('"');
                tokens.push(Token::Word(word));
            }
            '[' => {
                let mut word = String::from('[');
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some('\\') => {
                            word.push(
                                chars
                                    .next()
                                    .ok_or(ListError::Unterminated("domain literal"))?,
                            );
                        }
                        Some(' ' | '\t' | '\r' | '\n') => {}
                        Some(ch) => word.push(ch),
                        None => return Err(ListError::Unterminated("domain literal")),
                    }
                }
                word.push(']');
                tokens.push(Token::Word(word));
            }
            '<' | '>' | '@' | ',' | ';' | ':' | '.' => tokens.push(Token::Special(c)),
            ')' | ']' | '\\' => return Err(ListError::Unexpected(c)),
            _ => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "()<>[]:;@\\,.\"".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// The addr-specs of an address list, in order. `Joe <joe@x>` gives
/// `joe@x`; `a@x (Comment), "b c"@y` gives `a@x` and `"b c"@y`; a bare
/// `user` gives `user` (qualifying it is the caller's choice).
pub fn parse(list: &str) -> Result<Vec<String>, ListError> {
    let tokens = tokenize(list)?;
    let mut out = Vec::new();
    // Tokens of the current mailbox (outside angle brackets).
    let mut plain: Vec<&Token> = Vec::new();
    let mut angle: Option<String> = None;
    let mut in_group = false;
    let mut iter = tokens.iter();
    let finish = |plain: &mut Vec<&Token>,
                  angle: &mut Option<String>,
                  out: &mut Vec<String>|
     -> Result<(), ListError> {
        let address = match angle.take() {
            Some(a) => a,
            None => {
                let adjacent = plain
                    .windows(2)
                    .any(|w| matches!((w[0], w[1]), (Token::Word(_), Token::Word(_))));
                if adjacent {
                    return Err(ListError::Phrase);
                }
                join(plain)
            }
        };
        plain.clear();
        if !address.is_empty() {
            out.push(address);
        }
        Ok(())
    };
    while let Some(token) = iter.next() {
        match token {
            Token::Special('<') => {
                let mut inner = Vec::new();
                loop {
                    match iter.next() {
                        Some(Token::Special('>')) => break,
                        Some(t) => inner.push(t),
                        None => return Err(ListError::Unterminated("angle address")),
                    }
                }
                // Obsolete source route `@a,@b:` before the mailbox.
                if let Some(colon) = inner.iter().position(|t| **t == Token::Special(':')) {
                    if inner.first() == Some(&&Token::Special('@')) {
                        inner.drain(..=colon);
                    }
                }
                angle = Some(join(&inner));
                // A display name before it is not part of the address.
                plain.clear();
            }
            Token::Special(':') if angle.is_none() && !in_group => {
                // The group's display name is not an address.
                plain.clear();
                in_group = true;
            }
            Token::Special(';') if in_group => {
                finish(&mut plain, &mut angle, &mut out)?;
                in_group = false;
            }
            Token::Special(',') => finish(&mut plain, &mut angle, &mut out)?,
            Token::Special(c @ ('>' | ';' | ':')) => return Err(ListError::Unexpected(*c)),
            t => {
                if angle.is_some() {
                    // Text after an angle address: only comments may follow.
                    if let Token::Word(_) = t {
                        return Err(ListError::Unexpected('<'));
                    }
                }
                plain.push(t);
            }
        }
    }
    if in_group {
        return Err(ListError::Unterminated("group"));
    }
    finish(&mut plain, &mut angle, &mut out)?;
    Ok(out)
}

/// Joins addr-spec tokens without the white space and comments between
/// them.
fn join(tokens: &[&Token]) -> String {
    let mut out = String::new();
    for t in tokens {
        match t {
            Token::Word(w) => out.push_str(w),
            Token::Special(c) => out.push(*c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn plain_named_and_commented_mailboxes() {
        assert_eq!(ok("a@x.test"), ["a@x.test"]);
        assert_eq!(
            ok("Joe Bloggs <joe@x.test>, b@y.test"),
            ["joe@x.test", "b@y.test"]
        );
        assert_eq!(ok("\"Bloggs, Joe\" <joe@x.test>"), ["joe@x.test"]);
        assert_eq!(ok("joe@x.test (Joe, the <boss>)"), ["joe@x.test"]);
        assert_eq!(ok("(nested (comment, here)) a@x.test"), ["a@x.test"]);
        assert_eq!(ok("\"john q\"@x.test"), ["\"john q\"@x.test"]);
        assert_eq!(ok("first.last @ x.test"), ["first.last@x.test"]);
        assert_eq!(ok("=?UTF-8?Q?J=C3=B6rg?= <jorg@x.test>"), ["jorg@x.test"]);
        assert_eq!(ok("root"), ["root"]);
        assert_eq!(ok("a@[192.0.2.1]"), ["a@[192.0.2.1]"]);
    }

    #[test]
    fn groups_empty_elements_and_routes() {
        assert_eq!(ok("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            ok("Team: a@x.test, \"B\" <b@x.test>; c@y.test"),
            ["a@x.test", "b@x.test", "c@y.test"]
        );
        assert_eq!(ok("a@x.test,, ,b@x.test,"), ["a@x.test", "b@x.test"]);
        assert_eq!(ok("<@relay.test,@r2.test:a@x.test>"), ["a@x.test"]);
        assert_eq!(ok(""), Vec::<String>::new());
    }

    #[test]
    fn broken_lists_are_errors() {
        assert_eq!(
            parse("\"open"),
            Err(ListError::Unterminated("quoted string"))
        );
        assert_eq!(parse("a@x (open"), Err(ListError::Unterminated("comment")));
        assert_eq!(parse("<a@x"), Err(ListError::Unterminated("angle address")));
        assert_eq!(parse("team: a@x"), Err(ListError::Unterminated("group")));
        assert!(parse("a@x>").is_err());
        assert!(parse("<a@x> junk").is_err());
        assert_eq!(parse("Joe Bloggs"), Err(ListError::Phrase));
        assert_eq!(parse("a b@x.test"), Err(ListError::Phrase));
    }
}
