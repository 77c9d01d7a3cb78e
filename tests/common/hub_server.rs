//! A real HTTP server on 127.0.0.1 that speaks the part of the Hugging Face hub protocol
//! saerun and Python's huggingface_hub use, so downloads are exercised end to end through
//! `HF_ENDPOINT`:
//!
//! - `GET /api/{models|datasets}/{repo}/revision/{rev}` → `{"sha", "siblings":[{"rfilename"}]}`
//! - `GET|HEAD /{repo}/resolve/{rev}/{file}` and `/datasets/{repo}/resolve/{rev}/{file}`
//!   with `X-Repo-Commit`, `ETag` (and `X-Linked-Etag`/`X-Linked-Size` for "LFS" files)
//!   and `Range` support (`bytes=0-0` probes, `bytes=N-` resumes); `HEAD` replies keep the
//!   full `Content-Length`.
//!
//! `{rev}` may be a branch listed for the repo or the commit itself; `/` in it arrives
//! percent-encoded (`refs%2Fconvert%2Fparquet`).
//!
//! [`HubServer::start_with_cdn`] serves "LFS" files as huggingface.co does: the resolve URL
//! answers `302` (with the `X-Linked-*` and `X-Repo-Commit` headers) to a second server, the
//! "CDN", written on raw TCP so it can misbehave on purpose ([`Fault`]): stall, reset the
//! connection or cut the body short in the middle of a transfer.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Response, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Dataset,
}

/// One commit of one repository, reachable under the commit id and `revisions`.
#[derive(Clone, Debug)]
pub struct FakeRepo {
    pub kind: Kind,
    pub id: String,
    pub commit: String,
    pub revisions: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
}

impl FakeRepo {
    pub fn new(kind: Kind, id: &str, commit: &str, files: &[(&str, &[u8])]) -> Self {
        FakeRepo {
            kind,
            id: id.to_string(),
            commit: commit.to_string(),
            revisions: vec!["main".to_string()],
            files: files
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec()))
                .collect(),
        }
    }

    /// Serves this commit under these revision names instead of `main`.
    pub fn at(mut self, revisions: &[&str]) -> Self {
        self.revisions = revisions.iter().map(|r| r.to_string()).collect();
        self
    }
}

/// "LFS" files get a sha256-like (64 hex) `X-Linked-Etag`, like weights/parquet on the hub.
pub fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".parquet")
}

/// The blob name the cache will use for a file (what the server sends as etag).
pub fn etag_of(name: &str, bytes: &[u8]) -> String {
    let hex = blake3::hash(bytes).to_hex().to_string();
    if is_lfs(name) {
        hex
    } else {
        hex[..40].to_string()
    }
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub url: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

pub struct HubServer {
    endpoint: String,
    server: Arc<Server>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<Logged>>>,
    cdn: Option<Cdn>,
}

/// How the CDN misbehaves on one `GET`. Each starts like a healthy reply (status line and
/// headers with the full `Content-Length`, then half of the requested bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// ... then sends nothing more, keeping the connection open (until the server stops).
    Stall,
    /// ... then resets the connection (TCP RST, `SO_LINGER` 0).
    Reset,
    /// ... then closes the connection normally: a truncated body.
    Truncate,
    /// Answers this HTTP status instead (no body).
    Status(u16),
}

impl HubServer {
    pub fn start(repos: Vec<FakeRepo>) -> Self {
        Self::start_slow(repos, std::time::Duration::ZERO)
    }

    /// Like `start`, but every full transfer of an "LFS" file (weights, parquet; not the
    /// `HEAD` or a `bytes=0-0` probe) takes `lfs_delay` before its reply, as a large download would.
    /// Requests are served concurrently, so other clients are answered meanwhile.
    pub fn start_slow(repos: Vec<FakeRepo>, lfs_delay: std::time::Duration) -> Self {
        Self::start_inner(repos, lfs_delay, None)
    }

    /// Like `start`, but "LFS" files are redirected to a CDN server whose `GET`s take the
    /// next fault from `faults` (served healthily once `faults` is used up).
    pub fn start_with_cdn(repos: Vec<FakeRepo>, faults: &[Fault]) -> Self {
        let cdn = Cdn::start(&repos, faults);
        Self::start_inner(repos, Duration::ZERO, Some(cdn))
    }

