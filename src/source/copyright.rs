//! A Debian package's declared license as an SPDX expression, read from its
//! machine-readable copyright file (`usr/share/doc/<package>/copyright` in
//! the DEP-5 format, <https://dep-team.pages.debian.net/deps/dep5/>).
//!
//! Takes the file's text; gives the AND of the license expressions of its
//! `Files:` paragraphs (the first line of each `License:` field), each
//! DEP-5 short name replaced by its SPDX identifier. It never guesses: a
//! file that is not DEP-5 1.0, a short name or exception without an exact
//! SPDX counterpart in [`LICENSES`] / [`EXCEPTIONS`], or an expression it
//! cannot read gives a [`NotMapped`] that says why, and the caller declares
//! nothing (`NOASSERTION`) for that package. `public-domain` is such a
//! name: SPDX has no identifier for it, and a `LicenseRef-` would be our
//! wording, not the package's.

use super::debian::deb822::{self, Deb822Error};

/// Why a copyright file gives no SPDX expression.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotMapped {
    #[error("not a DEP-5 1.0 machine-readable copyright file")]
    NotMachineReadable,
    #[error("copyright file does not parse")]
    Syntax(#[source] Deb822Error),
    #[error("copyright file has no `Files:` paragraph")]
    NoFilesParagraph,
    #[error("line {line}: `Files:` paragraph without a license short name")]
    NoLicense { line: usize },
    #[error("line {line}: cannot read license expression {expression:?}")]
    Expression { line: usize, expression: String },
    #[error("license {name:?} has no exact SPDX identifier")]
    UnknownLicense { name: String },
    #[error("exception {keywords:?} to {license} has no exact SPDX identifier")]
    UnknownException { keywords: String, license: String },
}

