//! Deflate on every core, in order: the pieces the GCE gzip and the
//! stream-optimised VMDK both write (`formats`, `vmdk`). Each piece is
//! deflated on its own, so the output depends only on the input, never on
//! how many threads did the work.

use std::io;

use flate2::Compress;

/// Runs `f` on every item on up to `workers` threads and returns the
/// results in the items' order. Items are handed out one at a time, so a
/// slow one (data among zeros) holds back no fixed share of the others. The
/// first error stops the hand-out and is returned.
pub fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(usize, &T) -> io::Result<R> + Sync,
) -> io::Result<Vec<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let (next, f) = (&next, &f);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(done);
                        };
                        match f(i, item) {
                            Ok(r) => done.push((i, r)),
                            Err(e) => {
                                next.store(items.len(), Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| io::Error::other("a worker thread panicked"))??;
            all.extend(part);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, r)| r).collect())
    })
}

/// Deflates `data` on its own with `c` (raw deflate or zlib, at its level):
/// ended by a sync flush, or, when `last`, by the final block (and a zlib
/// stream's checksum).
pub fn deflate_piece(mut c: Compress, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    use flate2::{FlushCompress, Status};
    let mut out = Vec::with_capacity(data.len() / 4 + 4096);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        let status = c
            .compress_vec(data.get(consumed..).unwrap_or(&[]), &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() == data.len() as u64;
        match status {
            Status::StreamEnd => return Ok(out),
            // The flush is complete once all input is in and deflate left
            // room in the output buffer.
            _ if !last && all_in && out.len() < out.capacity() => return Ok(out),
            _ => {}
        }
    }
}
