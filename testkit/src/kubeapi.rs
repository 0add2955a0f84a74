//! A fake Kubernetes API server for tests: there is no kube-apiserver to install here, so this
//! speaks the part of the real HTTP protocol a list/watch client uses, over plain HTTP/1.1 on an
//! address the test picks.
//!
//! - **Lists**, paged: `limit` and `continue`, the collection's `metadata.resourceVersion`.
//! - **Watches** (`watch=1`): a chunked stream of one JSON event per line (`ADDED`, `MODIFIED`,
//!   `DELETED`), every change after the `resourceVersion` asked for, then live ones; `BOOKMARK`
//!   events when asked for (`allowWatchBookmarks`); closed after `timeoutSeconds`.
//! - **`410 Gone`**: a watch from a resource version older than the last
//!   [`FakeApiServer::compact`] gets the `ERROR` event with a `Status` of code 410, as the real
//!   server sends when its watch cache no longer holds that version; the client must list again.
//! - **Dropped connections**: [`FakeApiServer::drop_watches`] cuts every open watch mid-stream;
//!   [`FakeApiServer::set_available`] answers 503 to everything while "down", and
//!   [`FakeApiServer::set_resource_available`] to one resource.
//! - `fieldSelector=metadata.name=X` (what a node watch sends) filters by name.
//!
//! Objects are JSON values (serialise `k8s-openapi` types into them); each gets its
//! `metadata.resourceVersion` from one counter, as in etcd. Resources: `services` and `nodes`
//! (`/api/v1`), `endpointslices` (`/apis/discovery.k8s.io/v1`), all namespaces.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A kind of object the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `/api/v1/services`
    Services,
    /// `/apis/discovery.k8s.io/v1/endpointslices`
    EndpointSlices,
    /// `/api/v1/nodes`
    Nodes,
}

impl Resource {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/api/v1/services" => Some(Resource::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Resource::EndpointSlices),
            "/api/v1/nodes" => Some(Resource::Nodes),
            _ => None,
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Resource::Services => ("v1", "ServiceList"),
            Resource::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Resource::Nodes => ("v1", "NodeList"),
        }
    }

    fn kind(self) -> (&'static str, &'static str) {
        match self {
            Resource::Services => ("v1", "Service"),
            Resource::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSlice"),
            Resource::Nodes => ("v1", "Node"),
        }
    }
}

/// `(namespace, name)`; nodes have namespace `""`.
type Key = (String, String);

#[derive(Debug, Default)]
struct State {
    revision: u64,
    /// Watches from a revision below this get 410.
    compacted: u64,
    objects: BTreeMap<Resource, BTreeMap<Key, Value>>,
    /// Every change: (revision, resource, event type, object).
    log: Vec<(u64, Resource, &'static str, Value)>,
    available: bool,
    /// Resources answered with 503 (their list or watch fails).
    unavailable: std::collections::BTreeSet<Resource>,
    /// Bumped by `drop_watches`: streams opened before end.
    cut: u64,
    /// Requests served, by kind: (lists, watches).
    lists: u64,
    watches: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The fake API server; see the [module docs](self). Stops on drop.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves on `127.0.0.1`, a free port.
    ///
    /// # Panics
    ///
    /// When it cannot bind.
    pub fn start() -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").expect("bind the fake API server"))
    }