/// DEP-5 short names, normalised (lower case, a version's
/// trailing `.0`s dropped, so `GPL-2.0+` is `gpl-2+`), and the SPDX license
/// each one names exactly. Every id is on the SPDX license list (the
/// `pyspdxtools` test in `sign/sbom_tests.rs` validates all of them).
///
/// Not here on purpose: names without a version of licenses that have
/// several (`GPL`, `LGPL`, `GFDL`, `Apache`, `MPL`, `BSD`, `CC-BY`: DEP-5
/// says the lowest version, while the GPL and real files mean "any
/// version"); `MIT` (DEP-5: many licenses go by it, `Expat` is the one
/// meant); `Python` (SPDX splits PSF, CNRI and the stack); `Perl` (a
/// deprecated alias of `GPL-1+ or Artistic`); `OpenSSL` (not a DEP-5 name,
/// and SPDX has both `OpenSSL` and `OpenSSL-standalone`); `public-domain`
/// (no SPDX id); any package-specific name (`BSD-3-clause-Berkeley`).
pub const LICENSES: &[(&str, &str)] = &[
    // GNU: DEP-5 `-N` is version N only, `-N+` adds "or (at your option)
    // any later version"; SPDX spells these -only and -or-later. The texts
    // are the FSF's, as in /usr/share/common-licenses.
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    // DEP-5 LGPL below 2.1 is the Library GPL: SPDX LGPL-2.0.
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    // Not a DEP-5 name, but version 3 of the Affero GPL exists only as the
    // FSF's (Affero's own is AGPL-1.0).
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    // DEP-5 GFDL may have invariant sections: SPDX's plain GFDL ids; DEP-5
    // GFDL-NIV has none: SPDX's -no-invariants- ids.
    ("gfdl-1.1", "GFDL-1.1-only"),
    ("gfdl-1.1+", "GFDL-1.1-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gfdl-niv-1.1", "GFDL-1.1-no-invariants-only"),
    ("gfdl-niv-1.1+", "GFDL-1.1-no-invariants-or-later"),
    ("gfdl-niv-1.2", "GFDL-1.2-no-invariants-only"),
    ("gfdl-niv-1.2+", "GFDL-1.2-no-invariants-or-later"),
    ("gfdl-niv-1.3", "GFDL-1.3-no-invariants-only"),
    ("gfdl-niv-1.3+", "GFDL-1.3-no-invariants-or-later"),
    // One text per version, published by its steward under the same name.
    ("apache-1", "Apache-1.0"),
    ("apache-1.1", "Apache-1.1"),
    ("apache-2", "Apache-2.0"),
    ("mpl-1", "MPL-1.0"),
    ("mpl-1.1", "MPL-1.1"),
    // Not MPL-2.0-no-copyleft-exception: that needs Exhibit B, which a
    // short name does not say.
    ("mpl-2", "MPL-2.0"),
    ("cddl-1", "CDDL-1.0"),
    ("cddl-1.1", "CDDL-1.1"),
    ("cpl-1", "CPL-1.0"),
    ("efl-1", "EFL-1.0"),
    ("efl-2", "EFL-2.0"),
    ("lppl-1", "LPPL-1.0"),
    ("lppl-1.1", "LPPL-1.1"),
    ("lppl-1.2", "LPPL-1.2"),
    ("lppl-1.3a", "LPPL-1.3a"),
    ("lppl-1.3c", "LPPL-1.3c"),
    ("qpl-1", "QPL-1.0"),
    ("zope-1.1", "ZPL-1.1"),
    ("zope-2", "ZPL-2.0"),
    ("zope-2.1", "ZPL-2.1"),
    // DEP-5 names the 2002-12-31 W3C Software Notice: SPDX's W3C.
    ("w3c", "W3C"),
    // Debian's Artistic (/usr/share/common-licenses/Artistic, "which comes
    // with Perl"; no version means 1) is Perl's text with its clause 8
    // (aggregation): SPDX Artistic-1.0-Perl, not Artistic-1.0 or -cl8.
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    // The Berkeley licenses by clause count; SPDX's texts are the same
    // with the holder as a variable.
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    // One text each, same name.
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    // Expat's license is the text SPDX calls MIT.
    ("expat", "MIT"),
    // CC0 has one version. Creative Commons versions without a port
    // (ported ones such as CC-BY-SA-3.0-DE have their own SPDX ids).
    ("cc0", "CC0-1.0"),
    ("cc0-1", "CC0-1.0"),
    ("cc-by-1", "CC-BY-1.0"),
    ("cc-by-2", "CC-BY-2.0"),
    ("cc-by-2.5", "CC-BY-2.5"),
    ("cc-by-3", "CC-BY-3.0"),
    ("cc-by-4", "CC-BY-4.0"),
    ("cc-by-sa-1", "CC-BY-SA-1.0"),
    ("cc-by-sa-2", "CC-BY-SA-2.0"),
    ("cc-by-sa-2.5", "CC-BY-SA-2.5"),
    ("cc-by-sa-3", "CC-BY-SA-3.0"),
    ("cc-by-sa-4", "CC-BY-SA-4.0"),
];

/// A DEP-5 exception (`<license> with <keywords> exception`) with an exact
/// SPDX exception.
pub struct Exception {
    /// The keywords, lower case.
    pub keywords: &'static str,
    /// The SPDX exception id.
    pub spdx: &'static str,
    /// SPDX licenses it is exact with; empty: any.
    pub only_with: &'static [&'static str],
}

/// Exceptions with one text each. Not here: `OpenSSL` (DEP-5's standard
/// keyword, but SPDX has only project-specific OpenSSL exceptions).
pub const EXCEPTIONS: &[Exception] = &[
    // DEP-5 quotes the FSF's GPL font exception: SPDX Font-exception-2.0.
    Exception {
        keywords: "font",
        spdx: "Font-exception-2.0",
        only_with: &[],
    },
    // texinfo.tex's exception.
    Exception {
        keywords: "texinfo",
        spdx: "Texinfo-exception",
        only_with: &[],
    },
    // The Linux kernel's note on system calls; DEP-5 files spell its id.
    Exception {
        keywords: "linux-syscall-note",
        spdx: "Linux-syscall-note",
        only_with: &[],
    },
    Exception {
        keywords: "classpath",
        spdx: "Classpath-exception-2.0",
        only_with: &[],
    },
    Exception {
        keywords: "libtool",
        spdx: "Libtool-exception",
        only_with: &[],
    },
    // Bison's skeletons carry the 2.2 text since they became GPL-3 (Bison
    // 2.4); under GPL-2 it may be the older 1.24 text.
    Exception {
        keywords: "bison",
        spdx: "Bison-exception-2.2",
        only_with: &["GPL-3.0-only", "GPL-3.0-or-later"],
    },
];

