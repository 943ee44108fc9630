//! The Lambda Runtime API, as AWS documents it, served on a loopback port to the runtime
//! in the sandbox: `GET /2018-06-01/runtime/invocation/next` (long poll; the event and
//! the `Lambda-Runtime-*` headers), `POST …/invocation/{id}/response`, `…/{id}/error` and
//! `POST …/runtime/init/error`. It only relays: what an answer means (timeouts, crashes,
//! logs) is decided by [`super`], which feeds invocations in and reads [`Event`]s out.
//!
//! It answers as Lambda does, byte for byte where a runtime could tell: header names in
//! their canonical case (a runtime may read them case-sensitively), and the status codes
//! and JSON bodies of the Runtime Interface Emulator's rapi (`InvalidRequestID` 400,
//! `InvalidStateTransition` 403, `RequestEntityTooLarge` 413, chi's plain 404 and 405),
//! following the same runtime state machine (Started → Ready → Running →
//! RuntimeResponseSentState → Ready …).
//!
//! Served by hyper's HTTP/1.1 server rather than a hand-written parser: the runtime
//! clients use keep-alive, chunked bodies and long polls, and hyper is already in our
//! dependency tree through reqwest. One server lives exactly as long as one sandbox, so
//! a killed runtime's half-open long poll can never take the next sandbox's invocation.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lambda's limit on a synchronous response (and request) payload, in bytes: 6 MiB + 100,
/// the Runtime Interface Emulator's `interop.MaxPayloadSize`.
pub const MAX_PAYLOAD: usize = 6_291_556;

const PREFIX: &str = "/2018-06-01/runtime/";

/// An invocation waiting for the runtime to ask for it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub id: String,
    pub event: Bytes,
    pub timeout: Duration,
    pub function_arn: String,
    /// `Lambda-Runtime-Trace-Id`; left out when empty, as Lambda does.
    pub trace_id: String,
    /// The caller's client context (JSON, already base64-decoded), for
    /// `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// `{"cognitoIdentityId": …, "cognitoIdentityPoolId": …}` for
    /// `Lambda-Runtime-Cognito-Identity`: Lambda sends it only for calls signed with
    /// Cognito credentials, which the Invoke API has no parameter for.
    pub cognito_identity: Option<String>,
}

/// What the runtime did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It took invocation `id` (its deadline counts from `at`).
    Next {
        id: String,
        at: Instant,
    },
    Response {
        id: String,
        body: Bytes,
    },
    Error {
        id: String,
        body: Bytes,
    },
    InitError {
        body: Bytes,
    },
    /// Its response for `id` was over [`MAX_PAYLOAD`].
    TooLarge {
        id: String,
    },
}

/// The runtime's state, as the emulator's `core.Runtime` tracks it; the names are the
/// ones its `InvalidStateTransition` messages use.
#[derive(Debug, Clone)]
enum State {
    /// Started, not yet asked for an invocation.
    Started,
    /// Waiting in `/next` (or between a response and its next `/next`'s answer).
    Ready,
    /// Holds this invocation and has not answered it.
    Running(Invocation),
    /// Answered invocation `id`; until its next `/next`, `id` is still the current one.
    ResponseSent(String),
    InitError,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Started => "Started",
            State::Ready => "Ready",
            State::Running(_) => "Running",
            State::ResponseSent(_) => "RuntimeResponseSentState",
            State::InitError => "InitError",
        }
    }

    /// The invocation id an answer must name (the emulator's current invoke id).
    fn current_id(&self) -> Option<&str> {
        match self {
            State::Running(inv) => Some(&inv.id),
            State::ResponseSent(id) => Some(id),
            _ => None,
        }
    }
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Runtime API server; stopped when dropped.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    invocations: mpsc::UnboundedSender<Invocation>,
    events: mpsc::UnboundedReceiver<Event>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serve on `listener`: a host loopback port, or one inside the sandbox's own
    /// network namespace.
    pub fn start(listener: tokio::net::TcpListener) -> std::io::Result<RuntimeApi> {
        let addr = listener.local_addr()?;
        let (invocations, queue) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(queue),
            state: Mutex::new(State::Started),
            events: event_tx,
        });
        let server = serve(listener, move |req| handle(shared.clone(), req));
        Ok(RuntimeApi {
            addr,
            invocations,
            events,
            server,
        })
    }

    pub fn submit(&self, invocation: Invocation) {
        // The receiver lives in the server task, which outlives this handle's use.
        let _ = self.invocations.send(invocation);
    }

    /// The next thing the runtime did (cancel-safe).
    pub async fn event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serve HTTP/1.1 on `listener` with `handler` until the returned task is aborted (which
/// also ends every open connection). Header names go out in title case
/// (`Lambda-Runtime-Aws-Request-Id`, `Content-Type`), as Go's net/http writes them for
/// Lambda and the emulator: hyper would otherwise send them lower-cased, which HTTP
/// allows but a runtime reading headers case-sensitively does not.
pub fn serve<H, F>(listener: tokio::net::TcpListener, handler: H) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // A persistent accept error (EMFILE) must not spin a core.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let service = hyper::service::service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            connections.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .title_case_headers(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
            // Reap finished connections so a long serve does not accumulate them.
            while connections.try_join_next().is_some() {}
        }
    })
}

pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(body.into()))
        .expect("a valid response")
}

/// The emulator's `model.ErrorResponse` as Go's JSON encoder writes it: fields in this
/// order, a trailing newline.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorMessage")]
    message: &'a str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(&ErrorBody {
        message,
        error_type,
    })
    .expect("strings serialise");
    body.push(b'\n');
    json_response(status, body)
}

fn invalid_request_id() -> Response<Full<Bytes>> {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "Invalid request ID",
    )
}

/// A 403 for a call the runtime's state does not allow (a second answer, say).
fn invalid_transition(from: &State, to: &str) -> Response<Full<Bytes>> {
    api_error(
        StatusCode::FORBIDDEN,
        "InvalidStateTransition",
        &format!(
            "State transition from {} to {to} failed for runtime. Error: State transition is not allowed",
            from.name()
        ),
    )
}

fn accepted() -> Response<Full<Bytes>> {
    json_response(StatusCode::ACCEPTED, "{\"status\":\"OK\"}\n")
}

/// Go's `http.NotFound`, which the emulator's router answers unknown paths with.
fn not_found() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(Bytes::from_static(b"404 page not found\n")))
        .expect("a valid response")
}

/// Read a body of at most `limit` bytes; `None` if it is larger.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Option<Bytes>, hyper::Error> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(*e),
            Err(_) => Ok(None), // LengthLimitError
        },
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return not_found();
    };
    let method = req.method().clone();
    let parts = rest.split('/').collect::<Vec<_>>();
    match (method, parts.as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(&shared).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let id = id.to_string();
            let kind = *kind;
            answer(&shared, req, id, kind).await
        }
        (Method::POST, ["init", "error"]) => init_error(&shared, req).await,
        // chi's answer to a known path with another method: 405, no body.
        (
            _,
            ["invocation", "next"] | ["invocation", _, "response" | "error"] | ["init", "error"],
        ) => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::new(Bytes::new()))
            .expect("a valid response"),
        _ => not_found(),
    }
}

async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    {
        let mut state = shared.state();
        match &*state {
            // The emulator gives a runtime that asks again before answering the same
            // invocation again (its Running state allows Ready).
            State::Running(inv) => return invocation_response(inv),
            State::InitError => return invalid_transition(&state, "Ready"),
            State::Started | State::Ready | State::ResponseSent(_) => *state = State::Ready,
        }
    }
    // The queue's lock is held while waiting, so two long polls cannot both take one
    // invocation; a poll whose connection dies is dropped without consuming one.
    let mut queue = shared.queue.lock().await;
    let Some(inv) = queue.recv().await else {
        return api_error(StatusCode::GONE, "Gone", "the Runtime API is shutting down");
    };
    drop(queue);
    let at = Instant::now();
    let response = invocation_response(&inv);
    let id = inv.id.clone();
    *shared.state() = State::Running(inv);
    let _ = shared.events.send(Event::Next { id, at });
    response
}