    /// Serves `listener` (bind it inside a namespace to serve there).
    ///
    /// # Panics
    ///
    /// When the listener cannot be made non-blocking.
    pub fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("bound listener");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                available: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let shared = Arc::clone(&shared);
                            std::thread::spawn(move || {
                                let _ = handle(&shared, stream);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Self {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that reaches this server without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces `object` (its `metadata.namespace` and `metadata.name` are its key);
    /// returns its new resource version.
    ///
    /// # Panics
    ///
    /// When the object has no `metadata.name`.
    pub fn apply(&self, resource: Resource, object: Value) -> u64 {
        self.apply_all(resource, vec![object])
    }

    /// Creates or replaces each object, one resource version each; returns the last.
    ///
    /// # Panics
    ///
    /// As [`FakeApiServer::apply`].
    pub fn apply_all(&self, resource: Resource, objects: Vec<Value>) -> u64 {
        let mut state = self.state();
        for mut object in objects {
            let key = key_of(&object);
            state.revision += 1;
            let revision = state.revision;
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            let (api_version, kind) = resource.kind();
            object["apiVersion"] = json!(api_version);
            object["kind"] = json!(kind);
            let objects = state.objects.entry(resource).or_default();
            let event = if objects.insert(key, object.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            state.log.push((revision, resource, event, object));
        }
        let revision = state.revision;
        drop(state);
        self.shared.changed.notify_all();
        revision
    }

    /// Deletes an object; returns the new resource version (`None`: there was none).
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Option<u64> {
        let mut state = self.state();
        let key = (namespace.to_owned(), name.to_owned());
        let mut object = state.objects.entry(resource).or_default().remove(&key)?;
        state.revision += 1;
        let revision = state.revision;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        state.log.push((revision, resource, "DELETED", object));
        drop(state);
        self.shared.changed.notify_all();
        Some(revision)
    }

    /// Forgets the change history: a watch resuming from an older version gets `410 Gone`.
    pub fn compact(&self) {
        let mut state = self.state();
        state.compacted = state.revision;
        state.log.clear();
    }

    /// Cuts every open watch stream (the connection closes mid-stream).
    pub fn drop_watches(&self) {
        self.state().cut += 1;
        self.shared.changed.notify_all();
    }

    /// While unavailable, every request gets `503` and open watches are cut (an API server
    /// restarting).
    pub fn set_available(&self, available: bool) {
        let mut state = self.state();
        state.available = available;
        if !available {
            state.cut += 1;
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// While a resource is unavailable, its lists and watches get `503` (open watches of it
    /// are cut): a client that needs every kind listed must wait.
    pub fn set_resource_available(&self, resource: Resource, available: bool) {
        let mut state = self.state();
        if available {
            state.unavailable.remove(&resource);
        } else {
            state.unavailable.insert(resource);
            state.cut += 1;
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Lists and watches served so far.
    pub fn requests(&self) -> (u64, u64) {
        let state = self.state();
        (state.lists, state.watches)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.state().cut += 1;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn key_of(object: &Value) -> Key {
    let metadata = &object["metadata"];
    let name = metadata["name"]
        .as_str()
        .expect("an object needs metadata.name");
    let namespace = metadata["namespace"].as_str().unwrap_or_default();
    (namespace.to_owned(), name.to_owned())
}

/// One request: path and query.
struct Request {
    path: String,
    query: BTreeMap<String, String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // The head ends with an empty line; a GET has no body.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect();
    Ok(Some(Request {
        path: path.to_owned(),
        query,
    }))
}

/// Percent-decoding of a query component.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(stream: &mut TcpStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn handle(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One request per connection (`Connection: close`): enough for a list/watch client.
    let Some(request) = read_request(&stream)? else {
        return Ok(());
    };
    if !shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .available
    {
        return respond(
            &mut stream,
            "503 Service Unavailable",
            &status_body(503, "ServiceUnavailable", "the API server is restarting"),
        );
    }
    let Some(resource) = Resource::from_path(&request.path) else {
        return respond(
            &mut stream,
            "404 Not Found",
            &status_body(404, "NotFound", "not served by the fake"),
        );
    };
    if shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unavailable
        .contains(&resource)
    {
        return respond(
            &mut stream,
            "503 Service Unavailable",
            &status_body(503, "ServiceUnavailable", "this resource is unavailable"),
        );
    }
    let name_filter = request
        .query
        .get("fieldSelector")
        .and_then(|selector| selector.strip_prefix("metadata.name="))
        .map(str::to_owned);
    let watch = matches!(
        request.query.get("watch").map(String::as_str),
        Some("1" | "true")
    );
    if watch {
        watch_stream(shared, stream, resource, &request, name_filter.as_deref())
    } else {
        list(
            shared,
            &mut stream,
            resource,
            &request,
            name_filter.as_deref(),
        )
    }
}

fn list(
    shared: &Shared,
    stream: &mut TcpStream,
    resource: Resource,
    request: &Request,
    name_filter: Option<&str>,
) -> std::io::Result<()> {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    state.lists += 1;
    let start: usize = request
        .query
        .get("continue")
        .and_then(|token| token.parse().ok())
        .unwrap_or(0);
    let limit: usize = request
        .query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(usize::MAX);
    let all: Vec<&Value> = state
        .objects
        .get(&resource)
        .into_iter()
        .flat_map(BTreeMap::iter)
        .filter(|((_, name), _)| name_filter.is_none_or(|wanted| wanted == name))
        .map(|(_, object)| object)
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|o| (*o).clone())
        .collect();
    let next = start.saturating_add(page.len());
    let mut metadata = json!({"resourceVersion": state.revision.to_string()});
    if next < all.len() {
        metadata["continue"] = json!(next.to_string());
        metadata["remainingItemCount"] = json!(all.len() - next);
    }
    let (api_version, kind) = resource.list_kind();
    let body =
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": page});
    drop(state);
    respond(stream, "200 OK", &body)
}

fn chunk(stream: &mut TcpStream, line: &Value) -> std::io::Result<()> {
    let text = format!("{line}\n");
    write!(stream, "{:x}\r\n{text}\r\n", text.len())?;
    stream.flush()
}

fn watch_stream(
    shared: &Shared,
    mut stream: TcpStream,
    resource: Resource,
    request: &Request,
    name_filter: Option<&str>,
) -> std::io::Result<()> {
    let from: u64 = request
        .query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let bookmarks = matches!(
        request.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let deadline = request
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| Instant::now() + Duration::from_secs(s));
    let cut_at_start;
    {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.watches += 1;
        cut_at_start = state.cut;
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    stream.flush()?;
    let mut sent = from;
    let mut last_bookmark = Instant::now();
    loop {
        let (events, gone, cut, revision) = {
            let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = shared
                .changed
                .wait_timeout_while(state, Duration::from_millis(200), |state| {
                    state.cut == cut_at_start
                        && !shared.stop.load(Ordering::Relaxed)
                        && !state
                            .log
                            .iter()
                            .any(|(rv, r, _, _)| *rv > sent && *r == resource)
                })
                .map(|(state, _)| state)
                .unwrap_or_else(|e| e.into_inner().0);
            let gone = sent < state.compacted;
            let events: Vec<(u64, &'static str, Value)> = state
                .log
                .iter()
                .filter(|(rv, r, _, _)| *rv > sent && *r == resource)
                .map(|(rv, _, kind, object)| (*rv, *kind, object.clone()))
                .collect();
            (
                events,
                gone,
                state.cut != cut_at_start || shared.stop.load(Ordering::Relaxed),
                state.revision,
            )
        };
        if cut {
            // Mid-stream: no terminating chunk, the connection just goes.
            return stream.shutdown(std::net::Shutdown::Both);
        }
        if gone {
            chunk(
                &mut stream,
                &json!({"type": "ERROR", "object": status_body(410, "Expired",
                    &format!("too old resource version: {sent} ({})", revision))}),
            )?;
            write!(stream, "0\r\n\r\n")?;
            return stream.flush();
        }
        for (rv, kind, object) in events {
            sent = rv;
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if name_filter.is_some_and(|wanted| wanted != name) {
                continue;
            }
            chunk(&mut stream, &json!({"type": kind, "object": object}))?;
        }
        if bookmarks && last_bookmark.elapsed() > Duration::from_secs(1) {
            let (api_version, kind) = resource.kind();
            sent = sent.max(revision);
            chunk(
                &mut stream,
                &json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": sent.to_string()}}}),
            )?;
            last_bookmark = Instant::now();
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            write!(stream, "0\r\n\r\n")?;
            return stream.flush();
        }
    }
}
