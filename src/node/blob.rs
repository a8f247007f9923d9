//! Requests that carry raw bytes after their JSON line (see
//! `contract::api::Blob`): an etcd snapshot sent for a restore, or one
//! received from `etcd-snapshot`. Both sides hash what they stream; a
//! received snapshot is written to a temporary file beside the target and
//! renamed only once its size and sha256 are what the node announced.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use contract::api::{Blob, Request, Response};
use sha2::{Digest, Sha256};

use super::{classify, connect, read_answer, NodeError, Trust};

/// Sends `request` (a `Restore` announcing `file`'s size and hash), then
/// `file`'s bytes; returns the node's one answer.
pub fn send(
    addr: &str,
    server_name: Option<&str>,
    trust: &Trust,
    request: &Request,
    file: &Path,
    timeout: Duration,
) -> Result<Response, NodeError> {
    let ferr = |source| NodeError::File {
        path: file.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(file).map_err(ferr)?;
    let (mut tls, host) = connect(addr, server_name, trust, timeout)?;
    let io = |source: std::io::Error| classify(addr, &host, source);
    tls.write_all(request.line().as_bytes()).map_err(io)?;
    std::io::copy(&mut f, &mut tls).map_err(io)?;
    tls.flush().map_err(io)?;
    read_answer(&mut tls, addr, &host)
}

/// The size and sha256 of `file`, as a [`Blob`] announcing it.
pub fn describe(file: &Path) -> Result<Blob, NodeError> {
    let ferr = |source| NodeError::File {
        path: file.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(file).map_err(ferr)?;
    let mut hash = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut hash).map_err(ferr)?;
    Ok(Blob {
        bytes,
        sha256: hex::encode(hash.finalize()),
    })
}

/// Sends `request` and writes the blob the node answers with to `out`
/// (atomically, checked). `Ok(Err(why))` when the node refused.
pub fn receive(
    addr: &str,
    server_name: Option<&str>,
    trust: &Trust,
    request: &Request,
    out: &Path,
    timeout: Duration,
) -> Result<Result<Blob, String>, NodeError> {
    let (mut tls, host) = connect(addr, server_name, trust, timeout)?;
    let io = |source: std::io::Error| classify(addr, &host, source);
    tls.write_all(request.line().as_bytes()).map_err(io)?;
    tls.flush().map_err(io)?;
    let mut reader = BufReader::new(tls);
    let mut line = Vec::new();
    (&mut reader)
        .take(super::MAX_ANSWER)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    let answer: Response = serde_json::from_slice(&line).map_err(|e| NodeError::Answer {
        addr: addr.to_string(),
        why: e.to_string(),
    })?;
    let blob = match answer {
        Response::Blob(b) => b,
        Response::Error(e) => return Ok(Err(e)),
        other => {
            return Err(NodeError::Answer {
                addr: addr.to_string(),
                why: format!("expected a snapshot, got {other:?}"),
            })
        }
    };
    blob.check().map_err(|why| NodeError::Blob {
        addr: addr.to_string(),
        why,
    })?;
    let tmp = out.with_file_name(format!(
        ".{}.part",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let ferr = |source| NodeError::File {
        path: tmp.clone(),
        source,
    };
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(ferr)?;
        let mut hash = Sha256::new();
        let mut left = blob.bytes;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = reader.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                return Err(NodeError::Blob {
                    addr: addr.to_string(),
                    why: format!("the stream ended {left} bytes short"),
                });
            }
            hash.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(ferr)?;
            left -= n as u64;
        }
        let got = hex::encode(hash.finalize());
        if got != blob.sha256 {
            return Err(NodeError::Blob {
                addr: addr.to_string(),
                why: format!("its sha256 is {got}, the node announced {}", blob.sha256),
            });
        }
        f.sync_all().map_err(ferr)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|source| NodeError::File {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Ok(blob))
}
