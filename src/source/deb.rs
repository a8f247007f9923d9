//! Unpacking Debian binary packages (`.deb`) into the in-memory [`Tree`].
//!
//! [`unpack_into`] takes a package's name (used in errors and as the owner
//! of the paths it writes) and the bytes of its `.deb` (already checked
//! against the lock's sha256), and writes the data archive into a [`Tree`].
//! It never runs maintainer scripts and never touches the host file system;
//! it only records the scripts' names so a later step can warn.
//!
//! Archive rules (deb(5), as dpkg enforces them): the ar members come in the
//! order `debian-binary` (format `2.x`), `control.tar`, `data.tar`, each tar
//! uncompressed or compressed with xz, zstd or gzip. Members whose name starts
//! with `_` are ignored; any other member, a missing member, a truncated
//! member or a corrupt stream is an error naming the package and the member.
//!
//! Path rules:
//! - entry paths are normalised (`./usr/x`, `/usr/x` and `usr//x` are all
//!   `usr/x`); a `..` component anywhere is an error, never dropped;
//! - every path is mapped into the merged-/usr layout
//!   ([`crate::rootfs::usrmerge::canonical_path`]): `./bin/foo` lands at
//!   `usr/bin/foo`. A top-level `bin`/`lib`/... symlink that agrees with the
//!   merged layout (trixie's `base-files` ships them) is skipped; any other
//!   non-directory at those names is an error;
//! - the parent of each entry is resolved through symlinks already in the
//!   tree, inside the image root, as the kernel would do in a chroot: after
//!   `usr/lnk -> /`, an entry `usr/lnk/etc/x` lands at `etc/x`. A resolution
//!   that climbs above the root, loops, or meets a non-directory is an error;
//! - a symlink whose target, taken lexically from the symlink's own directory,
//!   climbs above the root (`usr/x -> ../../etc`) is an error; absolute
//!   targets are kept as they are (they resolve inside the image at runtime);
//! - an existing symlink to a directory is kept when the package ships a
//!   directory at that path (dpkg does the same); a non-directory never
//!   replaces a directory;
//! - hard links become copies of an earlier file of the same package;
//! - devices and fifos are kept; owners are the tar's uid/gid numbers, modes
//!   are masked with `0o7777`; mtimes and user names are dropped.
//!
//! On error the tree and the owner map may hold part of the package: the
//! caller abandons the build.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use crate::rootfs::tree::{Entry, Kind, Tree};
use crate::rootfs::usrmerge::{canonical_path, is_merged_dir, is_merged_link_target};
use crate::util::path::normalize;

/// Symlinks followed while resolving one path before it counts as a loop
/// (the kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Files of the control archive that dpkg would run.
const MAINTAINER_SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

/// Files larger than this are not preallocated from the (untrusted) header.
const MAX_PREALLOC: u64 = 64 << 20;

/// What a package told us besides its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// The control file's `Package` field.
    pub package: String,
    /// The control file's `Version` field.
    pub version: String,
    /// The control file's text.
    pub control: String,
    /// Conffiles in tree form (`etc/foo.conf`); entries flagged
    /// `remove-on-upgrade` are not shipped and not listed.
    pub conffiles: Vec<String>,
    /// Names of the maintainer scripts present (`postinst`, ...). Never run.
    pub maintainer_scripts: Vec<String>,
    /// Text of `usr/share/doc/<package>/copyright` if the package ships it.
    pub copyright: Option<String>,
    /// Every tree path written, in archive order.
    pub paths: Vec<String>,
    /// Non-directory paths that another package had already written.
    pub conflicts: Vec<PathConflict>,
}

/// A path this package overwrote after another package had written it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConflict {
    pub path: String,
    pub previous_owner: String,
}

