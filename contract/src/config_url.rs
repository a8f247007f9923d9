//! `nodeimg.config=http(s)://HOST[:PORT]/PATH#sha256=<64 hex>`: where a
//! node without an attached config (no fw_cfg entry, no config drive)
//! fetches it, PXE bare metal's way, and the sha256 the fetched bytes must
//! have before anything reads them.
//!
//! The hash is not optional: on a PXE network anyone who answers DHCP or
//! sits on the path can serve a config, and TLS alone says only who served
//! it, not that it is the config the operator meant. The fragment carries
//! it because a fragment is never sent to the server.
//!
//! Only what the agent's small HTTP client can honour is accepted: no
//! user:password (the command line is world-readable in `/proc/cmdline`),
//! no whitespace, quotes or control characters, and a host that is a DNS
//! name, an IPv4 address or a bracketed IPv6 address. Pure: text in, type
//! out.

use std::fmt;
use std::net::Ipv6Addr;

/// The fragment's key.
pub const HASH_PREFIX: &str = "sha256=";

/// A checked `nodeimg.config` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// A DNS name or IPv4 address (lower-case), or an IPv6 address in
    /// brackets (`[fd00::1]`), as it goes into the `Host` header.
    pub host: String,
    /// The port when one is written; see [`ConfigUrl::port`].
    pub port: Option<u16>,
    /// The request target: starts with `/`, may carry a `?query`.
    pub path: String,
    /// 64 lower-case hex digits.
    pub sha256: String,
}

impl ConfigUrl {
    /// Checks one URL; the error says what is wrong (the caller names the
    /// argument).
    pub fn parse(v: &str) -> Result<ConfigUrl, &'static str> {
        if v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
        {
            return Err("a URL has no spaces, quotes or control characters");
        }
        let (tls, rest) = if let Some(r) = v.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = v.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("expected an http:// or https:// URL");
        };
        let (rest, fragment) = rest
            .split_once('#')
            .ok_or("the URL needs #sha256=<64 hex digits> (the config's sha256)")?;
        let sha256 = fragment
            .strip_prefix(HASH_PREFIX)
            .ok_or("the fragment must be sha256=<64 hex digits>")?
            .to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the fragment's sha256 must be 64 hex digits");
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        // what an HTTP request line takes as it is; anything else is
        // percent-encoded by whoever writes the URL
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b));
        if !plain {
            return Err("the path must be printable ASCII, other bytes percent-encoded");
        }
        if authority.contains('@') {
            return Err("no user or password in the URL (the command line is world-readable)");
        }
        let (host, port) = split_host_port(authority)?;
        Ok(ConfigUrl {
            tls,
            host,
            port,
            path,
            sha256,
        })
    }

    /// The port to connect to: the written one, or 443/80.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }

    /// The host to resolve or connect to: an IPv6 address without its
    /// brackets.
    pub fn connect_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The URL without the hash, for messages and the report.
    pub fn location(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.port {
            Some(p) => format!("{scheme}://{}:{p}{}", self.host, self.path),
            None => format!("{scheme}://{}{}", self.host, self.path),
        }
    }
}

/// `HOST[:PORT]`, HOST a DNS name, an IPv4 address or `[IPv6]`.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("an IPv6 host needs its ]")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err("the host in [] is not an IPv6 address");
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after ]")?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.is_empty() {
            return Err("the URL has no host");
        }
        let plain = h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !plain || h.len() > 253 {
            return Err("the host must be a DNS name, an IPv4 address or [IPv6]");
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("the port must be a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

impl fmt::Display for ConfigUrl {
    /// The URL as written on the command line, hash included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{HASH_PREFIX}{}", self.location(), self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn parses_http_and_https_with_and_without_ports() {
        let u = ConfigUrl::parse(&format!("http://10.0.2.100/config.toml#sha256={H}")).unwrap();
        assert_eq!(
            u,
            ConfigUrl {
                tls: false,
                host: "10.0.2.100".into(),
                port: None,
                path: "/config.toml".into(),
                sha256: H.into(),
            }
        );
        assert_eq!(u.port(), 80);
        assert_eq!(u.location(), "http://10.0.2.100/config.toml");
        let upper = H.to_ascii_uppercase();
        let u = ConfigUrl::parse(&format!(
            "https://Boot.Example.org:8443/n/w1.toml?v=2#sha256={upper}"
        ))
        .unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "boot.example.org");
        assert_eq!((u.port, u.port()), (Some(8443), 8443));
        assert_eq!(u.path, "/n/w1.toml?v=2");
        assert_eq!(u.sha256, H);
        let u = ConfigUrl::parse(&format!("https://[FD00::1]:99#sha256={H}")).unwrap();
        assert_eq!(
            (u.host.as_str(), u.connect_host()),
            ("[fd00::1]", "fd00::1")
        );
        assert_eq!((u.path.as_str(), u.port()), ("/", 99));
        let u = ConfigUrl::parse(&format!("https://h?x#sha256={H}")).unwrap();
        assert_eq!((u.path.as_str(), u.port()), ("/?x", 443));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let h = format!("#sha256={H}");
        for bad in [
            "http://h/config.toml".to_string(),         // no hash
            "http://h/c#sha256=".to_string(),           // empty hash
            format!("http://h/c#sha256={}", &H[..63]),  // short
            format!("http://h/c#sha256={H}0"),          // long
            format!("http://h/c#sha256={}g", &H[..63]), // not hex
            format!("http://h/c#md5={H}"),              // another algorithm
            format!("ftp://h/c{h}"),                    // another scheme
            format!("tftp://h/c{h}"),
            format!("HTTP://h/c{h}"),
            format!("h/c{h}"),
            format!("http:///c{h}"), // empty host
            format!("http://:80/c{h}"),
            format!("http://user:pw@h/c{h}"), // credentials
            format!("http://h:0/c{h}"),
            format!("http://h:65536/c{h}"),
            format!("http://h:+80/c{h}"),
            format!("http://h:/c{h}"),
            format!("http://a..b/c{h}"),
            format!("http://a_b/c{h}"),
            format!("http://[zz::1]/c{h}"),
            format!("http://[fd00::1/c{h}"),
            format!("http://[fd00::1]x/c{h}"),
            format!("http://h/a b{h}"),
            format!("http://h/a\"b{h}"),
            format!("http://h/a{{b{h}"),
            format!("http://h/\u{e9}{h}"),
        ] {
            assert!(ConfigUrl::parse(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn prints_what_it_parsed() {
        for text in [
            format!("http://10.0.2.100/config.toml#sha256={H}"),
            format!("https://boot.lab:8443/a/b?c=d#sha256={H}"),
            format!("https://[fd00::1]:443/#sha256={H}"),
        ] {
            let u = ConfigUrl::parse(&text).unwrap();
            assert_eq!(u.to_string(), text);
            assert_eq!(ConfigUrl::parse(&u.to_string()).unwrap(), u);
        }
    }
}