    /// The CDN's requests (`url` is `/<etag>`), for `start_with_cdn` servers.
    pub fn cdn_requests(&self) -> Vec<Logged> {
        self.cdn
            .as_ref()
            .map(|c| c.log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn start_inner(repos: Vec<FakeRepo>, lfs_delay: Duration, cdn: Option<Cdn>) -> Self {
        let cdn_endpoint = cdn.as_ref().map(|c| c.endpoint.clone());
        let repos = Arc::new(repos);
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let port = server.server_addr().to_ip().expect("tcp listener").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (srv, log2) = (server.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            for request in srv.incoming_requests() {
                let auth = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                let range = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Range"))
                    .map(|h| h.value.to_string());
                let method = request.method().clone();
                let url = request.url().to_string();
                log2.lock().unwrap().push(Logged {
                    method: method.to_string(),
                    url: url.clone(),
                    authorization: auth,
                    range: range.clone(),
                });
                let repos = repos.clone();
                let cdn = cdn_endpoint.clone();
                std::thread::spawn(move || {
                    let response = route(&repos, &url, range.as_deref(), cdn.as_deref());
                    let file = url.rsplit('/').next().unwrap_or("");
                    let transfer = method == tiny_http::Method::Get
                        && url.contains("/resolve/")
                        && is_lfs(file)
                        && range.as_deref() != Some("bytes=0-0");
                    if transfer && !lfs_delay.is_zero() {
                        std::thread::sleep(lfs_delay);
                    }
                    let _ = request.respond(response);
                });
            }
        });
        HubServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            server,
            handle: Some(handle),
            log,
            cdn,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Stops accepting requests and joins the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(cdn) = self.cdn.as_mut() {
            cdn.stop();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An endpoint where nothing listens (connection refused), for "hub unreachable" tests.
pub fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

type Resp = Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn status(code: u16, msg: &str) -> Resp {
    Response::from_string(format!("{{\"error\":\"{msg}\"}}"))
        .with_status_code(code)
        .with_header(header("Content-Type", "application/json"))
}

fn route(repos: &[FakeRepo], url: &str, range: Option<&str>, cdn: Option<&str>) -> Resp {
    let path = url.split('?').next().unwrap_or(url);
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return api(repos, Kind::Model, rest);
    }
    if let Some(rest) = path.strip_prefix("/api/datasets/") {
        return api(repos, Kind::Dataset, rest);
    }
    let (kind, rest) = match path.strip_prefix("/datasets/") {
        Some(rest) => (Kind::Dataset, rest),
        None => (Kind::Model, path.trim_start_matches('/')),
    };
    resolve(repos, kind, rest, range, cdn)
}

fn find<'a>(repos: &'a [FakeRepo], kind: Kind, id: &str, rev: &str) -> Option<&'a FakeRepo> {
    repos.iter().find(|r| {
        r.kind == kind && r.id == id && (r.commit == rev || r.revisions.iter().any(|x| x == rev))
    })
}

fn api(repos: &[FakeRepo], kind: Kind, rest: &str) -> Resp {
    let Some((id, rev)) = rest.split_once("/revision/") else {
        return status(404, "Repository not found");
    };
    let Some(repo) = find(repos, kind, id, &decode(rev)) else {
        return status(404, "Repository not found");
    };
    let siblings: Vec<serde_json::Value> = repo
        .files
        .iter()
        .map(|(n, _)| serde_json::json!({ "rfilename": n }))
        .collect();
    let body = serde_json::json!({ "id": repo.id, "sha": repo.commit, "siblings": siblings });
    Response::from_string(body.to_string()).with_header(header("Content-Type", "application/json"))
}

fn resolve(
    repos: &[FakeRepo],
    kind: Kind,
    rest: &str,
    range: Option<&str>,
    cdn: Option<&str>,
) -> Resp {
    let Some((id, tail)) = rest.split_once("/resolve/") else {
        return status(404, "Not found");
    };
    let Some((rev, file)) = tail.split_once('/') else {
        return status(404, "Not found");
    };
    let Some(repo) = find(repos, kind, id, &decode(rev)) else {
        return status(404, "Repository not found");
    };
    let file = decode(file);
    let Some((name, bytes)) = repo.files.iter().find(|(n, _)| *n == file) else {
        return status(404, "Entry not found");
    };
    let size = bytes.len();
    let etag = etag_of(name, bytes);
    if let (Some(cdn), true) = (cdn, is_lfs(name)) {
        // As huggingface.co: a redirect to the CDN that carries the file's metadata.
        return Response::from_data(Vec::new())
            .with_status_code(302)
            .with_header(header("Location", &format!("{cdn}/{etag}")))
            .with_header(header("X-Repo-Commit", &repo.commit))
            .with_header(header("ETag", &format!("\"{}\"", &etag[..40])))
            .with_header(header("X-Linked-Etag", &format!("\"{etag}\"")))
            .with_header(header("X-Linked-Size", &size.to_string()));
    }
    let span = parse_range(range, size);
    let (code, body) = match span {
        Some((a, b)) => (206, bytes[a..=b].to_vec()),
        None => (200, bytes.clone()),
    };
    // tiny_http omits the body of HEAD replies itself but keeps Content-Length, as Python expects.
    let mut resp = Response::from_data(body)
        .with_status_code(code)
        .with_header(header("X-Repo-Commit", &repo.commit))
        .with_header(header("Accept-Ranges", "bytes"))
        .with_header(header("Content-Type", "application/octet-stream"));
    if is_lfs(name) {
        // As on the hub: the git-pointer etag in ETag, the content hash in X-Linked-Etag.
        resp = resp
            .with_header(header("ETag", &format!("\"{}\"", &etag[..40])))
            .with_header(header("X-Linked-Etag", &format!("\"{etag}\"")))
            .with_header(header("X-Linked-Size", &size.to_string()));
    } else {
        resp = resp.with_header(header("ETag", &format!("\"{etag}\"")));
    }
    if let Some((a, b)) = span {
        resp = resp.with_header(header("Content-Range", &format!("bytes {a}-{b}/{size}")));
    }
    resp
}

/// `bytes=a-b` or `bytes=a-` within `size`; anything unparsable means the whole file.
fn parse_range(range: Option<&str>, size: usize) -> Option<(usize, usize)> {
    range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let a: usize = a.trim().parse().ok()?;
            let b: usize = if b.trim().is_empty() {
                size.saturating_sub(1)
            } else {
                b.trim().parse().ok()?
            };
            Some((a, b.min(size.saturating_sub(1))))
        })
        .filter(|(a, b)| a <= b && *a < size)
}

