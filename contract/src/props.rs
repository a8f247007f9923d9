//! What the crate's property tests share.

use proptest::prelude::ProptestConfig;

/// `cases` a property (a thousand or so: well under a second, so they run
/// in every `cargo test`), failures never written into the source tree.
pub(crate) fn bounded(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
