//! Serving a PXE bundle over HTTP: `nodeimg pxe serve` and the lab's HTTP
//! PXE boot; and, with [`serve_folder`], any folder of the lab's (the
//! machine config a node fetches from `nodeimg.config=URL`).
//!
//! Takes a bundle folder (the build's `pxe/`, holding `boot.ipxe`) and an
//! address; answers HTTP/1.1 `GET` and `HEAD` for the regular files inside
//! that folder, with `Content-Length` and keep-alive, and logs each request
//! with tracing. It never lists a directory, never follows a path out of
//! the folder (`..`, `.` and empty components are refused with 404, a
//! symlink that leads outside with 403), never writes, and never runs a
//! request body. HTTP parsing is `tiny_http`'s (a small, blocking server);
//! each request is answered on its own thread, so one node's 60 MB initrd
//! does not stall another node's script.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::output::pxe_bundle::SCRIPT_FILE;

/// `nodeimg pxe serve`'s default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{dir} is not a PXE bundle: it has no {SCRIPT_FILE}")]
    NoScript { dir: PathBuf },
    #[error("{dir} has no {file} to serve")]
    NoFile { dir: PathBuf, file: String },
    #[error("bundle folder {dir}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A running server; dropping it stops accepting requests and joins the
/// accept loop (requests already being answered finish on their threads).
pub struct Server {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// The bound address (with the port chosen when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the accept loop ends (it ends only when the server is
    /// dropped from another thread or the listener fails).
    pub fn wait(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Starts serving the PXE bundle `dir` on `listen` in background threads.
pub fn serve(dir: &Path, listen: SocketAddr) -> Result<Server, ServeError> {
    if !dir.join(SCRIPT_FILE).is_file() {
        return Err(ServeError::NoScript {
            dir: dir.to_path_buf(),
        });
    }
    serve_folder(dir, listen, SCRIPT_FILE)
}

/// Starts serving the files of `dir` (which must hold `required`) on
/// `listen` in background threads, with the same rules as a bundle.
pub fn serve_folder(dir: &Path, listen: SocketAddr, required: &str) -> Result<Server, ServeError> {
    let root = dir.canonicalize().map_err(|source| ServeError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !root.join(required).is_file() {
        return Err(ServeError::NoFile {
            dir: dir.to_path_buf(),
            file: required.to_string(),
        });
    }
    let http = tiny_http::Server::http(listen).map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let addr = http.server_addr().to_ip().unwrap_or(listen);
    let http = Arc::new(http);
    let accept = {
        let http = Arc::clone(&http);
        let root = Arc::new(root);
        std::thread::Builder::new()
            .name("pxe-serve".into())
            .spawn(move || {
                for request in http.incoming_requests() {
                    let root = Arc::clone(&root);
                    // one thread per request: a slow initrd download must not
                    // hold up another client's script
                    let spawned = std::thread::Builder::new()
                        .name("pxe-request".into())
                        .spawn(move || answer(&root, request));
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start a request thread");
                    }
                }
            })
            .map_err(|source| ServeError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?
    };
    tracing::info!(%addr, dir = %dir.display(), "serving over HTTP");
    Ok(Server {
        http,
        addr,
        accept: Some(accept),
    })
}

/// Why a request gets no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 404: no such file in the folder, a directory, or a path that is not
    /// a plain relative one.
    NotFound,
    /// 403: a symlink that leads out of the folder.
    Forbidden,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::Forbidden => 403,
        }
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or a NUL.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// Maps a request target to a regular file inside `root` (canonical).
pub fn resolve(root: &Path, target: &str) -> Result<PathBuf, Refusal> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_prefix('/').ok_or(Refusal::NotFound)?;
    let decoded = percent_decode(path).ok_or(Refusal::NotFound)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Refusal::NotFound)?;
    let plain = !decoded.is_empty()
        && decoded
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    let rel = Path::new(&decoded);
    if !plain || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Refusal::NotFound);
    }
    let real = root
        .join(rel)
        .canonicalize()
        .map_err(|_| Refusal::NotFound)?;
    if !real.starts_with(root) {
        return Err(Refusal::Forbidden);
    }
    if !real.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(real)
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ipxe") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Answers one request and logs it.
fn answer(root: &Path, request: Request) {
    let start = Instant::now();
    let method = request.method().clone();
    let target = request.url().to_string();
    let peer = request.remote_addr().copied();
    let (status, bytes, result) = match method {
        Method::Get | Method::Head => match resolve(root, &target) {
            Ok(path) => send_file(request, &path),
            Err(refusal) => {
                let status = refusal.status();
                let r = request.respond(Response::empty(StatusCode(status)));
                (status, 0, r)
            }
        },
        _ => {
            let r = request.respond(
                Response::empty(StatusCode(405)).with_header_opt(header("Allow", "GET, HEAD")),
            );
            (405, 0, r)
        }
    };
    let ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(()) => tracing::info!(
            peer = ?peer, method = %method, path = target, status, bytes, ms,
            "pxe request"
        ),
        Err(e) => tracing::warn!(
            peer = ?peer, method = %method, path = target, status, ms, error = %e,
            "pxe request failed"
        ),
    }
}