/// Errors of [`unpack_into`]; each names the package.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("package {package}: cannot read the ar archive")]
    Ar {
        package: String,
        #[source]
        source: io::Error,
    },
    #[error("package {package}: member {member} is missing")]
    MissingMember {
        package: String,
        member: &'static str,
    },
    #[error("package {package}: member {member} is out of order or repeated")]
    MemberOrder { package: String, member: String },
    #[error("package {package}: unexpected member {member}")]
    UnexpectedMember { package: String, member: String },
    #[error("package {package}: unsupported format version {found:?} in debian-binary")]
    FormatVersion { package: String, found: String },
    #[error("package {package}: member {member} uses an unsupported compression")]
    Compression { package: String, member: String },
    #[error("package {package}: cannot read member {member}")]
    Member {
        package: String,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("package {package}: {what} in {member} is not valid utf-8")]
    NotUtf8 {
        package: String,
        member: String,
        what: String,
    },
    #[error("package {package}: {member} has no control file")]
    MissingControl { package: String, member: String },
    #[error("package {package}: control file has no {field} field")]
    ControlField {
        package: String,
        field: &'static str,
    },
    #[error("package {package}: path {path:?} climbs out of the image root")]
    PathEscape { package: String, path: String },
    #[error("package {package}: path {path:?} is not a valid entry name")]
    InvalidPath { package: String, path: String },
    #[error("package {package}: symlink {path} -> {target:?} points above the image root")]
    SymlinkEscape {
        package: String,
        path: String,
        target: String,
    },
    #[error("package {package}: {path} resolves through symlinks to above the image root")]
    ResolveEscape { package: String, path: String },
    #[error("package {package}: too many levels of symlinks resolving {path}")]
    SymlinkLoop { package: String, path: String },
    #[error("package {package}: cannot place {path}: {parent} is not a directory")]
    NotADirectory {
        package: String,
        path: String,
        parent: String,
    },
    #[error("package {package}: {path} would replace a directory with a non-directory")]
    ReplacesDirectory { package: String, path: String },
    #[error("package {package}: hard link {path} -> {target}: target is not an earlier file of the package")]
    HardLinkTarget {
        package: String,
        path: String,
        target: String,
    },
    #[error("package {package}: {path} contradicts the merged /usr layout (expected a directory or a symlink to usr/{path}, found {found})")]
    UsrMerge {
        package: String,
        path: String,
        found: String,
    },
    #[error("package {package}: entry {path} has unsupported tar type {kind}")]
    UnsupportedType {
        package: String,
        path: String,
        kind: String,
    },
    #[error("package {package}: entry {path} has an unreadable header field")]
    Header {
        package: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the `.deb` in `bytes` into `tree`, recording in `owner` the
/// package (`name`) that last wrote each non-directory path. See the module
/// docs for the rules.
pub fn unpack_into(
    name: &str,
    bytes: &[u8],
    tree: &mut Tree,
    owner: &mut BTreeMap<String, String>,
) -> Result<DebInfo, DebError> {
    let mut archive = ar::Archive::new(bytes);
    let mut control: Option<ControlParts> = None;
    let mut info: Option<DebInfo> = None;
    let mut seen_version = false;
    while let Some((id, reader)) = next_member(name, &mut archive)? {
        let in_order = match member_kind(name, &id)? {
            MemberKind::Version => {
                check_version(name, &id, reader)?;
                !std::mem::replace(&mut seen_version, true)
            }
            MemberKind::Control(c) if seen_version && control.is_none() => {
                control = Some(read_control(name, &id, decompress(name, &id, c, reader)?)?);
                true
            }
            MemberKind::Data(c) if info.is_none() => match &control {
                Some(parts) => {
                    let stream = decompress(name, &id, c, reader)?;
                    info = Some(unpack_data(name, &id, parts, stream, tree, owner)?);
                    true
                }
                None => false,
            },
            MemberKind::Ignored => seen_version,
            MemberKind::Control(_) | MemberKind::Data(_) => false,
        };
        if !in_order {
            return Err(DebError::MemberOrder {
                package: name.into(),
                member: id,
            });
        }
    }
    let missing = |member| DebError::MissingMember {
        package: name.into(),
        member,
    };
    if !seen_version {
        return Err(missing("debian-binary"));
    }
    if control.is_none() {
        return Err(missing("control.tar"));
    }
    let info = info.ok_or_else(|| missing("data.tar"))?;
    tracing::debug!(package = name, paths = info.paths.len(), "unpacked");
    Ok(info)
}

/// Rewrites a `.deb` with its `control.tar` and `data.tar` members
/// decompressed. Unpacking the result yields the same tree as unpacking
/// `bytes` (it goes through the same checks), but skips the xz work: the
/// build caches these so a rebuild does not decompress containerd again.
pub fn to_plain(name: &str, bytes: &[u8]) -> Result<Vec<u8>, DebError> {
    let mut archive = ar::Archive::new(bytes);
    let mut out = ar::Builder::new(Vec::with_capacity(bytes.len() * 4));
    while let Some((id, reader)) = next_member(name, &mut archive)? {
        let (plain_id, compression) = match member_kind(name, &id)? {
            MemberKind::Control(c) => ("control.tar".to_string(), c),
            MemberKind::Data(c) => ("data.tar".to_string(), c),
            MemberKind::Version | MemberKind::Ignored => (id.clone(), Compression::None),
        };
        let mut data = Vec::new();
        decompress(name, &id, compression, reader)?
            .read_to_end(&mut data)
            .map_err(|source| member_err(name, &id, source))?;
        let header = ar::Header::new(plain_id.into_bytes(), data.len() as u64);
        out.append(&header, &data[..])
            .map_err(|source| member_err(name, &id, source))?;
    }
    out.into_inner().map_err(|source| DebError::Ar {
        package: name.into(),
        source,
    })
}

/// The next ar member's name and an exact-length reader over it.
type Member<'a, 'b> = (String, Exact<ar::Entry<'b, &'a [u8]>>);

fn next_member<'a, 'b>(
    name: &str,
    archive: &'b mut ar::Archive<&'a [u8]>,
) -> Result<Option<Member<'a, 'b>>, DebError> {
    let Some(member) = archive.next_entry() else {
        return Ok(None);
    };
    let member = member.map_err(|source| DebError::Ar {
        package: name.into(),
        source,
    })?;
    let id = String::from_utf8_lossy(member.header().identifier());
    let id = id.trim_end().trim_end_matches('/').to_string();
    let reader = Exact {
        remaining: member.header().size(),
        inner: member,
    };
    Ok(Some((id, reader)))
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

enum MemberKind {
    Version,
    Control(Compression),
    Data(Compression),
    Ignored,
}

fn member_kind(package: &str, id: &str) -> Result<MemberKind, DebError> {
    let compression = |suffix: &str| match suffix {
        "" => Ok(Compression::None),
        ".xz" => Ok(Compression::Xz),
        ".zst" => Ok(Compression::Zstd),
        ".gz" => Ok(Compression::Gzip),
        _ => Err(DebError::Compression {
            package: package.into(),
            member: id.into(),
        }),
    };
    if id == "debian-binary" {
        Ok(MemberKind::Version)
    } else if let Some(suffix) = id.strip_prefix("control.tar") {
        Ok(MemberKind::Control(compression(suffix)?))
    } else if let Some(suffix) = id.strip_prefix("data.tar") {
        Ok(MemberKind::Data(compression(suffix)?))
    } else if id.starts_with('_') {
        Ok(MemberKind::Ignored)
    } else {
        Err(DebError::UnexpectedMember {
            package: package.into(),
            member: id.into(),
        })
    }
}

fn check_version(package: &str, member: &str, mut reader: impl Read) -> Result<(), DebError> {
    let mut text = Vec::new();
    reader
        .by_ref()
        .take(64)
        .read_to_end(&mut text)
        .map_err(|source| member_err(package, member, source))?;
    let text = String::from_utf8_lossy(&text);
    let version = text.lines().next().unwrap_or_default().trim();
    if version.split('.').next() != Some("2") {
        return Err(DebError::FormatVersion {
            package: package.into(),
            found: version.into(),
        });
    }
    Ok(())
}

fn member_err(package: &str, member: &str, source: io::Error) -> DebError {
    DebError::Member {
        package: package.into(),
        member: member.into(),
        source,
    }
}

fn decompress<'a>(
    package: &str,
    member: &str,
    compression: Compression,
    reader: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, DebError> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|source| member_err(package, member, source))?,
        ),
    })
}

