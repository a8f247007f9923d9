//! sha256 as the report and the node API print it: lowercase hex, and
//! `sha256:<hex>` where the digest names its algorithm (OCI's way, and
//! what `sha256sum` prints after the prefix).

use std::io::{Read, Write};
use std::path::Path;

use contract::api::Blob;
use sha2::{Digest, Sha256};

/// The lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_named(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// A writer that hashes what passes through it to `inner`.
pub struct Hashing<W> {
    hash: Sha256,
    inner: W,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            hash: Sha256::new(),
            inner,
        }
    }

    /// The writer and the lowercase hex sha256 of what went through.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hash.finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Receives `blob.bytes` bytes of `what` (`the snapshot`, `the image
/// archive`) from `from` into `out`, hashing them; removes `out` and says
/// why when they are not what `blob` announced.
pub fn receive(from: &mut impl Read, blob: &Blob, out: &Path, what: &str) -> Result<(), String> {
    let received = (|| {
        let f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let mut sink = Hashing::new(f);
        let got = std::io::copy(&mut from.take(blob.bytes), &mut sink)
            .map_err(|e| format!("receiving {what} into {}: {e}", out.display()))?;
        if got != blob.bytes {
            return Err(format!("{what} ended {} bytes short", blob.bytes - got));
        }
        let (f, sha) = sink.finish();
        if sha != blob.sha256 {
            return Err(format!(
                "{what}'s sha256 is {sha}, not the announced {}",
                blob.sha256
            ));
        }
        f.sync_all().map_err(|e| format!("{}: {e}", out.display()))
    })();
    if received.is_err() {
        let _ = std::fs::remove_file(out);
    }
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_abc_is_the_published_one() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        assert_eq!(sha256_named(b"abc"), format!("sha256:{abc}"));
    }
}