fn send_file(request: Request, path: &Path) -> (u16, u64, io::Result<()>) {
    let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len())));
    let (file, len) = match opened {
        Ok(x) => x,
        Err(e) => {
            let r = request.respond(Response::empty(StatusCode(500)));
            return (500, 0, r.and(Err(e)));
        }
    };
    let Ok(size) = usize::try_from(len) else {
        return (500, 0, request.respond(Response::empty(StatusCode(500))));
    };
    let mut response = Response::new(StatusCode(200), Vec::new(), file, Some(size), None)
        // always Content-Length, never chunked: simpler for boot firmware
        .with_chunked_threshold(usize::MAX);
    if let Some(h) = header("Content-Type", content_type(path)) {
        response.add_header(h);
    }
    let bytes = if *request.method() == Method::Head {
        0
    } else {
        len
    };
    (200, bytes, request.respond(response))
}

/// `Response::with_header` for a header that may have failed to build.
trait WithHeaderOpt {
    fn with_header_opt(self, h: Option<Header>) -> Self;
}

impl<R: io::Read> WithHeaderOpt for Response<R> {
    fn with_header_opt(self, h: Option<Header>) -> Self {
        match h {
            Some(h) => self.with_header(h),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("pxe");
        std::fs::create_dir_all(b.join("sub")).unwrap();
        std::fs::write(b.join("boot.ipxe"), "#!ipxe\n").unwrap();
        std::fs::write(b.join("sub/x.bin"), "x").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), b.join("out")).unwrap();
        std::os::unix::fs::symlink("boot.ipxe", b.join("in")).unwrap();
        d
    }

    #[test]
    fn resolves_plain_paths_inside_the_folder_only() {
        let d = bundle();
        let root = d.path().join("pxe").canonicalize().unwrap();
        assert_eq!(
            resolve(&root, "/boot.ipxe").unwrap(),
            root.join("boot.ipxe")
        );
        assert_eq!(
            resolve(&root, "/boot.ipxe?x=1").unwrap(),
            root.join("boot.ipxe")
        );
        assert_eq!(
            resolve(&root, "/sub/x.bin").unwrap(),
            root.join("sub/x.bin")
        );
        assert_eq!(resolve(&root, "/in").unwrap(), root.join("boot.ipxe"));
        assert_eq!(
            resolve(&root, "/%62oot.ipxe").unwrap(),
            root.join("boot.ipxe")
        );
        for bad in [
            "/",
            "",
            "boot.ipxe",
            "/sub",
            "/sub/",
            "/../secret",
            "/sub/../boot.ipxe",
            "/./boot.ipxe",
            "//boot.ipxe",
            "/%2e%2e/secret",
            "/boot.ipxe%00",
            "/%zz",
            "/missing",
        ] {
            assert_eq!(resolve(&root, bad), Err(Refusal::NotFound), "{bad}");
        }
        assert_eq!(resolve(&root, "/out"), Err(Refusal::Forbidden));
    }

    #[test]
    fn refuses_a_folder_without_a_script() {
        let d = tempfile::tempdir().unwrap();
        let err = serve(d.path(), "127.0.0.1:0".parse().unwrap())
            .err()
            .unwrap();
        assert!(matches!(err, ServeError::NoScript { .. }), "{err}");
        assert!(err.to_string().contains("boot.ipxe"), "{err}");
    }
}