/// A reader over one ar member that fails when the archive ends before the
/// member's declared size (the `ar` crate returns a short read instead).
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "archive ends {} bytes before the member does",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Reads the rest of a finished stream, so that a corrupt or truncated
/// compressed stream (checksum, trailer) is noticed.
fn drain(package: &str, member: &str, mut stream: impl Read) -> Result<(), DebError> {
    io::copy(&mut stream, &mut io::sink())
        .map(drop)
        .map_err(|source| member_err(package, member, source))
}

/// What the control archive holds that we keep.
struct ControlParts {
    control: String,
    conffiles: Vec<String>,
    maintainer_scripts: Vec<String>,
}

fn read_control(package: &str, member: &str, stream: impl Read) -> Result<ControlParts, DebError> {
    let err = |source| member_err(package, member, source);
    let not_utf8 = |what: String| DebError::NotUtf8 {
        package: package.into(),
        member: member.into(),
        what,
    };
    let mut archive = tar::Archive::new(stream);
    let mut control = None;
    let mut conffiles = Vec::new();
    let mut maintainer_scripts = Vec::new();
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            continue;
        };
        match path.as_str() {
            "control" | "conffiles" => {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|source| match source.kind() {
                        io::ErrorKind::InvalidData => not_utf8(format!("file {path}")),
                        _ => err(source),
                    })?;
                if path == "control" {
                    control = Some(text);
                } else {
                    conffiles = parse_conffiles(&text);
                }
            }
            name if MAINTAINER_SCRIPTS.contains(&name) => maintainer_scripts.push(path),
            _ => {}
        }
    }
    drain(package, member, archive.into_inner())?;
    let control = control.ok_or_else(|| DebError::MissingControl {
        package: package.into(),
        member: member.into(),
    })?;
    maintainer_scripts.sort();
    Ok(ControlParts {
        control,
        conffiles,
        maintainer_scripts,
    })
}