/// The SPDX expression a DEP-5 copyright file declares: the AND of its
/// `Files:` paragraphs' distinct expressions, sorted.
pub fn declared_license(copyright: &str) -> Result<String, NotMapped> {
    let mut paragraphs = deb822::paragraphs(copyright);
    match paragraphs.next() {
        Some(Ok(header)) if header.get("Format").is_some_and(is_dep5_format) => {}
        _ => return Err(NotMapped::NotMachineReadable),
    }
    let mut terms = Vec::new();
    for paragraph in paragraphs {
        let paragraph = paragraph.map_err(NotMapped::Syntax)?;
        if paragraph.field("Files").is_none() {
            continue; // a standalone License paragraph: the text of a name
        }
        let line = paragraph.line;
        let license = paragraph
            .field("License")
            .ok_or(NotMapped::NoLicense { line })?;
        let first = license.value.lines().next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(NotMapped::NoLicense { line: license.line });
        }
        terms.push(parse_expression(first, license.line)?);
    }
    if terms.is_empty() {
        return Err(NotMapped::NoFilesParagraph);
    }
    Ok(Expr::all(terms).to_string())
}

/// `Format:` naming copyright-format 1.0 at (www.)debian.org, over http or
/// https, with or without the final slash.
fn is_dep5_format(value: &str) -> bool {
    let value = value.trim();
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return false;
    };
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    matches!(
        rest,
        "debian.org/doc/packaging-manuals/copyright-format/1.0/"
            | "debian.org/doc/packaging-manuals/copyright-format/1.0"
    )
}

/// A short name in the form [`LICENSES`] is keyed by: lower case (DEP-5
/// names are case-insensitive), and a final version's trailing `.0`s
/// dropped (DEP-5: "2.0.0" equals "2.0" and "2").
fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let (body, plus) = match lower.strip_suffix('+') {
        Some(body) => (body, "+"),
        None => (lower.as_str(), ""),
    };
    let Some((stem, version)) = body.rsplit_once('-') else {
        return lower;
    };
    let is_version = version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !is_version {
        return lower;
    }
    let mut version = version;
    while let Some(shorter) = version.strip_suffix(".0") {
        version = shorter;
    }
    format!("{stem}-{version}{plus}")
}

fn spdx_license(name: &str) -> Option<&'static str> {
    let key = normalise(name);
    LICENSES
        .iter()
        .find(|(dep5, _)| *dep5 == key)
        .map(|(_, spdx)| *spdx)
}

fn spdx_exception(keywords: &str, license: &str) -> Option<&'static str> {
    let keywords = keywords.to_ascii_lowercase();
    EXCEPTIONS
        .iter()
        .find(|e| {
            e.keywords == keywords && (e.only_with.is_empty() || e.only_with.contains(&license))
        })
        .map(|e| e.spdx)
}

/// An SPDX license expression, kept canonical: nested operators of one
/// kind flattened, operands distinct and sorted, so equal declarations
/// print equally whatever their order in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// `<license>` or `<license> WITH <exception>`.
    Id(String),
    All(Vec<Expr>),
    Any(Vec<Expr>),
}

impl Expr {
    fn all(terms: Vec<Expr>) -> Expr {
        Expr::join(terms, true)
    }

    fn any(terms: Vec<Expr>) -> Expr {
        Expr::join(terms, false)
    }

