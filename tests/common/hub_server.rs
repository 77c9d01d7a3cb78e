//! A real HTTP server on 127.0.0.1 that speaks the part of the Hugging Face hub protocol
//! saerun and hf-hub use, so downloads are exercised end to end through `HF_ENDPOINT`:
//!
//! - `GET /api/{models|datasets}/{repo}/revision/{rev}` → `{"sha", "siblings":[{"rfilename"}]}`
//! - `GET|HEAD /{repo}/resolve/{rev}/{file}` and `/datasets/{repo}/resolve/{rev}/{file}`
//!   with `X-Repo-Commit`, `ETag` (and `X-Linked-Etag`/`X-Linked-Size` for "LFS" files)
//!   and `Range` support (hf-hub probes with `bytes=0-0` and resumes with `bytes=N-`).
//!
//! `{rev}` may be a branch listed for the repo or the commit itself; `/` in it arrives
//! percent-encoded (`refs%2Fconvert%2Fparquet`).
#![allow(dead_code)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
}

impl HubServer {
    pub fn start(repos: Vec<FakeRepo>) -> Self {
        Self::start_slow(repos, std::time::Duration::ZERO)
    }

    /// Like `start`, but every full transfer of an "LFS" file (weights, parquet; not the
    /// `bytes=0-0` probe) takes `lfs_delay` before its reply, as a large download would.
    /// Requests are served concurrently, so other clients are answered meanwhile.
    pub fn start_slow(repos: Vec<FakeRepo>, lfs_delay: std::time::Duration) -> Self {
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
                std::thread::spawn(move || {
                    let response = route(&repos, &url, range.as_deref());
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

fn route(repos: &[FakeRepo], url: &str, range: Option<&str>) -> Resp {
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
    resolve(repos, kind, rest, range)
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

fn resolve(repos: &[FakeRepo], kind: Kind, rest: &str, range: Option<&str>) -> Resp {
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
    // `bytes=a-b` or `bytes=a-`; anything unparsable is served whole.
    let span = range
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
        .filter(|(a, b)| a <= b && *a < size);
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