/// Parses deb-conffiles(5): one absolute path per line, optionally preceded
/// by flags; `remove-on-upgrade` entries are not shipped and are skipped.
fn parse_conffiles(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (flags, path) = match line.find('/') {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        if flags.split_whitespace().any(|f| f == "remove-on-upgrade") {
            continue;
        }
        if let Some(path) = normalize(path) {
            out.push(canonical_path(&path));
        }
    }
    out
}

/// The value of a single-line control field (field names are case-insensitive).
fn control_field<'a>(control: &'a str, field: &str) -> Option<&'a str> {
    control.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (!name.starts_with([' ', '\t']) && name.eq_ignore_ascii_case(field)).then(|| value.trim())
    })
}

fn unpack_data(
    name: &str,
    member: &str,
    parts: &ControlParts,
    stream: impl Read,
    tree: &mut Tree,
    owner: &mut BTreeMap<String, String>,
) -> Result<DebInfo, DebError> {
    let field = |field| {
        control_field(&parts.control, field)
            .map(str::to_string)
            .ok_or(DebError::ControlField {
                package: name.into(),
                field,
            })
    };
    let package = field("Package")?;
    let version = field("Version")?;
    let mut unpacker = Unpacker {
        package: name,
        tree,
        owner,
        copyright_path: format!("usr/share/doc/{package}/copyright"),
        written: HashSet::new(),
        copyright: None,
        paths: Vec::new(),
        conflicts: Vec::new(),
    };
    let err = |source| member_err(name, member, source);
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(err)? {
        unpacker.entry(member, entry.map_err(err)?)?;
    }
    drain(name, member, archive.into_inner())?;
    Ok(DebInfo {
        package,
        version,
        control: parts.control.clone(),
        conffiles: parts.conffiles.clone(),
        maintainer_scripts: parts.maintainer_scripts.clone(),
        copyright: unpacker.copyright,
        paths: unpacker.paths,
        conflicts: unpacker.conflicts,
    })
}