    fn join(terms: Vec<Expr>, all: bool) -> Expr {
        let mut flat = Vec::new();
        for t in terms {
            match t {
                Expr::All(inner) if all => flat.extend(inner),
                Expr::Any(inner) if !all => flat.extend(inner),
                other => flat.push(other),
            }
        }
        flat.sort_by_cached_key(Expr::to_string);
        flat.dedup();
        match flat.len() {
            1 => flat.remove(0),
            _ if all => Expr::All(flat),
            _ => Expr::Any(flat),
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (terms, op) = match self {
            Expr::Id(id) => return f.write_str(id),
            Expr::All(terms) => (terms, " AND "),
            Expr::Any(terms) => (terms, " OR "),
        };
        for (i, t) in terms.iter().enumerate() {
            if i > 0 {
                f.write_str(op)?;
            }
            // AND binds tighter than OR in SPDX, but a compound operand
            // is bracketed either way so no reader has to know that.
            match t {
                Expr::Id(id) => f.write_str(id)?,
                compound => write!(f, "({compound})")?,
            }
        }
        Ok(())
    }
}

/// A DEP-5 license expression (the first line of a `License:` field):
/// names joined by `and` and `or`, `and` binding tighter unless a comma
/// comes before it (`A or B, and C` is `(A or B) and C`).
fn parse_expression(text: &str, line: usize) -> Result<Expr, NotMapped> {
    let malformed = || NotMapped::Expression {
        line,
        expression: text.to_string(),
    };
    let mut words = Vec::new();
    let mut commas = Vec::new(); // word indices a comma comes before
    for word in text.split_whitespace() {
        match word.strip_suffix(',') {
            Some(w) => {
                if !w.is_empty() {
                    words.push(w);
                }
                commas.push(words.len());
            }
            None => words.push(word),
        }
    }
    let mut segments = Vec::new();
    let mut start = 0;
    for &at in &commas {
        segments.push(&words[start..at]);
        start = at;
    }
    segments.push(&words[start..]);

    let (first, rest) = segments.split_first().ok_or_else(malformed)?;
    let mut expr = parse_segment(first, &malformed)?;
    for segment in rest {
        // After a comma: `and` or `or`, joining everything before it.
        let (op, tail) = segment.split_first().ok_or_else(malformed)?;
        let rhs = parse_segment(tail, &malformed)?;
        expr = if op.eq_ignore_ascii_case("and") {
            Expr::all(vec![expr, rhs])
        } else if op.eq_ignore_ascii_case("or") {
            Expr::any(vec![expr, rhs])
        } else {
            return Err(malformed());
        };
    }
    Ok(expr)
}

/// Names joined by `and`/`or` without commas: an OR of ANDs.
fn parse_segment(words: &[&str], malformed: &dyn Fn() -> NotMapped) -> Result<Expr, NotMapped> {
    let is = |i: usize, keyword: &str| {
        words
            .get(i)
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    };
    let mut alternatives = Vec::new();
    let mut group = Vec::new();
    let mut i = 0;
    loop {
        let name = *words.get(i).ok_or_else(malformed)?;
        if ["and", "or", "with", "exception"]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k))
        {
            return Err(malformed());
        }
        i += 1;
        let license = spdx_license(name).ok_or_else(|| NotMapped::UnknownLicense {
            name: name.to_string(),
        })?;
        if is(i, "with") {
            let from = i + 1;
            let to = (from..words.len())
                .find(|&j| is(j, "exception"))
                .filter(|&to| to > from)
                .ok_or_else(malformed)?;
            let keywords = words[from..to].join(" ");
            let exception =
                spdx_exception(&keywords, license).ok_or_else(|| NotMapped::UnknownException {
                    keywords,
                    license: license.to_string(),
                })?;
            group.push(Expr::Id(format!("{license} WITH {exception}")));
            i = to + 1;
        } else {
            group.push(Expr::Id(license.to_string()));
        }
        if i == words.len() {
            break;
        }
        if is(i, "or") {
            alternatives.push(Expr::all(std::mem::take(&mut group)));
        } else if !is(i, "and") {
            return Err(malformed());
        }
        i += 1;
    }
    alternatives.push(Expr::all(group));
    Ok(Expr::any(alternatives))
}

#[cfg(test)]
#[path = "copyright_tests.rs"]
mod tests;
