//! QEMU lab (in progress).
