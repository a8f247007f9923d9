//! Small shared helpers: hashing, atomic writes.
