//! Domain names compared as mail routing compares them: one normalisation
//! ([`normalize`]: international names in their ASCII form, ASCII lower
//! case, no trailing root dot) for the name asked about and for every entry
//! of a configured list, and one rule for list entries (`"example.org"` is
//! that name, `".example.org"` every name below it).
//!
//! International domain names (RFC 5890) arrive with U-labels under
//! SMTPUTF8 (`bücher.example`); routing, DNS and every list use their
//! A-labels (`xn--bcher-kva.example`), converted here by UTS 46 ([`to_ascii`]).
//!
//! # Must never
//! Let two callers decide differently whether a domain is in a list: the
//! server session (local and relay domains), the queue manager's routing
//! and the local directory all ask [`is_in_list`].
//!
//! # Security
//! The name asked about is hostile peer or queue-file text; the lists are
//! the operator's. Pure code, linear in its input.
//!
//! # Errors
//! [`to_ascii`] says why a name has no ASCII form; elsewhere a name that is
//! not a domain is simply in no list.

/// Why a domain name has no ASCII (A-label) form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("international domain name {0:?} cannot be converted to ASCII (IDNA)")]
pub struct IdnaError(pub String);

/// The ASCII form of `domain`, for routing and DNS: U-labels become
/// A-labels (UTS 46, non-transitional, STD 3 rules, DNS lengths), all in
/// lower case, without the trailing root dot. A name that is ASCII already
/// is only lower-cased (it is not checked here: the address grammar did).
pub fn to_ascii(domain: &str) -> Result<String, IdnaError> {
    let d = domain.trim_end_matches('.');
    if d.is_ascii() {
        return Ok(d.to_ascii_lowercase());
    }
    match idna::domain_to_ascii_strict(d) {
        Ok(ascii) if !ascii.is_empty() => Ok(ascii),
        _ => Err(IdnaError(domain.to_owned())),
    }
}

/// `domain` in the form every comparison uses: [`to_ascii`]'s, or, for a
/// name that has none, its lower case (which matches no list entry, since
/// entries are ASCII).
pub fn normalize(domain: &str) -> String {
    to_ascii(domain).unwrap_or_else(|_| domain.trim_end_matches('.').to_lowercase())
}

/// Whether `domain` is one of `list`'s entries: an entry `"example.org"`
/// matches that name, an entry `".example.org"` every name below it (not
/// `example.org` itself). Both sides are [`normalize`]d first.
pub fn is_in_list(list: &[String], domain: &str) -> bool {
    let d = normalize(domain);
    if d.is_empty() {
        return false;
    }
    list.iter().any(|entry| {
        let e = normalize(entry);
        match e.strip_prefix('.') {
            Some("") => false,
            Some(_) => d.len() > e.len() && d.ends_with(&e),
            None => d == e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn exact_entries_ignore_case_and_the_root_dot_on_both_sides() {
        let l = list(&["Example.ORG."]);
        assert!(is_in_list(&l, "example.org"));
        assert!(is_in_list(&l, "EXAMPLE.org"));
        assert!(is_in_list(&l, "example.org."));
        assert!(!is_in_list(&l, "a.example.org"));
        assert!(!is_in_list(&l, "example.org.uk"));
        assert!(!is_in_list(&l, "xexample.org"));
    }

    #[test]
    fn dotted_entries_match_names_below_only() {
        let l = list(&[".Sub.Example"]);
        assert!(is_in_list(&l, "a.sub.example"));
        assert!(is_in_list(&l, "A.B.SUB.EXAMPLE."));
        assert!(!is_in_list(&l, "sub.example"));
        assert!(!is_in_list(&l, "xsub.example"));
        assert!(!is_in_list(&l, ".sub.example"));
    }

    #[test]
    fn empty_names_and_entries_match_nothing() {
        assert!(!is_in_list(&list(&[".", ""]), "example.org"));
        assert!(!is_in_list(&list(&["", "."]), ""));
        assert!(!is_in_list(&list(&["example.org"]), "."));
        assert!(!is_in_list(&[], "example.org"));
    }

    #[test]
    fn u_labels_become_a_labels() {
        assert_eq!(
            to_ascii("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(
            to_ascii("BÜCHER.Example.").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(to_ascii("Mx.Example.ORG").as_deref(), Ok("mx.example.org"));
        assert_eq!(
            to_ascii("例え.テスト").as_deref(),
            Ok("xn--r8jz45g.xn--zckzah")
        );
    }

    #[test]
    fn names_without_an_ascii_form_are_errors() {
        for bad in [
            "bü_cher.example",
            "-bücher.example",
            "\u{301}bücher.example",
            "ü..example",
            "ü\u{0}.example",
        ] {
            assert!(to_ascii(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}ü.example", "a".repeat(70));
        assert!(to_ascii(&long).is_err(), "a label over 63 octets");
    }

    #[test]
    fn lists_match_international_names_by_their_a_labels() {
        let l = list(&["xn--bcher-kva.example", ".xn--r8jz45g.xn--zckzah"]);
        assert!(is_in_list(&l, "bücher.example"));
        assert!(is_in_list(&l, "BÜCHER.example."));
        assert!(is_in_list(&l, "mx.例え.テスト"));
        assert!(!is_in_list(&l, "bucher.example"));
        assert!(!is_in_list(&l, "bü_cher.example"));
    }
}
