//! A service's log: what it writes to stdout and stderr, appended to
//! `/var/log/nodeimg/<service>.log`, rotated by size so a chatty daemon
//! cannot fill the state partition (one older file, `<service>.log.1`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where service logs live on the node.
pub const LOG_DIR: &str = "/var/log/nodeimg";
/// Size at which a log is rotated.
pub const MAX_BYTES: u64 = 4 << 20;

pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl LogFile {
    pub fn open(path: &Path, max: u64) -> io::Result<LogFile> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// Appends `data`, rotating first when it would pass the limit.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            *self = LogFile::open(&self.path, self.max)?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Copies `from` into `log` until end of file (the service exited). Runs
/// on a thread of its own; write errors drop the data, never the service.
pub fn pump(mut from: impl Read, mut log: LogFile) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = log.write(buf.get(..n).unwrap_or(&[]));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut log = LogFile::open(&path, 10).unwrap();
        log.write(b"12345678").unwrap();
        log.write(b"abcd").unwrap(); // 12 > 10: rotate first
        log.write(b"efgh").unwrap();
        log.write(b"XYZXYZ").unwrap(); // 14 > 10: rotate again
        assert_eq!(std::fs::read(&path).unwrap(), b"XYZXYZ");
        assert_eq!(
            std::fs::read(dir.path().join("svc.log.1")).unwrap(),
            b"abcdefgh"
        );
    }

    #[test]
    fn pump_copies_until_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        std::fs::write(&path, b"old\n").unwrap();
        pump(&b"new line\n"[..], LogFile::open(&path, MAX_BYTES).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"old\nnew line\n");
    }
}
