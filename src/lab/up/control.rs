//! The supervisor's control protocol on `RUNDIR/lab.sock`: one request a
//! connection, one JSON line each way. Only this machine's users who can
//! open the run directory reach it (a unix socket, no network).
//!
//! ```text
//! > {"op":"kill","node":"worker-1"}
//! < {"status":{...LabStatus...}}
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LabStatus, SOCKET};

/// Longest request line read.
const MAX_REQUEST: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Hard power-off: QEMU is killed, as a power cut.
    Kill {
        node: String,
    },
    /// Boot a stopped node again on its tap and address; with
    /// `blank_disk` on a new, empty state disk.
    Start {
        node: String,
        #[serde(default)]
        blank_disk: bool,
    },
    /// Power every node off and end the supervisor.
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Status(Box<LabStatus>),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no lab supervisor answers on {socket} (is the lab up? `nodeimg lab status` reads its last state)")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the lab supervisor on {socket}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the lab supervisor's answer on {socket} is not the protocol's: {message}")]
    Protocol { socket: PathBuf, message: String },
    #[error("the lab refused: {0}")]
    Refused(String),
}

/// Sends `request` to the supervisor of `run_dir`; its status after
/// acting. `timeout` bounds the whole exchange (a `down` waits for the
/// nodes to power off).
pub fn request(
    run_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<LabStatus, ControlError> {
    let socket = run_dir.join(SOCKET);
    let stream = UnixStream::connect(&socket).map_err(|source| ControlError::Connect {
        socket: socket.clone(),
        source,
    })?;
    let io = |source| ControlError::Io {
        socket: socket.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| ControlError::Protocol {
        socket: socket.clone(),
        message: e.to_string(),
    })?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    match serde_json::from_str(&answer) {
        Ok(Response::Status(s)) => Ok(*s),
        Ok(Response::Error(e)) => Err(ControlError::Refused(e)),
        Err(e) => Err(ControlError::Protocol {
            socket,
            message: format!("{e}: {answer:?}"),
        }),
    }
}

/// The server side: reads one request from `stream`.
pub fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))
}

/// The server side: writes one response line.
pub fn write_response(mut stream: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_each() {
        let r = Request::Start {
            node: "w1".into(),
            blank_disk: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"start","node":"w1","blank_disk":true}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"start","node":"w1"}"#).unwrap(),
            Request::Start {
                node: "w1".into(),
                blank_disk: false
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"kill","node":"w1","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
