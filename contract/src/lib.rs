//! What nodeimg's builder and its agent agree on. No I/O: bytes and text in,
//! typed values out, so the static PID-1 agent links it as easily as the
//! builder.

pub mod images;
pub mod services;
