//! Output: every line goes to `/dev/console` in a single write (so kernel
//! messages interleave between lines, not inside them). Falls back to stderr
//! when there is no console node (a host run). Writing never fails loudly:
//! PID 1 has nowhere else to complain.

use std::fs::File;
use std::io::Write;

pub struct Console {
    out: Option<File>,
}

impl Console {
    pub fn open() -> Console {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOCTTY: PID 1 is a session leader and must not take the console as its
        // controlling terminal (a hangup on it would signal us)
        let out = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/console")
            .ok();
        Console { out }
    }

    pub fn line(&mut self, text: &str) {
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        let ok = match self.out.as_mut() {
            Some(f) => f.write_all(&buf).is_ok(),
            None => false,
        };
        if !ok {
            let _ = std::io::stderr().write_all(&buf);
        }
    }

    /// A progress line: `nodeagent: <text>`.
    pub fn say(&mut self, text: &str) {
        self.line(&format!("nodeagent: {text}"));
    }
}
