//! File system writers: squashfs root image and its dm-verity hash tree.
//! They write into `impl Write`/`Seek` sinks; they never need root, loop
//! devices or mounts.