/// The event with its `Lambda-Runtime-*` headers, as the emulator's
/// `renderInvokeHeaders` sets them (in Go's sorted order; empty ones left out).
fn invocation_response(inv: &Invocation) -> Response<Full<Bytes>> {
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(inv.timeout)
        .as_millis()
        .to_string();
    let headers = [
        // awslambdaric's native client crashes (SIGSEGV) when this header is missing.
        ("Content-Type", "application/json"),
        ("Lambda-Runtime-Aws-Request-Id", &inv.id),
        (
            "Lambda-Runtime-Client-Context",
            inv.client_context.as_deref().unwrap_or_default(),
        ),
        (
            "Lambda-Runtime-Cognito-Identity",
            inv.cognito_identity.as_deref().unwrap_or_default(),
        ),
        ("Lambda-Runtime-Deadline-Ms", &deadline),
        ("Lambda-Runtime-Invoked-Function-Arn", &inv.function_arn),
        ("Lambda-Runtime-Trace-Id", &inv.trace_id),
    ];
    let mut response = Response::new(Full::new(inv.event.clone()));
    for (name, value) in headers {
        if value.is_empty() {
            continue;
        }
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            header_value(value),
        );
    }
    response
}

/// A header value as Go's net/http writes one: line breaks become spaces (a pretty-printed
/// client context stays one header), other control bytes are dropped.
pub fn header_value(value: &str) -> HeaderValue {
    let clean: Vec<u8> = value
        .bytes()
        .filter_map(|b| match b {
            b'\r' | b'\n' => Some(b' '),
            b'\t' => Some(b),
            0..=0x1f | 0x7f => None,
            _ => Some(b),
        })
        .collect();
    HeaderValue::from_bytes(&clean).expect("control bytes removed")
}

async fn answer(
    shared: &Shared,
    req: Request<Incoming>,
    id: String,
    kind: &str,
) -> Response<Full<Bytes>> {
    // As the emulator's router: the id is checked first, then the state transition.
    {
        let state = shared.state();
        if state.current_id() != Some(id.as_str()) {
            return invalid_request_id();
        }
        if !matches!(*state, State::Running(_)) {
            let to = if kind == "response" {
                "InvocationResponse"
            } else {
                "InvocationErrorResponse"
            };
            return invalid_transition(&state, to);
        }
    }
    let body = read_body(req.into_body(), MAX_PAYLOAD).await;
    let mut state = shared.state();
    // Another connection may have answered while this body was read.
    if !matches!(&*state, State::Running(inv) if inv.id == id) {
        return invalid_transition(&state, "InvocationResponse");
    }
    let body = match body {
        Ok(Some(body)) => body,
        Ok(None) => {
            // Lambda turns it into the function's error; the invocation is answered.
            *state = State::ResponseSent(id.clone());
            let _ = shared.events.send(Event::TooLarge { id });
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."),
            );
        }
        Err(_) => {
            // The emulator's answer to a body it could not read whole.
            return api_error(
                StatusCode::BAD_REQUEST,
                "TruncatedHTTPRequest",
                "HTTP request detected as truncated",
            );
        }
    };
    *state = State::ResponseSent(id.clone());
    let event = if kind == "response" {
        Event::Response { id, body }
    } else {
        Event::Error { id, body }
    };
    let _ = shared.events.send(event);
    accepted()
}

