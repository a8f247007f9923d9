//! Debian version numbers: comparison exactly as dpkg does it
//! (`[epoch:]upstream[-revision]`, dpkg's `verrevcmp`), and the relations of
//! versioned dependencies.
//!
//! [`compare`] is total and never fails: it accepts any string, so a malformed
//! version in an index cannot panic the resolver. [`validate`] applies dpkg's
//! syntax rules for the places that must reject bad input (index parsing).

use std::cmp::Ordering;
use std::fmt;

/// Why a version string is not a valid Debian version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("version {version:?} contains whitespace")]
    Whitespace { version: String },
    #[error("version {version:?} has a non-numeric epoch")]
    BadEpoch { version: String },
    #[error("version {version:?} has an empty upstream part")]
    EmptyUpstream { version: String },
    #[error("version {version:?} has an invalid character {ch:?}")]
    BadChar { version: String, ch: char },
}

/// A relation in a versioned dependency: `<<`, `<=`, `=`, `>=`, `>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relation {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=`: earlier or equal (the obsolete `<` means the same).
    Le,
    /// `=`: exactly equal.
    Eq,
    /// `>=`: later or equal (the obsolete `>` means the same).
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl Relation {
    /// Parses `<<`, `<=`, `=`, `>=`, `>>` and dpkg's obsolete `<` (= `<=`) and `>` (= `>=`).
    pub fn parse(s: &str) -> Option<Relation> {
        Some(match s {
            "<<" => Relation::Lt,
            "<=" | "<" => Relation::Le,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::Ge,
            ">>" => Relation::Gt,
            _ => return None,
        })
    }

    /// The operator as written in control files.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }

    /// Does `candidate` satisfy `candidate <relation> constraint`?
    /// E.g. `Relation::Ge.satisfied_by("1.2", "1.0")` is true.
    pub fn satisfied_by(self, candidate: &str, constraint: &str) -> bool {
        let ord = compare(candidate, constraint);
        match self {
            Relation::Lt => ord == Ordering::Less,
            Relation::Le => ord != Ordering::Greater,
            Relation::Eq => ord == Ordering::Equal,
            Relation::Ge => ord != Ordering::Less,
            Relation::Gt => ord == Ordering::Greater,
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three parts of a version; `revision` is `""` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

/// Splits a version as dpkg does: the epoch is what precedes the first `:`,
/// the revision what follows the last `-`. Lenient: a non-numeric epoch is
/// treated as part of the upstream version (use [`validate`] to reject it).
pub fn split(version: &str) -> Parts<'_> {
    let version = version.trim();
    let (epoch, rest) = match version.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, version),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    Parts {
        epoch,
        upstream,
        revision,
    }
}

/// Checks `version` against dpkg's syntax: optional numeric epoch, non-empty
/// upstream part, and only `A-Za-z0-9.+-~:` characters.
pub fn validate(version: &str) -> Result<(), VersionError> {
    if version.is_empty() {
        return Err(VersionError::Empty);
    }
    if version.chars().any(char::is_whitespace) {
        return Err(VersionError::Whitespace {
            version: version.into(),
        });
    }
    if let Some((e, _)) = version.split_once(':') {
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VersionError::BadEpoch {
                version: version.into(),
            });
        }
    }
    let parts = split(version);
    if parts.upstream.is_empty() {
        return Err(VersionError::EmptyUpstream {
            version: version.into(),
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".+-~:".contains(c);
    if let Some(ch) = parts
        .upstream
        .chars()
        .chain(parts.revision.chars())
        .find(|&c| !allowed(c))
    {
        return Err(VersionError::BadChar {
            version: version.into(),
            ch,
        });
    }
    Ok(())
}

/// Compares two Debian versions exactly as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (split(a), split(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// dpkg's character order in non-digit runs: `~` before the end of the
/// string, the end before letters, letters before everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (compared with [`order`])
/// and digit runs (compared numerically, leading zeros ignored).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let is_digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !is_digit(a, i)) || (j < b.len() && !is_digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a, i) && is_digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if is_digit(a, i) {
            return Ordering::Greater;
        }
        if is_digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn check(a: &str, b: &str, want: Ordering) {
        assert_eq!(compare(a, b), want, "{a} vs {b}");
        assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
    }

    #[test]
    fn tilde_sorts_before_everything() {
        check("1.0~rc1", "1.0", Less);
        check("1.0~rc1", "1.0~rc2", Less);
        check("1.0~~", "1.0~", Less);
        check("1.0~~a", "1.0~~", Greater);
        check("1.0~", "1.0", Less);
        check("1.0~rc1-1", "1.0-1", Less);
        check("2.0~beta", "2.0.0", Less);
    }

    #[test]
    fn epoch_wins_over_everything() {
        check("1:0.1", "2.0", Greater);
        check("0:1.0", "1.0", Equal);
        check("2:1.0", "10:0.1", Less);
        check("1:1.0-1", "1:1.0-1", Equal);
    }

    #[test]
    fn revisions() {
        check("1.0-1", "1.0-1+b1", Less);
        check("1.0-1", "1.0-2", Less);
        check("1.0-10", "1.0-9", Greater);
        check("1.0", "1.0-0", Equal);
        check("1.0-1", "1.0", Greater);
        check("1.0-1~bpo1", "1.0-1", Less);
        check("1.2-3-4", "1.2-3-5", Less); // revision after the last hyphen
        check("2.36.1-8+deb11u1", "2.36.1-8", Greater);
    }

    #[test]
    fn letters_before_non_letters_and_digit_runs_numeric() {
        check("2.30-0ubuntu", "2.30a", Less);
        check("1.0a", "1.0+", Less);
        check("1.0a", "1.0.", Less);
        check("1.0+", "1.0.", Less); // '+' (43) < '.' (46) as non-letters
        check("1.0", "1.0a", Less);
        check("1.10", "1.9", Greater);
        check("1.010", "1.10", Equal);
        check("1.0010", "1.9", Greater);
        check("a", "b", Less);
        check("1.2.3", "1.2.3.0", Less);
        check("1.2.3.0", "1.2.3.1", Less);
        check("7.4.052-1", "7.4.52-1", Equal);
        check("0.0.0", "0.0", Greater);
        check("9.6.2~rc1", "9.6.2", Less);
        check("252.30-1~deb12u2", "252.31-1~deb12u1", Less);
    }

    #[test]
    fn huge_digit_runs_do_not_overflow() {
        check(
            "1.99999999999999999999999",
            "1.99999999999999999999998",
            Greater,
        );
        check("99999999999999999999999:1", "1:1", Greater);
    }

    #[test]
    fn relations() {
        assert!(Relation::Lt.satisfied_by("1.0", "1.1"));
        assert!(!Relation::Lt.satisfied_by("1.1", "1.1"));
        assert!(Relation::Le.satisfied_by("1.1", "1.1"));
        assert!(Relation::Eq.satisfied_by("1.0", "1.0-0"));
        assert!(!Relation::Eq.satisfied_by("1.0-1", "1.0-1+b1"));
        assert!(Relation::Ge.satisfied_by("1.0-1+b1", "1.0-1"));
        assert!(Relation::Gt.satisfied_by("1:0.1", "2.0"));
        assert!(!Relation::Gt.satisfied_by("1.0~rc1", "1.0"));
        assert_eq!(Relation::parse("<"), Some(Relation::Le));
        assert_eq!(Relation::parse(">"), Some(Relation::Ge));
        assert_eq!(Relation::parse("=>"), None);
        assert_eq!(Relation::Gt.to_string(), ">>");
    }

    #[test]
    fn split_and_validate() {
        assert_eq!(
            split("1:2.3-4-5"),
            Parts {
                epoch: 1,
                upstream: "2.3-4",
                revision: "5"
            }
        );
        assert!(validate("1:2.3~rc1+dfsg-4+b1").is_ok());
        assert_eq!(validate(""), Err(VersionError::Empty));
        assert!(matches!(
            validate("a:1"),
            Err(VersionError::BadEpoch { .. })
        ));
        assert!(matches!(
            validate("1 2"),
            Err(VersionError::Whitespace { .. })
        ));
        assert!(matches!(
            validate("1:-1"),
            Err(VersionError::EmptyUpstream { .. })
        ));
        assert!(matches!(
            validate("1.0_1"),
            Err(VersionError::BadChar { ch: '_', .. })
        ));
    }
}
