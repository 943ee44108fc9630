//! The Lambda Runtime API, as AWS documents it, served on a loopback port to the runtime
//! in the sandbox: `GET /2018-06-01/runtime/invocation/next` (long poll; the event and
//! the `Lambda-Runtime-*` headers), `POST …/invocation/{id}/response`, `…/{id}/error` and
//! `POST …/runtime/init/error`. It only relays: what an answer means (timeouts, crashes,
//! logs) is decided by [`super`], which feeds invocations in and reads [`Event`]s out.
//!
//! Served by hyper's HTTP/1.1 server rather than a hand-written parser: the runtime
//! clients use keep-alive, chunked bodies and long polls, and hyper is already in our
//! dependency tree through reqwest. One server lives exactly as long as one sandbox, so
//! a killed runtime's half-open long poll can never take the next sandbox's invocation.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lambda's limit on a synchronous response (and request) payload, in bytes.
pub const MAX_PAYLOAD: usize = 6_291_556;

const PREFIX: &str = "/2018-06-01/runtime/";

/// An invocation waiting for the runtime to ask for it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub id: String,
    pub event: Bytes,
    pub timeout: Duration,
    pub function_arn: String,
    pub trace_id: String,
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

struct Shared {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    /// The invocation the runtime holds, the only one it may answer.
    current: Mutex<Option<String>>,
    events: mpsc::UnboundedSender<Event>,
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
            current: Mutex::new(None),
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
/// also ends every open connection).
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

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string(),
    )
}

fn accepted() -> Response<Full<Bytes>> {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
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
        return api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
    };
    let method = req.method().clone();
    match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(&shared).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let id = id.to_string();
            let kind = *kind;
            answer(&shared, req, id, kind).await
        }
        (Method::POST, ["init", "error"]) => {
            let body = read_body(req.into_body(), MAX_PAYLOAD).await;
            let body = body.ok().flatten().unwrap_or_default();
            let _ = shared.events.send(Event::InitError { body });
            accepted()
        }
        _ => api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    }
}

async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    // The queue's lock is held while waiting, so two long polls cannot both take one
    // invocation; a poll whose connection dies is dropped without consuming one.
    let mut queue = shared.queue.lock().await;
    let Some(inv) = queue.recv().await else {
        return api_error(StatusCode::GONE, "Gone", "the Runtime API is shutting down");
    };
    drop(queue);
    let at = Instant::now();
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(inv.timeout)
        .as_millis();
    *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(inv.id.clone());
    let _ = shared.events.send(Event::Next {
        id: inv.id.clone(),
        at,
    });
    Response::builder()
        .status(StatusCode::OK)
        // awslambdaric's native client crashes (SIGSEGV) when this header is missing.
        .header("Content-Type", "application/json")
        .header("Lambda-Runtime-Aws-Request-Id", &inv.id)
        .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
        .header("Lambda-Runtime-Invoked-Function-Arn", &inv.function_arn)
        .header("Lambda-Runtime-Trace-Id", &inv.trace_id)
        .body(Full::new(inv.event))
        .expect("a valid response")
}

async fn answer(
    shared: &Shared,
    req: Request<Incoming>,
    id: String,
    kind: &str,
) -> Response<Full<Bytes>> {
    let holds = shared
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
        == Some(&id);
    if !holds {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        );
    }
    let body = match read_body(req.into_body(), MAX_PAYLOAD).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            shared
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let _ = shared.events.send(Event::TooLarge { id });
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."),
            );
        }
        Err(_) => {
            return api_error(StatusCode::BAD_REQUEST, "InvalidRequest", "unreadable body");
        }
    };
    shared
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let event = if kind == "response" {
        Event::Response { id, body }
    } else {
        Event::Error { id, body }
    };
    let _ = shared.events.send(event);
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
        let again = client
            .post(url(&api, "invocation/id-1/response"))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 400);
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
