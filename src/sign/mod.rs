//! What goes out: the manifest (every artifact's sha256).
