//! Domain names compared as mail routing compares them: one normalisation
//! (ASCII lower case, no trailing root dot) for the name asked about and
//! for every entry of a configured list, and one rule for list entries
//! (`"example.org"` is that name, `".example.org"` every name below it).
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
//! None: a name that is not a domain is simply in no list.

/// `domain` in the form every comparison uses: ASCII lower case, without
/// the trailing root dot.
pub fn normalize(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
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
}
