//! Where backhand writes the image: passes bytes on to the caller's output
//! as soon as backhand can no longer change them, so the output is written
//! while blocks are still being compressed, not in one piece at the end.
//!
//! backhand 0.25 writes the image front to back with two exceptions: after
//! a file whose data duplicates an earlier file's, it seeks back to the
//! start of that data (which the next bytes overwrite); and at the end it
//! rewinds to write the superblock over the first 96 bytes. It asks for the
//! position (`stream_position`) before each file's data, and never seeks
//! back before a position it asked for, except for the superblock. So a
//! position query marks the bytes before it final, and they go out. A write
//! before the mark (the superblock) is kept aside and patched in at the
//! end, which is why `out` must seek. Should the image end before the mark,
//! `out` would keep bytes past it: [`Streamed::finish`] refuses that.

use std::io::{self, Seek, SeekFrom, Write};

/// Final bytes are passed on once at least this many wait: fewer, larger
/// writes to `out`.
const FLUSH_MIN: usize = 1 << 20;

pub(super) struct Streamed<'a, W: Write + Seek> {
    out: &'a mut W,
    /// `out`'s position when the image began: image offset 0.
    origin: u64,
    /// Image offset of `pending[0]`; every byte before it is in `out`.
    base: u64,
    /// Bytes from `base` on, not yet passed on.
    pending: Vec<u8>,
    /// Current image offset.
    pos: u64,
    /// Writes that landed before `base`, in order: applied by `finish`.
    patches: Vec<(u64, Vec<u8>)>,
    /// The error `out` returned while backhand was writing; backhand gets
    /// a copy.
    failed: Option<io::Error>,
}

impl<'a, W: Write + Seek> Streamed<'a, W> {
    /// An image starting at `out`'s current position.
    pub(super) fn new(out: &'a mut W) -> io::Result<Self> {
        let origin = out.stream_position()?;
        Ok(Streamed {
            out,
            origin,
            base: 0,
            pending: Vec::with_capacity(2 * FLUSH_MIN),
            pos: 0,
            patches: Vec::new(),
            failed: None,
        })
    }

    /// The error `out` returned while backhand was writing, if any.
    pub(super) fn take_error(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    /// Writes the first `n` pending bytes to `out`.
    fn put(&mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.pending.len());
        self.out.write_all(&self.pending[..n])?;
        self.pending.drain(..n);
        self.base += n as u64;
        Ok(())
    }

    /// Writes the rest of a `used`-byte image, zero-pads it to `size`
    /// bytes, patches in the writes that came after their bytes had gone
    /// out, and leaves `out` just past the image.
    pub(super) fn finish(mut self, used: u64, size: u64) -> io::Result<()> {
        if self.base > used || used > size {
            return Err(io::Error::other(format!(
                "image ends at {used} (padded {size}) but {} bytes were already written",
                self.base
            )));
        }
        self.pending.truncate((used - self.base) as usize);
        self.pending.resize((size - self.base) as usize, 0);
        self.put(self.pending.len())?;
        if !self.patches.is_empty() {
            for (at, bytes) in &self.patches {
                self.out.seek(SeekFrom::Start(self.origin + at))?;
                self.out.write_all(bytes)?;
            }
            self.out.seek(SeekFrom::Start(self.origin + size))?;
        }
        Ok(())
    }
}