async fn init_error(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    {
        let state = shared.state();
        if !matches!(*state, State::Started) {
            return invalid_transition(&state, "InitError");
        }
    }
    let body = read_body(req.into_body(), MAX_PAYLOAD).await;
    let body = body.ok().flatten().unwrap_or_default();
    *shared.state() = State::InitError;
    let _ = shared.events.send(Event::InitError { body });
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(id: &str) -> Invocation {
        Invocation {
            id: id.into(),
            event: Bytes::from_static(br#"{"x":1}"#),
            timeout: Duration::from_secs(3),
            function_arn: "arn:aws:lambda:us-east-1:012345678912:function:f".into(),
            trace_id: "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
            client_context: None,
            cognito_identity: None,
        }
    }

    fn url(api: &RuntimeApi, path: &str) -> String {
        format!("http://{}{PREFIX}{path}", api.addr)
    }

    #[tokio::test]
    async fn a_runtime_gets_the_event_and_answers_it() {
        let mut api = RuntimeApi::start(
            tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap(),
        )
        .unwrap();
        let client = crate::registry::http_client();
        // The long poll waits until there is an invocation.
        let poll = tokio::spawn({
            let (client, url) = (client.clone(), url(&api, "invocation/next"));
            async move { client.get(url).send().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!poll.is_finished());
        api.submit(invocation("id-1"));
        let next = poll.await.unwrap();
        assert_eq!(next.status(), 200);
        let h = next.headers();
        assert_eq!(h["lambda-runtime-aws-request-id"], "id-1");
        assert_eq!(h["content-type"], "application/json");
        assert!(
            h["lambda-runtime-invoked-function-arn"]
                .to_str()
                .unwrap()
                .ends_with(":function:f")
        );
        assert!(
            h["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        let deadline: u128 = h["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(
            deadline > now + 2000 && deadline <= now + 3000,
            "{deadline} vs {now}"
        );
        assert_eq!(next.bytes().await.unwrap(), &br#"{"x":1}"#[..]);
        assert!(matches!(api.event().await, Some(Event::Next { id, .. }) if id == "id-1"));

        // Only the invocation the runtime holds can be answered, and only once.
        let wrong = client
            .post(url(&api, "invocation/other/response"))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let ok = client
            .post(url(&api, "invocation/id-1/response"))
            .body("42")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 202);
        assert_eq!(
            api.event().await,
            Some(Event::Response {
                id: "id-1".into(),
                body: Bytes::from_static(b"42")
            })
        );
        // A second answer: the id is still current, the state transition is not allowed.
        let again = client
            .post(url(&api, "invocation/id-1/response"))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 403);
    }

    /// One request over a plain socket (no HTTP library to normalise what the server
    /// wrote): the response head as sent, and the body.
    fn raw(addr: SocketAddr, request: String) -> (String, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&bytes)));
        let head = String::from_utf8(bytes[..split + 2].to_vec()).unwrap();
        (head, bytes[split + 4..].to_vec())
    }

    fn post(path: &str, body: &str) -> String {
        format!(
            "POST {PREFIX}{path} HTTP/1.1\r\nHost: rapi\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    async fn raw_async(addr: SocketAddr, request: String) -> (String, Vec<u8>) {
        tokio::task::spawn_blocking(move || raw(addr, request))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn headers_and_error_answers_are_lambdas_byte_for_byte() {
        let mut api = RuntimeApi::start(
            tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap(),
        )
        .unwrap();
        let addr = api.addr;
        let poll = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                format!(
                    "GET {PREFIX}invocation/next HTTP/1.1\r\nHost: rapi\r\nConnection: close\r\n\r\n"
                ),
            )
        });
        api.submit(Invocation {
            client_context: Some("{\"custom\": {\"k\": \"v\"},\n \"env\": {}}".into()),
            cognito_identity: Some(
                r#"{"cognitoIdentityId":"id","cognitoIdentityPoolId":"pool"}"#.into(),
            ),
            ..invocation("id-1")
        });
        let (head, body) = poll.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "Content-Type: application/json",
            "Lambda-Runtime-Aws-Request-Id: id-1",
            "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:012345678912:function:f",
            "Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0",
            // One header line: the line break is a space, as Go's net/http writes it.
            r#"Lambda-Runtime-Client-Context: {"custom": {"k": "v"},  "env": {}}"#,
            r#"Lambda-Runtime-Cognito-Identity: {"cognitoIdentityId":"id","cognitoIdentityPoolId":"pool"}"#,
        ] {
            assert!(
                head.contains(&format!("\r\n{line}\r\n")),
                "{line:?} in\n{head}"
            );
        }
        let deadline = head
            .split("\r\nLambda-Runtime-Deadline-Ms: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .unwrap_or_else(|| panic!("{head}"));
        assert!(deadline.len() == 13 && deadline.bytes().all(|b| b.is_ascii_digit()));
        assert!(
            !head.contains("lambda-runtime"),
            "lower-cased names:\n{head}"
        );
        assert_eq!(body, br#"{"x":1}"#);
        assert!(matches!(api.event().await, Some(Event::Next { .. })));

        let (head, body) = raw_async(addr, post("invocation/other/response", "1")).await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: application/json\r\n"),
            "{head}"
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n"
        );
        let (head, body) = raw_async(addr, post("invocation/id-1/response", "42")).await;
        assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
        assert_eq!(body, b"{\"status\":\"OK\"}\n");
        assert!(matches!(api.event().await, Some(Event::Response { .. })));
        for (path, to) in [
            ("invocation/id-1/response", "InvocationResponse"),
            ("invocation/id-1/error", "InvocationErrorResponse"),
            ("init/error", "InitError"),
        ] {
            let (head, body) = raw_async(addr, post(path, "{}")).await;
            assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
            assert_eq!(
                String::from_utf8(body).unwrap(),
                format!(
                    "{{\"errorMessage\":\"State transition from RuntimeResponseSentState to {to} failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"}}\n"
                )
            );
        }
        let (head, body) = raw_async(addr, post("nope", "")).await;
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
            "{head}"
        );
        assert_eq!(body, b"404 page not found\n");
        let (head, _) = raw_async(addr, post("invocation/next", "")).await;
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{head}"
        );

        // After the runtime's next /next, the answered id is no longer current.
        let poll = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                format!(
                    "GET {PREFIX}invocation/next HTTP/1.1\r\nHost: rapi\r\nConnection: close\r\n\r\n"
                ),
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (head, _) = raw_async(addr, post("invocation/id-1/response", "1")).await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        api.submit(invocation("id-2"));
        let (head, _) = poll.await.unwrap();
        assert!(
            head.contains("\r\nLambda-Runtime-Aws-Request-Id: id-2\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn an_init_error_is_accepted_only_before_the_first_invocation() {
        let mut api = RuntimeApi::start(
            tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap(),
        )
        .unwrap();
        let (head, body) = raw_async(api.addr, post("init/error", r#"{"errorType":"x"}"#)).await;
        assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
        assert_eq!(body, b"{\"status\":\"OK\"}\n");
        assert!(matches!(api.event().await, Some(Event::InitError { .. })));
        let (head, _) = raw_async(api.addr, post("init/error", "{}")).await;
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    }

    #[tokio::test]
    async fn errors_init_errors_and_oversized_responses_are_relayed() {
        let mut api = RuntimeApi::start(
            tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap(),
        )
        .unwrap();
        let client = crate::registry::http_client();
        let init = client
            .post(url(&api, "init/error"))
            .header(
                "Lambda-Runtime-Function-Error-Type",
                "Runtime.ImportModuleError",
            )
            .body(r#"{"errorType":"Runtime.ImportModuleError"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(init.status(), 202);
        assert!(matches!(api.event().await, Some(Event::InitError { .. })));
        // A runtime whose init failed gets no invocation: a fresh one answers them.
        let mut api = RuntimeApi::start(
            tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap(),
        )
        .unwrap();

        for (id, body) in [("e", vec![b'x'; 10]), ("big", vec![b'x'; MAX_PAYLOAD + 1])] {
            api.submit(invocation(id));
            client
                .get(url(&api, "invocation/next"))
                .send()
                .await
                .unwrap();
            assert!(matches!(api.event().await, Some(Event::Next { .. })));
            let kind = if id == "e" { "error" } else { "response" };
            // The server may answer 413 before it read the whole body, and close the
            // connection: the client then sees the status or a reset, either is fine.
            let r = client
                .post(url(&api, &format!("invocation/{id}/{kind}")))
                .body(body)
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16()).ok();
            match api.event().await {
                Some(Event::Error { id, .. }) => {
                    assert_eq!(id, "e");
                    assert_eq!(status, Some(202));
                }
                Some(Event::TooLarge { id }) => {
                    assert_eq!(id, "big");
                    assert!(matches!(status, Some(413) | None), "{status:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        let unknown = client
            .get(format!("http://{}/nope", api.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }
}