/// The raw-TCP "CDN": `GET /<etag>` serves that blob (with ranges), one connection per
/// request (`Connection: close`), misbehaving as the queued faults say.
struct Cdn {
    endpoint: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Cdn {
    fn start(repos: &[FakeRepo], faults: &[Fault]) -> Self {
        let blobs: HashMap<String, Vec<u8>> = repos
            .iter()
            .flat_map(|r| r.files.iter())
            .filter(|(n, _)| is_lfs(n))
            .map(|(n, b)| (etag_of(n, b), b.clone()))
            .collect();
        let blobs = Arc::new(blobs);
        let faults = Arc::new(Mutex::new(faults.iter().copied().collect::<VecDeque<_>>()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (blobs, faults, stop, log) =
                    (blobs.clone(), faults.clone(), stop2.clone(), log2.clone());
                std::thread::spawn(move || serve_cdn(stream, &blobs, &faults, &stop, &log));
            }
        });
        Cdn {
            endpoint: format!("http://{addr}"),
            stop,
            handle: Some(handle),
            log,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve_cdn(
    mut stream: TcpStream,
    blobs: &HashMap<String, Vec<u8>>,
    faults: &Mutex<VecDeque<Fault>>,
    stop: &AtomicBool,
    log: &Mutex<Vec<Logged>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return; // the wake-up connection of `Cdn::stop`
    }
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let url = parts.next().unwrap_or("").to_string();
    log.lock().unwrap().push(Logged {
        method: method.clone(),
        url: url.clone(),
        authorization,
        range: range.clone(),
    });
    let Some(bytes) = blobs.get(url.trim_start_matches('/')) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let fault = if method == "GET" {
        faults.lock().unwrap().pop_front()
    } else {
        None
    };
    if let Some(Fault::Status(code)) = fault {
        let _ = write!(
            stream,
            "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let size = bytes.len();
    let span = parse_range(range.as_deref(), size);
    let (code, body) = match span {
        Some((a, b)) => ("206 Partial Content", &bytes[a..=b]),
        None => ("200 OK", &bytes[..]),
    };
    let mut head = format!(
        "HTTP/1.1 {code}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Accept-Ranges: bytes\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((a, b)) = span {
        head.push_str(&format!("Content-Range: bytes {a}-{b}/{size}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || method != "GET" {
        return;
    }
    let Some(fault) = fault else {
        let _ = stream.write_all(body);
        let _ = stream.flush();
        return;
    };
    let _ = stream.write_all(&body[..body.len() / 2]);
    let _ = stream.flush();
    match fault {
        Fault::Stall => {
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Fault::Reset => {
            // Let the half body reach the client first, so the reset comes mid-transfer.
            std::thread::sleep(Duration::from_millis(200));
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(reader);
            drop(stream);
        }
        Fault::Truncate => {
            let _ = stream.shutdown(Shutdown::Both);
        }
        Fault::Status(_) => unreachable!("answered above"),
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
