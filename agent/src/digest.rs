//! sha256 as the report and the node API print it: lowercase hex, and
//! `sha256:<hex>` where the digest names its algorithm (OCI's way, and
//! what `sha256sum` prints after the prefix).

use sha2::Digest;

/// The lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_named(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
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