/// One data-archive entry, decoded from its tar header.
enum Node {
    Dir,
    Other(Kind),
    HardLink(String),
}

/// Owners and permission bits from a tar header.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
}

struct Unpacker<'a> {
    package: &'a str,
    tree: &'a mut Tree,
    owner: &'a mut BTreeMap<String, String>,
    copyright_path: String,
    /// Non-directory tree paths this package wrote: valid hard-link targets.
    written: HashSet<String>,
    copyright: Option<String>,
    paths: Vec<String>,
    conflicts: Vec<PathConflict>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, member: &str, mut entry: tar::Entry<R>) -> Result<(), DebError> {
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = self.utf8(member, "entry name", entry.path_bytes())?;
        let header_err = |source| DebError::Header {
            package: self.package.into(),
            path: raw.clone(),
            source,
        };
        let header = entry.header();
        let uid = header.uid().and_then(to_u32).map_err(header_err)?;
        let gid = header.gid().and_then(to_u32).map_err(header_err)?;
        let meta = Meta {
            mode: header.mode().map_err(header_err)? & 0o7777,
            uid,
            gid,
        };
        let device = |h: &tar::Header| -> io::Result<(u32, u32)> {
            Ok((
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ))
        };
        let node = match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                Node::Other(Kind::File(self.read_file(member, &raw, &mut entry)?.into()))
            }
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => {
                Node::Other(Kind::Symlink(self.link_name(member, &raw, &entry)?))
            }
            tar::EntryType::Link => Node::HardLink(self.link_name(member, &raw, &entry)?),
            tar::EntryType::Char => {
                let (major, minor) = device(entry.header()).map_err(header_err)?;
                Node::Other(Kind::CharDevice { major, minor })
            }
            tar::EntryType::Block => {
                let (major, minor) = device(entry.header()).map_err(header_err)?;
                Node::Other(Kind::BlockDevice { major, minor })
            }
            tar::EntryType::Fifo => Node::Other(Kind::Fifo),
            other => {
                return Err(DebError::UnsupportedType {
                    package: self.package.into(),
                    path: raw,
                    kind: format!("{other:?}"),
                })
            }
        };
        self.place(&raw, node, meta)
    }

    fn utf8(&self, member: &str, what: &str, bytes: Cow<'_, [u8]>) -> Result<String, DebError> {
        String::from_utf8(bytes.into_owned()).map_err(|e| DebError::NotUtf8 {
            package: self.package.into(),
            member: member.into(),
            what: format!("{what} {:?}", String::from_utf8_lossy(e.as_bytes())),
        })
    }

    fn link_name<R: Read>(
        &self,
        member: &str,
        raw: &str,
        entry: &tar::Entry<R>,
    ) -> Result<String, DebError> {
        let target = entry.link_name_bytes().unwrap_or_default();
        let target = self.utf8(member, "link target", target)?;
        if target.is_empty() {
            return Err(DebError::InvalidPath {
                package: self.package.into(),
                path: format!("{raw} -> \"\""),
            });
        }
        Ok(target)
    }

    fn read_file<R: Read>(
        &self,
        member: &str,
        raw: &str,
        entry: &mut tar::Entry<R>,
    ) -> Result<Vec<u8>, DebError> {
        let size = entry.size();
        let mut data = Vec::with_capacity(usize::try_from(size.min(MAX_PREALLOC)).unwrap_or(0));
        entry
            .read_to_end(&mut data)
            .map_err(|source| member_err(self.package, member, source))?;
        if data.len() as u64 != size {
            let msg = format!(
                "{raw}: {} of {size} bytes before the archive ends",
                data.len()
            );
            return Err(member_err(
                self.package,
                member,
                io::Error::new(io::ErrorKind::UnexpectedEof, msg),
            ));
        }
        Ok(data)
    }

    /// Where the entry named `raw` goes: its parent resolved through the tree,
    /// plus its own name. `None` for the image root itself.
    fn locate(&self, raw: &str) -> Result<Option<(String, String)>, DebError> {
        let path = normalize(raw).ok_or_else(|| self.escape(raw))?;
        if path.is_empty() {
            return Ok(None);
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        let parent = resolve(self.tree, parent).map_err(|e| self.resolve_err(raw, e))?;
        Ok(Some((parent, name.to_string())))
    }

    fn place(&mut self, raw: &str, node: Node, meta: Meta) -> Result<(), DebError> {
        let Some((parent, name)) = self.locate(raw)? else {
            return match node {
                Node::Dir => {
                    self.set_dir_meta("", meta);
                    Ok(())
                }
                _ => Err(DebError::InvalidPath {
                    package: self.package.into(),
                    path: raw.into(),
                }),
            };
        };
        let dest = if parent.is_empty() && is_merged_dir(&name) {
            match &node {
                Node::Dir => format!("usr/{name}"),
                Node::Other(Kind::Symlink(t)) if is_merged_link_target(&name, t) => return Ok(()),
                other => {
                    return Err(DebError::UsrMerge {
                        package: self.package.into(),
                        path: name,
                        found: describe(other),
                    })
                }
            }
        } else if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        let entry = match node {
            Node::Dir => return self.place_dir(dest, meta),
            Node::HardLink(target) => self.hard_link_source(raw, &target)?,
            Node::Other(Kind::Symlink(target)) => {
                if !stays_inside(&parent_of(&dest), &target) {
                    return Err(DebError::SymlinkEscape {
                        package: self.package.into(),
                        path: dest,
                        target,
                    });
                }
                Entry {
                    kind: Kind::Symlink(target),
                    mode: 0o777,
                    uid: meta.uid,
                    gid: meta.gid,
                }
            }
            Node::Other(kind) => Entry {
                kind,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
            },
        };
        self.place_node(dest, entry)
    }

    fn place_dir(&mut self, dest: String, meta: Meta) -> Result<(), DebError> {
        match self.tree.get(&dest).map(|e| &e.kind) {
            Some(Kind::Dir) => self.set_dir_meta(&dest, meta),
            // dpkg keeps a symlink to a directory where a package ships a directory
            Some(Kind::Symlink(_)) if self.is_dir_through_links(&dest) => {}
            existing => {
                if existing.is_some() {
                    self.tree.remove_all(&dest);
                    if let Some(previous) = self.owner.remove(&dest) {
                        self.note_conflict(&dest, previous);
                    }
                }
                self.tree.insert(
                    &dest,
                    Entry {
                        kind: Kind::Dir,
                        mode: meta.mode,
                        uid: meta.uid,
                        gid: meta.gid,
                    },
                );
            }
        }
        self.paths.push(dest);
        Ok(())
    }

    fn place_node(&mut self, dest: String, entry: Entry) -> Result<(), DebError> {
        if let Some(Kind::Dir) = self.tree.get(&dest).map(|e| &e.kind) {
            return Err(DebError::ReplacesDirectory {
                package: self.package.into(),
                path: dest,
            });
        }
        if dest == self.copyright_path {
            if let Kind::File(data) = &entry.kind {
                self.copyright = Some(String::from_utf8_lossy(data).into_owned());
            }
        }
        self.tree.insert(&dest, entry);
        if let Some(previous) = self.owner.insert(dest.clone(), self.package.into()) {
            self.note_conflict(&dest, previous);
        }
        self.written.insert(dest.clone());
        self.paths.push(dest);
        Ok(())
    }

    fn note_conflict(&mut self, path: &str, previous: String) {
        if previous != self.package {
            tracing::debug!(package = self.package, path, previous, "path overwritten");
            self.conflicts.push(PathConflict {
                path: path.into(),
                previous_owner: previous,
            });
        }
    }

    /// The entry a hard link copies: an earlier non-directory of this package.
    fn hard_link_source(&self, raw: &str, target: &str) -> Result<Entry, DebError> {
        let missing = || DebError::HardLinkTarget {
            package: self.package.into(),
            path: raw.into(),
            target: target.into(),
        };
        let (parent, name) = self.locate(target)?.ok_or_else(missing)?;
        let path = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        match self.tree.get(&path) {
            Some(entry) if self.written.contains(&path) => Ok(entry.clone()),
            _ => Err(missing()),
        }
    }

    fn set_dir_meta(&mut self, path: &str, meta: Meta) {
        if let Some(entry) = self.tree.get_mut(path) {
            entry.mode = meta.mode;
            entry.uid = meta.uid;
            entry.gid = meta.gid;
        }
    }

    fn is_dir_through_links(&self, path: &str) -> bool {
        resolve(self.tree, path)
            .is_ok_and(|p| matches!(self.tree.get(&p).map(|e| &e.kind), Some(Kind::Dir)))
    }

    fn escape(&self, path: &str) -> DebError {
        DebError::PathEscape {
            package: self.package.into(),
            path: path.into(),
        }
    }

    fn resolve_err(&self, path: &str, err: ResolveError) -> DebError {
        let (package, path) = (self.package.to_string(), path.to_string());
        match err {
            ResolveError::Escape => DebError::ResolveEscape { package, path },
            ResolveError::Loop => DebError::SymlinkLoop { package, path },
            ResolveError::NotDir(parent) => DebError::NotADirectory {
                package,
                path,
                parent,
            },
        }
    }
}

