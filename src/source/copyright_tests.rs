use super::*;

/// Shaped like runc's and libzstd1's files in trixie: a header, Files
/// paragraphs with multi-line Copyright fields, a choice, standalone
/// License paragraphs with their texts, `.` lines and a comment.
const RUNC: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: runc
Source: https://github.com/opencontainers/runc

Files: *
Copyright: 2014-2024 Docker, Inc.
           2015-2024 The runc Authors
License: Apache-2.0

Files: libcontainer/seccomp/patchbpf/*
Copyright: 2019 SUSE LLC
License: Apache-2.0 or GPL-3+

# packaging
Files: debian/*
Copyright:
 2014-2016 Tianon Gravi <tianon@debian.org>
 2018 Dmitry Smirnov <onlyjob@debian.org>
License: GPL-3+

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the \"License\");
 .
 On Debian systems, the complete text of the Apache version 2.0 license
 can be found in \"/usr/share/common-licenses/Apache-2.0\".

License: GPL-3+
 This program is free software: you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation, either version 3 of the License, or
 (at your option) any later version.
";

#[test]
fn files_paragraphs_are_anded_and_choices_kept() {
    assert_eq!(
        declared_license(RUNC).unwrap(),
        "Apache-2.0 AND (Apache-2.0 OR GPL-3.0-or-later) AND GPL-3.0-or-later"
    );
}

#[test]
fn one_license_is_the_whole_expression() {
    let zlib = "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                Upstream-Name: zlib\n\n\
                Files: *\nCopyright: 1995-2024 Jean-loup Gailly and Mark Adler\nLicense: Zlib\n \
                This software is provided 'as-is', without any express or implied\n \
                warranty.\n\n\
                Files: debian/*\nCopyright: 2000-2024 Mark Brown\nLicense: zlib\n";
    assert_eq!(declared_license(zlib).unwrap(), "Zlib");
}

#[test]
fn exceptions_map_where_exact() {
    // systemd-boot-efi's kernel headers, gmp's calc demo, e2fsprogs' texinfo.tex
    let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0\n\n\
                Files: src/basic/linux/*\nCopyright: Linus Torvalds\n\
                License: GPL-2 with Linux-syscall-note exception\n\n\
                Files: demos/calc/calc.[ch]\nCopyright: 1984-2020 Free Software Foundation, Inc.\n\
                License: GPL-3+ with Bison exception\n\n\
                Files: doc/texinfo.tex\nCopyright: 1985-2019 Free Software Foundation, Inc.\n\
                License: GPL-2+ with Texinfo exception\n";
    assert_eq!(
        declared_license(text).unwrap(),
        "GPL-2.0-only WITH Linux-syscall-note AND GPL-2.0-or-later WITH Texinfo-exception \
         AND GPL-3.0-or-later WITH Bison-exception-2.2"
    );
    // Under GPL-2 the Bison exception may be 1.24's text: not exact.
    let gpl2 = text.replace("GPL-3+ with Bison", "GPL-2+ with Bison");
    assert_eq!(
        declared_license(&gpl2),
        Err(NotMapped::UnknownException {
            keywords: "Bison".into(),
            license: "GPL-2.0-or-later".into()
        })
    );
    // DEP-5's own OpenSSL keyword has no generic SPDX exception.
    let openssl = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
                   Files: *\nCopyright: 2001 A\nLicense: GPL-2+ with OpenSSL exception\n";
    assert!(matches!(
        declared_license(openssl),
        Err(NotMapped::UnknownException { .. })
    ));
}

#[test]
fn and_binds_tighter_than_or_unless_after_a_comma() {
    let file = |expr: &str| {
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
             Files: *\nCopyright: 2020 A\nLicense: {expr}\n"
        )
    };
    let cases = [
        (
            "GPL-2+ or Artistic, and BSD-3-clause",
            "(Artistic-1.0-Perl OR GPL-2.0-or-later) AND BSD-3-Clause",
        ),
        (
            "GPL-2+ or Artistic and BSD-3-clause",
            "(Artistic-1.0-Perl AND BSD-3-Clause) OR GPL-2.0-or-later",
        ),
        ("BSD-3-clause or GPL-2", "BSD-3-Clause OR GPL-2.0-only"),
        ("GPL-2 OR BSD-2-clause", "BSD-2-Clause OR GPL-2.0-only"),
        ("Expat and ISC and Expat", "ISC AND MIT"),
        (
            "MPL-1.1 or GPL-2 or LGPL-2.1",
            "GPL-2.0-only OR LGPL-2.1-only OR MPL-1.1",
        ),
    ];
    for (dep5, spdx) in cases {
        assert_eq!(declared_license(&file(dep5)).unwrap(), spdx, "{dep5}");
    }
    for bad in [
        "GPL-2+ BSD-3-clause",
        "GPL-2+, BSD-3-clause",
        "GPL-2+ or",
        "and GPL-2+",
        "GPL-2+,",
        "GPL-2+ with exception",
        "GPL-2+ with Font",
        "GPL-2+ or, and BSD-3-clause",
    ] {
        assert!(
            matches!(
                declared_license(&file(bad)),
                Err(NotMapped::Expression { line: 5, .. })
            ),
            "{bad}: {:?}",
            declared_license(&file(bad))
        );
    }
}

#[test]
fn names_are_case_insensitive_and_dot_zeroes_do_not_count() {
    for (name, spdx) in [
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("gpl-2.0.0", "GPL-2.0-only"),
        ("Apache-2", "Apache-2.0"),
        ("BSD-3-Clause", "BSD-3-Clause"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("CC-BY-SA-4.0", "CC-BY-SA-4.0"),
        ("CC-BY-2.5", "CC-BY-2.5"),
        ("CC0-1.0", "CC0-1.0"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
        ("LPPL-1.3c", "LPPL-1.3c"),
        ("MPL-2.0", "MPL-2.0"),
        ("Expat", "MIT"),
    ] {
        assert_eq!(spdx_license(name), Some(spdx), "{name}");
    }
    for name in [
        "GPL",
        "LGPL",
        "MIT",
        "BSD",
        "public-domain",
        "Perl",
        "GPL-2+-with-link-exception",
        "BSD-3-clause-Berkeley",
        "LPPL-1.3",
        "GPL-2.1",
        "Apache-2.0+",
    ] {
        assert_eq!(spdx_license(name), None, "{name}");
    }
    assert_eq!(normalise("Unicode-DFS-2016"), "unicode-dfs-2016");
    assert_eq!(normalise("GPL-2+-or-X11"), "gpl-2+-or-x11");
}

#[test]
fn order_and_repeats_in_the_file_do_not_change_the_result() {
    let para = |license: &str| format!("Files: x\nCopyright: 2020 A\nLicense: {license}\n");
    let header = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n";
    let a = format!(
        "{header}\n{}\n{}\n{}",
        para("GPL-2+"),
        para("Expat or Apache-2.0"),
        para("GPL-2.0+")
    );
    let b = format!(
        "{header}\n{}\n{}",
        para("Apache-2.0 or Expat"),
        para("GPL-2+")
    );
    assert_eq!(declared_license(&a), declared_license(&b));
    assert_eq!(
        declared_license(&a).unwrap(),
        "(Apache-2.0 OR MIT) AND GPL-2.0-or-later"
    );
}

#[test]
fn anything_unknown_declares_nothing() {
    // Like iptables: all standard names but one.
    let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
                Files: *\nCopyright: 2000 Netfilter Core Team\nLicense: GPL-2+\n\n\
                Files: extensions/libxt_cgroup.c\nCopyright: 2013 A\nLicense: custom\n \
                Permission is granted to use this file.\n";
    assert_eq!(
        declared_license(text),
        Err(NotMapped::UnknownLicense {
            name: "custom".into()
        })
    );
    let pd = text.replace("License: custom", "License: public-domain");
    assert_eq!(
        declared_license(&pd),
        Err(NotMapped::UnknownLicense {
            name: "public-domain".into()
        })
    );
}

#[test]
fn only_dep5_1_0_files_are_read() {
    // gcc-14-base's file: free text
    let free = "This is the Debian GNU/Linux prepackaged version of the GNU compiler\n\
                collection, containing Ada, C, C++, D, Fortran 95, Go, Objective-C.\n\n\
                Copyright: Free Software Foundation\nLicense: GPL-3+\n";
    assert_eq!(declared_license(free), Err(NotMapped::NotMachineReadable));
    for format in [
        "http://dep.debian.net/deps/dep5/",
        "https://www.debian.org/doc/packaging-manuals/copyright-format/2.0/",
        "ftp://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "",
    ] {
        let text = format!("Format: {format}\n\nFiles: *\nCopyright: A\nLicense: GPL-2+\n");
        assert_eq!(
            declared_license(&text),
            Err(NotMapped::NotMachineReadable),
            "{format}"
        );
    }
    // a Files paragraph first: no header
    let headless = "Files: *\nCopyright: A\nLicense: GPL-2+\n";
    assert_eq!(
        declared_license(headless),
        Err(NotMapped::NotMachineReadable)
    );
    assert_eq!(declared_license(""), Err(NotMapped::NotMachineReadable));
    for format in [
        "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "https://debian.org/doc/packaging-manuals/copyright-format/1.0",
    ] {
        assert!(is_dep5_format(format), "{format}");
    }
}

#[test]
fn malformed_files_declare_nothing() {
    let header = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n";
    assert_eq!(
        declared_license(&format!("{header}Upstream-Contact: A\n")),
        Err(NotMapped::NoFilesParagraph)
    );
    assert_eq!(
        declared_license(&format!("{header}Files: *\nCopyright: A\n")),
        Err(NotMapped::NoLicense { line: 3 })
    );
    assert_eq!(
        declared_license(&format!(
            "{header}Files: *\nCopyright: A\nLicense:\n text only\n"
        )),
        Err(NotMapped::NoLicense { line: 5 })
    );
    assert!(matches!(
        declared_license(&format!("{header}Files: *\nnot a field\n")),
        Err(NotMapped::Syntax(_))
    ));
}
