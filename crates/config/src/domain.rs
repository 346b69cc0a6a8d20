//! Domain names as the config writes them: `"example.org"`, `".example.org"`.
//!
//! Names are compared lower-case without the trailing root dot, so both are
//! normalized away. A leading dot, where allowed, means "every subdomain of".
//! Labels are RFC 1035 host labels (letters, digits, inner hyphens, 1 to 63
//! octets) and a name is at most 255 octets; international names are written
//! in their `xn--` form.
//!
//! # Must never
//! Accept a name that a mail address could not carry, or panic on any input.
//!
//! # Security
//! Pure code. `local_domains` and `relay_domains` decide what mail is
//! accepted, so a malformed name is an error, not silently ignored.
//!
//! # Errors
//! A bad name is a message naming it and the reason; the caller adds file,
//! line and key.

/// Whether a leading dot ("every subdomain of") is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wildcard {
    Allowed,
    Refused,
}

/// Checks `text` and returns it lower-cased without a trailing dot.
pub(crate) fn normalize_domain(text: &str, wildcard: Wildcard) -> Result<String, String> {
    let fail = |why: &str| Err(format!("invalid domain {text:?}: {why}"));
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let labels = match name.strip_prefix('.') {
        Some(rest) if wildcard == Wildcard::Allowed => rest,
        Some(_) => return fail("a leading dot is not allowed here"),
        None => name,
    };
    if labels.is_empty() {
        return fail("empty");
    }
    if name.len() > 255 {
        return fail("longer than 255 octets");
    }
    for label in labels.split('.') {
        if label.is_empty() {
            return fail("empty label (two dots in a row?)");
        }
        if label.len() > 63 {
            return fail("a label is longer than 63 octets");
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return if bad.is_ascii() {
                fail(&format!("character {bad:?} is not allowed"))
            } else {
                fail("not ASCII (write international names in their xn-- form)")
            };
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail("a label starts or ends with a hyphen");
        }
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_root_dot() {
        let ok = |t| normalize_domain(t, Wildcard::Allowed);
        assert_eq!(ok("Example.ORG."), Ok("example.org".to_owned()));
        assert_eq!(ok(".Example.org"), Ok(".example.org".to_owned()));
        assert_eq!(ok("localhost"), Ok("localhost".to_owned()));
        assert_eq!(
            ok("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example".to_owned())
        );
        assert_eq!(ok("a-1.b2"), Ok("a-1.b2".to_owned()));
    }

    #[test]
    fn refuses_bad_names_with_the_reason() {
        let long_label = "a".repeat(64);
        let long_name = vec!["a".repeat(63); 5].join(".");
        for (text, why) in [
            ("", "empty"),
            (".", "empty"),
            ("a..b", "empty label"),
            ("exa mple.org", "character ' '"),
            ("exa_mple.org", "character '_'"),
            ("-a.org", "hyphen"),
            ("a-.org", "hyphen"),
            ("bücher.example", "xn--"),
            (long_label.as_str(), "63 octets"),
            (long_name.as_str(), "255 octets"),
            ("user@example.org", "character '@'"),
        ] {
            let err = normalize_domain(text, Wildcard::Allowed).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let err = normalize_domain(".example.org", Wildcard::Refused).expect_err("dot");
        assert!(err.contains("leading dot"), "{err}");
    }
}