fn to_u32(v: u64) -> io::Result<u32> {
    u32::try_from(v).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("id {v} exceeds 32 bits"),
        )
    })
}

fn describe(node: &Node) -> String {
    match node {
        Node::Dir => "a directory".into(),
        Node::HardLink(t) => format!("a hard link to {t}"),
        Node::Other(Kind::Symlink(t)) => format!("a symlink to {t}"),
        Node::Other(Kind::File(_)) => "a regular file".into(),
        Node::Other(_) => "a special file".into(),
    }
}

fn parent_of(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

/// Whether a symlink in directory `dir` with `target` stays inside the root,
/// taking the target lexically (absolute targets start at the root).
fn stays_inside(dir: &str, target: &str) -> bool {
    let mut depth = if target.starts_with('/') {
        0
    } else {
        dir.split('/').filter(|c| !c.is_empty()).count()
    };
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." if depth == 0 => return false,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

#[derive(Debug, PartialEq, Eq)]
enum ResolveError {
    /// A `..` would climb above the root.
    Escape,
    /// More than [`MAX_SYMLINK_HOPS`] symlinks.
    Loop,
    /// A component is neither a directory nor a symlink (the path so far).
    NotDir(String),
}

/// Resolves `path` through the symlinks in `tree`, inside the root, the way
/// the kernel resolves a path in a chroot except that climbing above the root
/// is an error. Top-level merged directories (`bin`, `lib`, ...) resolve to
/// their `usr/` counterparts whether or not their links exist yet. Missing
/// components are taken as directories to be created. Returns a tree path
/// whose every prefix is a directory or missing.
fn resolve(tree: &Tree, path: &str) -> Result<String, ResolveError> {
    let mut resolved: Vec<String> = Vec::new();
    // components still to walk, last one first
    let mut pending: Vec<String> = path.rsplit('/').map(str::to_string).collect();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop().ok_or(ResolveError::Escape)?;
                continue;
            }
            _ => {}
        }
        if resolved.is_empty() && is_merged_dir(&comp) {
            resolved.push("usr".into());
        }
        resolved.push(comp);
        let here = resolved.join("/");
        match tree.get(&here).map(|e| &e.kind) {
            None | Some(Kind::Dir) => {}
            Some(Kind::Symlink(target)) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::Loop);
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.rsplit('/').map(str::to_string));
            }
            Some(_) => return Err(ResolveError::NotDir(here)),
        }
    }
    Ok(resolved.join("/"))
}

#[cfg(test)]
#[path = "deb_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "deb_props.rs"]
mod props;