impl<W: Write + Seek> Write for Streamed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if self.pos < self.base {
            let early = ((self.base - self.pos) as usize).min(rest.len());
            self.patches.push((self.pos, rest[..early].to_vec()));
            self.pos += early as u64;
            rest = &rest[early..];
        }
        if !rest.is_empty() {
            let at = (self.pos - self.base) as usize;
            if self.pending.len() < at {
                // Past the end, as a file allows: zeros in between.
                self.pending.resize(at, 0);
            }
            let overlap = (self.pending.len() - at).min(rest.len());
            self.pending[at..at + overlap].copy_from_slice(&rest[..overlap]);
            self.pending.extend_from_slice(&rest[overlap..]);
            self.pos += rest.len() as u64;
        }
        Ok(buf.len())
    }

    /// Nothing to do: [`Streamed::finish`] writes what is left.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Seek> Seek for Streamed<'_, W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let end = self.base + self.pending.len() as u64;
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => end.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            ));
        };
        let waiting = target.saturating_sub(self.base) as usize;
        if to == SeekFrom::Current(0) && waiting >= FLUSH_MIN {
            // A position query: what comes before it is final.
            if let Err(e) = self.put(waiting) {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                return Err(copy);
            }
        }
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn query(s: &mut Streamed<'_, Cursor<Vec<u8>>>) -> u64 {
        s.stream_position().expect("position")
    }

    #[test]
    fn bytes_go_out_at_a_position_query_and_late_writes_are_patched_in() {
        let mut out = Cursor::new(b"prefix".to_vec());
        out.set_position(6);
        let mut s = Streamed::new(&mut out).expect("sink");
        s.write_all(&[0u8; 96]).expect("superblock space");
        s.write_all(&vec![1u8; FLUSH_MIN]).expect("file 1");
        assert_eq!(query(&mut s), 96 + FLUSH_MIN as u64);
        assert_eq!(s.base, 96 + FLUSH_MIN as u64, "final bytes went out");
        // A duplicate file: written, then overwritten by what follows.
        s.write_all(&[2u8; 5000]).expect("duplicate");
        s.seek(SeekFrom::Start(96 + FLUSH_MIN as u64))
            .expect("seek back");
        s.write_all(&[3u8; 100]).expect("tables");
        let used = query(&mut s);
        s.rewind().expect("rewind");
        s.write_all(&[9u8; 96]).expect("superblock");
        s.finish(used, 4096 * 257).expect("finish");

        let pos = out.position();
        let img = out.into_inner();
        assert_eq!(pos, 6 + 4096 * 257);
        assert_eq!(&img[..6], b"prefix");
        let img = &img[6..];
        assert_eq!(img.len(), 4096 * 257, "nothing of the duplicate trails");
        assert!(img[..96].iter().all(|b| *b == 9));
        assert!(img[96..96 + FLUSH_MIN].iter().all(|b| *b == 1));
        let tables = 96 + FLUSH_MIN;
        assert!(img[tables..tables + 100].iter().all(|b| *b == 3));
        assert!(img[tables + 100..].iter().all(|b| *b == 0));
    }

    #[test]
    fn small_images_stay_in_memory_until_finish() {
        let mut out = Cursor::new(Vec::new());
        let mut s = Streamed::new(&mut out).expect("sink");
        s.write_all(&[0u8; 96]).expect("superblock space");
        s.write_all(b"data").expect("data");
        assert_eq!(query(&mut s), 100);
        assert_eq!(s.base, 0, "under FLUSH_MIN: nothing out yet");
        s.rewind().expect("rewind");
        s.write_all(&[7u8; 96]).expect("superblock");
        assert!(s.patches.is_empty());
        s.finish(100, 4096).expect("finish");
        let img = out.into_inner();
        assert_eq!(img.len(), 4096);
        assert_eq!(&img[96..100], b"data");
        assert!(img[..96].iter().all(|b| *b == 7));
    }

    #[test]
    fn an_end_before_bytes_already_out_is_refused() {
        let mut out = Cursor::new(Vec::new());
        let mut s = Streamed::new(&mut out).expect("sink");
        s.write_all(&vec![1u8; FLUSH_MIN + 10]).expect("data");
        query(&mut s);
        let err = s.finish(10, 4096).expect_err("end before the mark");
        assert!(err.to_string().contains("already written"), "{err}");
    }

    /// An output that fails every write.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Broken {
        fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn an_output_error_is_kept_for_the_caller() {
        let mut out = Broken;
        let mut s = Streamed::new(&mut out).expect("sink");
        s.write_all(&vec![1u8; FLUSH_MIN]).expect("data");
        let seen = s.stream_position().expect_err("flush fails");
        assert_eq!(seen.to_string(), "disk full");
        let kept = s.take_error().expect("kept");
        assert_eq!(kept.to_string(), "disk full");
    }
}
