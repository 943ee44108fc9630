//! `ocilambda invoke`: run a built image locally the way Lambda runs it, without Docker.
//! The image's layers become a cached root filesystem ([`rootfs`]), its Entrypoint and
//! Cmd run in a bubblewrap sandbox ([`sandbox`]) that talks to our Lambda Runtime API
//! ([`runtime_api`]), and this module plays the Lambda service: cold starts, deadlines,
//! START/END/REPORT lines, and the error payloads Lambda returns for timeouts and crashes.
//! `--serve` puts the Runtime Interface Emulator's endpoint in front of one warm sandbox.
//!
//! Not here: building images, the CLI's exit codes (`main` maps [`Outcome`] to them).

pub mod image;
pub mod network;
pub mod rootfs;
pub mod runtime_api;
pub mod sandbox;

use crate::cache::Cache;
use crate::image::Remote;
use crate::output;
use crate::report::{Event as Said, Reporter};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use image::RunConfig;
use network::{Network, Provider};
use runtime_api::{Event, Invocation, RuntimeApi};
use sandbox::{MemoryCgroup, Sandbox, Spec};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lambda's limit on the init phase of an on-demand function.
/// Why an image cannot be invoked as asked; the command layer words the advice.
#[derive(Debug)]
pub enum InvokeError {
    /// No IMAGE given and the project has no build output.
    NoLayout(PathBuf),
    /// An index without an image for this machine; `arch` in Lambda's names.
    NoPlatform {
        spec: String,
        arch: String,
        have: Vec<String>,
    },
    /// An image for another machine (no emulation); architectures in Lambda's names.
    WrongPlatform {
        label: String,
        os: String,
        arch: String,
        host: String,
    },
    EventTooLarge(usize),
    EventNotJson(serde_json::Error),
    /// `--client-context`: over the Invoke API's 3,583 bytes once base64-encoded.
    ClientContextTooLarge(usize),
    /// `--client-context`: not a JSON object, as the Invoke API requires.
    ClientContextNotJson(String),
    CannotListen {
        addr: String,
        error: std::io::Error,
    },
    /// A variable for the function that is not KEY[=VALUE].
    BadVariable(String),
    /// AWS_LAMBDA_RUNTIME_API, which only ocilambda sets.
    ReservedVariable,
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::NoLayout(p) => write!(f, "no OCI image layout at {}", p.display()),
            InvokeError::NoPlatform { spec, arch, have } => write!(
                f,
                "{spec} has no image for this machine's linux/{arch} (it has: {})",
                have.join(", ")
            ),
            InvokeError::WrongPlatform {
                label,
                os,
                arch,
                host,
            } => write!(
                f,
                "{label} is a {os}/{arch} image, but this machine runs linux/{host}"
            ),
            InvokeError::EventTooLarge(bytes) => write!(
                f,
                "the event is {bytes} bytes, over Lambda's limit of {} for a synchronous invocation",
                runtime_api::MAX_PAYLOAD
            ),
            InvokeError::EventNotJson(e) => write!(f, "the event is not JSON: {e}"),
            InvokeError::ClientContextTooLarge(bytes) => write!(
                f,
                "the client context is {bytes} bytes base64-encoded, over Lambda's limit of {MAX_CLIENT_CONTEXT}"
            ),
            InvokeError::ClientContextNotJson(why) => {
                write!(f, "the client context is not a JSON object: {why}")
            }
            InvokeError::CannotListen { addr, error } => {
                write!(f, "cannot listen on {addr}: {error}")
            }
            InvokeError::BadVariable(item) => {
                write!(f, "invalid variable `{item}` for the function")
            }
            InvokeError::ReservedVariable => write!(
                f,
                "AWS_LAMBDA_RUNTIME_API cannot be set: it points the runtime at ocilambda"
            ),
        }
    }
}

impl std::error::Error for InvokeError {}

const INIT_LIMIT: Duration = Duration::from_secs(10);

/// The defaults the Runtime Interface Emulator uses, so logs and ARNs look the same.
const DEFAULT_FUNCTION_NAME: &str = "test_function";
const DEFAULT_REGION: &str = "us-east-1";
const ACCOUNT_ID: &str = "012345678912";

/// What to invoke and how; shared by a single invocation and `--serve`.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    /// A layout directory or a registry reference; default: the project's build output.
    pub image: Option<String>,
    pub project_dir: PathBuf,
    /// `K=V`, or `K` to pass our own value of K.
    pub env: Vec<String>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// `--memory` was given: say so when it cannot be enforced.
    pub memory_explicit: bool,
    pub insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) to trust for registries.
    pub ca_cert: Option<PathBuf>,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    pub network: Network,
    /// Bytes of unpacked layers the cache keeps (`invoke-cache-size`).
    pub cache_size: u64,
}

/// How an invocation ended, as the Invoke API tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's response payload.
    Response(Bytes),
    /// A function error: the `{"errorMessage", "errorType", ...}` payload.
    FunctionError(Bytes),
}

impl Outcome {
    pub fn payload(&self) -> &[u8] {
        match self {
            Outcome::Response(b) | Outcome::FunctionError(b) => b,
        }
    }
}

/// The Invoke API's limit on `ClientContext`, base64-encoded.
pub const MAX_CLIENT_CONTEXT: usize = 3583;

/// One invocation as the Invoke API takes it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The payload (JSON).
    pub event: Bytes,
    /// The client context (a JSON object), passed to the runtime in
    /// `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// An X-Ray trace header from the caller; one is made up when absent.
    pub trace_id: Option<String>,
}

/// The client context for `--client-context FILE`: a JSON object whose base64 form fits
/// Lambda's limit. Kept as written (the runtime gets these bytes).
pub fn read_client_context(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the client context {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| InvokeError::ClientContextNotJson("it is not UTF-8".into()))?;
    check_client_context(&text)?;
    Ok(text)
}

fn check_client_context(text: &str) -> Result<(), InvokeError> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text).len();
    if encoded > MAX_CLIENT_CONTEXT {
        return Err(InvokeError::ClientContextTooLarge(encoded));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(InvokeError::ClientContextNotJson(
            "it is JSON, but not an object".into(),
        )),
        Err(e) => Err(InvokeError::ClientContextNotJson(e.to_string())),
    }
}

/// The event for `--event FILE|-` (default `{}`); must be JSON, as for Lambda.
pub fn read_event(source: Option<&Path>) -> Result<Bytes> {
    let bytes = match source {
        None => b"{}".to_vec(),
        Some(p) if p == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the event from stdin")?;
            buf
        }
        Some(p) => {
            std::fs::read(p).with_context(|| format!("reading the event {}", p.display()))?
        }
    };
    if bytes.len() > runtime_api::MAX_PAYLOAD {
        bail!(InvokeError::EventTooLarge(bytes.len()));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        bail!(InvokeError::EventNotJson(e));
    }
    Ok(Bytes::from(bytes))
}

/// Invoke the image once with `request`.
pub async fn invoke(
    opts: InvokeOptions,
    request: Request,
    reporter: Arc<dyn Reporter>,
) -> Result<Outcome> {
    let mut function = Function::prepare(&opts, reporter).await?;
    let outcome = function.invoke(request).await;
    function.stop().await;
    outcome
}

/// Serve the Runtime Interface Emulator's endpoint (`POST
/// /2015-03-31/functions/function/invocations`) on `addr` until Ctrl-C, one warm sandbox
/// behind it, started by the first invocation. `ready` gets the bound address.
pub async fn serve(
    opts: InvokeOptions,
    addr: &str,
    reporter: Arc<dyn Reporter>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let function = Function::prepare(&opts, reporter.clone()).await?;
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| InvokeError::CannotListen {
                addr: addr.to_string(),
                error,
            })?;
    let bound = listener.local_addr()?;
    let function = Arc::new(tokio::sync::Mutex::new(function));
    let server = runtime_api::serve(listener, {
        let function = function.clone();
        move |req| endpoint(function.clone(), req)
    });
    reporter.event(Said::Step(format!(
        "Serving POST http://{bound}/2015-03-31/functions/function/invocations (Ctrl-C to stop)"
    )));
    ready(bound);
    let stopped = tokio::signal::ctrl_c().await;
    server.abort();
    function.lock().await.stop().await;
    stopped.context("waiting for Ctrl-C")
}

/// The RIE endpoint: invocations are taken one at a time, like one Lambda execution
/// environment; the answer is the Invoke API's (200, `X-Amz-Function-Error` on errors).
async fn endpoint(
    function: Arc<tokio::sync::Mutex<Function>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<Bytes>> {
    use hyper::StatusCode;
    let request = match invocation(req).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let outcome = function.lock().await.invoke(request).await;
    match outcome {
        Ok(outcome) => {
            let error = matches!(outcome, Outcome::FunctionError(_));
            let mut response =
                runtime_api::json_response(StatusCode::OK, outcome.payload().to_vec());
            let headers = response.headers_mut();
            headers.insert(
                "X-Amz-Executed-Version",
                hyper::header::HeaderValue::from_static("$LATEST"),
            );
            if error {
                headers.insert(
                    "X-Amz-Function-Error",
                    hyper::header::HeaderValue::from_static("Unhandled"),
                );
            }
            response
        }
        Err(e) => {
            let body =
                serde_json::json!({"Type": "Service", "message": crate::error::one_line(&e)})
                    .to_string();
            function.lock().await.reporter.event(Said::RequestFailed(e));
            runtime_api::json_response(StatusCode::INTERNAL_SERVER_ERROR, body)
        }
    }
}

/// The image's root file system from the invoke cache: reused whole, or composed from its
/// layers, unpacking (after fetching) only those the cache lacks.
async fn root_of(
    image: &crate::image::Image,
    diff_ids: Vec<String>,
    store: rootfs::Store,
    remote: &Remote,
    cache: &Cache,
    reporter: &dyn Reporter,
) -> Result<rootfs::Root> {
    let short = output::short_digest(&image.manifest_digest);
    Ok(match store.root(&diff_ids)? {
        Some(root) => {
            reporter.event(Said::Step(format!("Reused unpacked image {short}")));
            root
        }
        None => {
            // Only the layers the cache lacks are fetched and read.
            let missing = store.missing(&diff_ids)?;
            let fetching = Instant::now();
            let (blobs, count, bytes) = image::layer_blobs(image, &missing, remote, cache).await?;
            if count > 0 {
                reporter.event(Said::Step(format!(
                    "Fetched {count} layer{} ({}) in {}",
                    if count == 1 { "" } else { "s" },
                    output::size(bytes),
                    output::duration(fetching.elapsed())
                )));
            }
            let started = Instant::now();
            let (ids, unpacker) = (diff_ids.clone(), store.clone());
            let (root, done) = tokio::task::spawn_blocking(move || unpacker.prepare(&ids, &blobs))
                .await
                .context("the unpacking thread panicked")?
                .with_context(|| format!("unpacking {}", image.label))?;
            // Keeping the cache to its size (and readying the next app-only
            // rebuild) is not in the function's way: it runs while the sandbox
            // starts (the runtime waits for it at exit).
            tokio::task::spawn_blocking(move || store.settle(&diff_ids));
            let unpacked = done.unpacked;
            reporter.event(Said::Step(format!(
                "Unpacked image {short} ({} of {} layers new, {} files, {}) in {}",
                unpacked.layers,
                done.layers,
                output::count(unpacked.files),
                output::size(unpacked.bytes),
                output::duration(started.elapsed())
            )));
            root
        }
    })
}

/// The invocation an RIE request asks for, or the answer refusing it (the emulator's
/// status codes and bodies: unknown path, bad client context, payload too large, not JSON).
async fn invocation(
    req: hyper::Request<hyper::body::Incoming>,
) -> std::result::Result<Request, hyper::Response<http_body_util::Full<Bytes>>> {
    use hyper::StatusCode;
    let path = req.uri().path().to_string();
    let is_invoke = req.method() == hyper::Method::POST
        && path.starts_with("/2015-03-31/functions/")
        && path.ends_with("/invocations")
        && path.matches('/').count() == 4;
    if !is_invoke {
        return Err(runtime_api::json_response(
            StatusCode::NOT_FOUND,
            r#"{"Type":"User","message":"POST /2015-03-31/functions/function/invocations"}"#,
        ));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    // As the emulator: the caller's trace header is the function's, and the client
    // context comes base64-encoded, as the Invoke API takes it.
    let trace_id = header("X-Amzn-Trace-Id");
    let client_context = match header("X-Amz-Client-Context").map(|b64| decode_client_context(&b64))
    {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(())) => {
            return Err(runtime_api::json_response(
                StatusCode::BAD_REQUEST,
                r#"{"Type":"User","message":"Client context must be a valid Base64-encoded JSON object."}"#,
            ));
        }
    };
    let event = match runtime_api::read_body(req.into_body(), runtime_api::MAX_PAYLOAD).await {
        Ok(Some(b)) if b.is_empty() => Bytes::from_static(b"{}"),
        Ok(Some(b)) => b,
        _ => {
            return Err(runtime_api::json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"Type": "User", "message": format!("Request must be smaller than {} bytes for the InvokeFunction operation", runtime_api::MAX_PAYLOAD)}).to_string(),
            ));
        }
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&event) {
        return Err(runtime_api::json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Type": "User", "message": format!("Could not parse request body into json: {e}")}).to_string(),
        ));
    }
    Ok(Request {
        event,
        client_context,
        trace_id,
    })
}

/// The `X-Amz-Client-Context` header's JSON object.
fn decode_client_context(b64: &str) -> Result<String, ()> {
    use base64::Engine;
    if b64.len() > MAX_CLIENT_CONTEXT {
        return Err(());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(drop)?;
    let text = String::from_utf8(bytes).map_err(drop)?;
    check_client_context(&text).map_err(drop)?;
    Ok(text)
}

/// One function: its image, ready to run, and the warm sandbox once there is one.
struct Function {
    bwrap: PathBuf,
    /// Held while this function may run: the cache never evicts it meanwhile.
    rootfs: rootfs::Root,
    run: RunConfig,
    /// The sandbox's environment but for AWS_LAMBDA_RUNTIME_API.
    env: Vec<(String, String)>,
    function_arn: String,
    timeout: Duration,
    memory_mb: u32,
    memory_explicit: bool,
    memory_warned: bool,
    network: Network,
    /// What connects a private network to the outside (none for [`Network::None`]).
    provider: Option<Provider>,
    warm: Option<Warm>,
    reporter: Arc<dyn Reporter>,
}

struct Warm {
    sandbox: Sandbox,
    api: RuntimeApi,
    started: Instant,
    /// Set when the runtime first asks for an invocation; reported once.
    init: Option<Duration>,
    init_reported: bool,
}

/// How the wait for an invocation ended.
enum End {
    Response(Bytes),
    Error(Bytes),
    /// The runtime reported an init error, or died: the environment is gone.
    Fatal(Bytes),
    Timeout(Duration),
    /// Our error, not the function's: bwrap could not make the sandbox, say.
    Ours(anyhow::Error),
}

impl Function {
    /// Find bwrap, open the image, check it can run here, and unpack it (or reuse the
    /// unpacked tree).
    async fn prepare(opts: &InvokeOptions, reporter: Arc<dyn Reporter>) -> Result<Function> {
        let path = std::env::var_os("PATH");
        let bwrap = sandbox::find_bwrap(path.as_deref())?;
        let provider = match opts.network {
            Network::Private => Some(Provider::find(path.as_deref())?),
            Network::Host | Network::None => None,
        };
        let user_env = parse_env(&opts.env)?;
        let cache = Cache::open(&opts.cache_dir, reporter.clone())?;
        let remote = Remote::new(&opts.insecure_registries).with_ca_cert(opts.ca_cert.clone());
        let image = image::open(opts.image.as_deref(), &opts.project_dir, &remote, &cache).await?;
        image::check_arch(&image)?;
        let run = RunConfig::of(&image.config, &image.label)?;
        let diff_ids = image::diff_ids(&image)?;
        let store = rootfs::Store::open(cache.root(), opts.cache_size)?;
        let rootfs = root_of(&image, diff_ids, store, &remote, &cache, &*reporter).await?;
        let env = environment(&run.env, opts.memory_mb, &user_env);
        let get = |k: &str, default: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map_or(default.to_string(), |(_, v)| v.clone())
        };
        let function_arn = format!(
            "arn:aws:lambda:{}:{ACCOUNT_ID}:function:{}",
            get("AWS_REGION", DEFAULT_REGION),
            get("AWS_LAMBDA_FUNCTION_NAME", DEFAULT_FUNCTION_NAME)
        );
        Ok(Function {
            bwrap,
            rootfs,
            run,
            env,
            function_arn,
            timeout: opts.timeout,
            memory_mb: opts.memory_mb,
            memory_explicit: opts.memory_explicit,
            memory_warned: false,
            network: opts.network,
            provider,
            warm: None,
            reporter,
        })
    }

    /// A cold start: a fresh Runtime API and a sandbox running the image's entrypoint.
    async fn start(&mut self) -> Result<Warm> {
        let memory = match MemoryCgroup::create(self.memory_mb) {
            Ok(cg) => Some(cg),
            Err(why) => {
                if self.memory_explicit && !self.memory_warned {
                    self.reporter.event(Said::MemoryNotEnforced {
                        memory_mb: self.memory_mb,
                        why: why.to_string(),
                    });
                }
                self.memory_warned = true;
                None
            }
        };
        // On the host's network the API listens on a host loopback port; in a private
        // one, on Lambda's own address inside it (see `network`).
        let host_listener = match self.network {
            Network::Host => Some(
                tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .context("starting the Runtime API on 127.0.0.1")?,
            ),
            Network::Private | Network::None => None,
        };
        let api_addr = match &host_listener {
            Some(l) => l.local_addr()?,
            None => SocketAddr::from(([127, 0, 0, 1], network::RUNTIME_API_PORT)),
        };
        let mut env = self.env.clone();
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), api_addr.to_string()));
        let spec = Spec {
            rootfs: self.rootfs.dir.clone(),
            argv: self.run.argv.clone(),
            env,
            workdir: self.run.workdir.clone(),
            network: self.network,
        };
        let mut sandbox = Sandbox::spawn(&self.bwrap, &spec, memory, self.reporter.clone())?;
        let listener = match host_listener {
            Some(l) => l,
            None => match sandbox.connect(self.provider.as_ref()).await {
                Ok(l) => {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)?
                }
                Err(e) => {
                    sandbox.kill().await;
                    return Err(e);
                }
            },
        };
        let api = RuntimeApi::start(listener)?;
        // The function starts now: bwrap held it back until its network was ready.
        let started = Instant::now();
        Ok(Warm {
            sandbox,
            api,
            started,
            init: None,
            init_reported: false,
        })
    }

    async fn stop(&mut self) {
        if let Some(mut warm) = self.warm.take() {
            warm.sandbox.kill().await;
        }
    }

    async fn invoke(&mut self, request: Request) -> Result<Outcome> {
        let id = request_id();
        // A runtime that quit between invocations gets a fresh environment, as on Lambda.
        if self.warm.as_mut().is_some_and(|w| w.sandbox.exited()) {
            self.stop().await;
        }
        if self.warm.is_none() {
            self.warm = Some(self.start().await?);
        }
        let warm = self.warm.as_mut().expect("started above");
        warm.api.submit(Invocation {
            id: id.clone(),
            event: request.event,
            timeout: self.timeout,
            function_arn: self.function_arn.clone(),
            trace_id: request.trace_id.unwrap_or_else(trace_id),
            client_context: request.client_context,
            cognito_identity: None,
        });
        let (end, picked) = run_to_end(warm, &id, self.timeout, &*self.reporter).await?;
        let duration = picked.map_or(Duration::ZERO, |at| at.elapsed());
        let peak = warm.sandbox.peak_memory();
        let init = (!warm.init_reported).then_some(warm.init).flatten();
        warm.init_reported |= init.is_some();
        let outcome = match end {
            End::Ours(e) => {
                self.stop().await;
                return Err(e);
            }
            End::Response(body) => Outcome::Response(body),
            End::Error(body) => Outcome::FunctionError(body),
            End::Fatal(body) => {
                // As on Lambda, the next invocation starts a fresh environment.
                self.stop().await;
                Outcome::FunctionError(body)
            }
            End::Timeout(after) => {
                self.stop().await;
                let message = format!("Task timed out after {:.2} seconds", after.as_secs_f64());
                self.reporter
                    .event(Said::Step(format!("{} {id} {message}", timestamp())));
                Outcome::FunctionError(lambda_error(
                    "Sandbox.Timedout",
                    &format!("RequestId: {id} Error: {message}"),
                ))
            }
        };
        for line in [
            format!("END RequestId: {id}"),
            report(&id, init, duration, self.memory_mb, peak),
        ] {
            match self.warm.as_mut() {
                Some(warm) => warm.sandbox.log(&line, &*self.reporter),
                None => self.reporter.event(Said::Step(line)),
            }
        }
        Ok(outcome)
    }
}

/// Wait for invocation `id`, submitted to `warm` just now, to end: its answer, an error,
/// the runtime's exit, or a timeout (Lambda's init limit until the runtime first asks for
/// work, then `timeout` from when it picked the invocation up). Also when it was picked.
async fn run_to_end(
    warm: &mut Warm,
    id: &str,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<(End, Option<Instant>)> {
    let submitted = Instant::now();
    let mut picked: Option<Instant> = None;
    let end = loop {
        let deadline = match (picked, warm.init) {
            (Some(at), _) => at + timeout,
            (None, None) => warm.started + INIT_LIMIT,
            (None, Some(_)) => submitted + timeout,
        };
        tokio::select! {
            biased;
            event = warm.api.event() => match event {
                Some(Event::Next { id: got, at }) if got == id => {
                    picked = Some(at);
                    if warm.init.is_none() {
                        warm.init = Some(at - warm.started);
                    }
                    warm.sandbox.log(&format!("START RequestId: {id} Version: $LATEST"), reporter);
                }
                Some(Event::Response { id: got, body }) if got == id => break End::Response(body),
                Some(Event::Error { id: got, body }) if got == id => break End::Error(body),
                Some(Event::TooLarge { id: got }) if got == id => break End::Error(lambda_error(
                    "Function.ResponseSizeTooLarge",
                    &format!("Response payload size exceeded maximum allowed payload size ({} bytes).", runtime_api::MAX_PAYLOAD),
                )),
                // Lambda answers the invocation with the runtime's own init error.
                Some(Event::InitError { body }) => break End::Fatal(body),
                Some(_) => {}
                None => break End::Ours(anyhow::anyhow!("the Runtime API server stopped")),
            },
            status = warm.sandbox.wait() => {
                let status = status.context("waiting for the sandbox")?;
                if warm.init.is_none() && let Some(e) = warm.sandbox.setup_error().await {
                    break End::Ours(e);
                }
                let (kind, why) = if warm.sandbox.oom_killed() {
                    ("Runtime.OutOfMemory", format!("Runtime exited with error: {}", sandbox::describe_exit(status)))
                } else if status.success() {
                    ("Runtime.ExitError", "Runtime exited without providing a reason".to_string())
                } else {
                    ("Runtime.ExitError", format!("Runtime exited with error: {}", sandbox::describe_exit(status)))
                };
                break End::Fatal(lambda_error(kind, &format!("RequestId: {id} Error: {why}")));
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                break End::Timeout(picked.map_or_else(|| warm.started.elapsed(), |at| at.elapsed()));
            }
        }
    };
    Ok((end, picked))
}

/// `{"errorType": ..., "errorMessage": ...}` as Lambda writes it.
fn lambda_error(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string())
}

/// Lambda's REPORT line.
fn report(
    id: &str,
    init: Option<Duration>,
    duration: Duration,
    memory_mb: u32,
    peak: Option<u64>,
) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut line = format!("REPORT RequestId: {id}");
    if let Some(init) = init {
        line += &format!("\tInit Duration: {:.2} ms", ms(init));
    }
    line += &format!(
        "\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory_mb} MB",
        ms(duration),
        ms(duration).ceil() as u64
    );
    if let Some(peak) = peak {
        line += &format!("\tMax Memory Used: {} MB", peak.div_ceil(1024 * 1024));
    }
    line
}

/// `K=V` pairs; a bare `K` takes our own value (and is skipped when we have none), so
/// credentials reach the function only when named.
fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in items {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (item.clone(), std::env::var(item).ok()),
        };
        if key.is_empty() || key.contains('\0') {
            bail!(InvokeError::BadVariable(item.clone()));
        }
        if key == "AWS_LAMBDA_RUNTIME_API" {
            bail!(InvokeError::ReservedVariable);
        }
        if let Some(value) = value {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// The function's environment: the image's Env, then what Lambda sets, then `--env`
/// (later entries win). Nothing of ours leaks in.
fn environment(
    image_env: &[(String, String)],
    memory_mb: u32,
    user: &[(String, String)],
) -> Vec<(String, String)> {
    let lambda = [
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            DEFAULT_FUNCTION_NAME.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
        ("AWS_REGION", DEFAULT_REGION.to_string()),
        ("AWS_DEFAULT_REGION", DEFAULT_REGION.to_string()),
    ];
    fn set(env: &mut Vec<(String, String)>, k: &str, v: String) {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in image_env {
        set(&mut env, k, v.clone());
    }
    for (k, v) in lambda {
        set(&mut env, k, v);
    }
    for (k, v) in user {
        set(&mut env, k, v.clone());
    }
    let name = env
        .iter()
        .find(|(k, _)| k == "AWS_LAMBDA_FUNCTION_NAME")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let date = time::OffsetDateTime::now_utc();
    let derived = [
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!(
                "{:04}/{:02}/{:02}/[$LATEST]{}",
                date.year(),
                u8::from(date.month()),
                date.day(),
                random_hex(16)
            ),
        ),
    ];
    for (k, v) in derived {
        if !user.iter().any(|(key, _)| key == k) {
            set(&mut env, k, v);
        }
    }
    env
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // Unique ids, not secrets: if /dev/urandom were unreadable, time and pid still
    // make collisions unlikely within one run.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf
}

fn random_hex(bytes: usize) -> String {
    hex::encode(&random_bytes::<32>()[..bytes.min(32)])
}

/// A version 4 UUID, as Lambda's request ids are.
fn request_id() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An X-Ray trace header: `Root=1-<epoch hex>-<96-bit id>;Parent=<64-bit id>;Sampled=0`.
fn trace_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        random_hex(12),
        random_hex(8)
    )
}

/// `2024-01-01T00:00:00.000Z`, as Lambda stamps its timeout line.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_layers_image_lambda_and_user_values() {
        let image = vec![
            ("PATH".to_string(), "/var/lang/bin:/usr/bin".to_string()),
            ("AWS_REGION".to_string(), "image-region".to_string()),
        ];
        let user = parse_env(&[
            "FOO=bar".into(),
            "AWS_REGION=eu-west-1".into(),
            "OCILAMBDA_SURELY_UNSET_VAR".into(),
        ])
        .unwrap();
        let env = environment(&image, 256, &user);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH"), Some("/var/lang/bin:/usr/bin"));
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("256"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_NAME"), Some("test_function"));
        assert_eq!(
            get("AWS_LAMBDA_LOG_GROUP_NAME"),
            Some("/aws/lambda/test_function")
        );
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("OCILAMBDA_SURELY_UNSET_VAR"), None);
        assert_eq!(get("HOME"), None, "nothing of ours leaks in");
        assert!(parse_env(&["AWS_LAMBDA_RUNTIME_API=x".into()]).is_err());
        assert!(parse_env(&["=x".into()]).is_err());
    }

    #[test]
    fn ids_look_like_lambdas() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, request_id());
        let t = trace_id();
        assert!(t.starts_with("Root=1-") && t.ends_with(";Sampled=0"), "{t}");
        assert_eq!(timestamp().len(), "2024-01-01T00:00:00.000Z".len());
    }

    #[test]
    fn report_line_has_init_only_on_a_cold_start() {
        let cold = report(
            "id",
            Some(Duration::from_millis(250)),
            Duration::from_micros(12_340),
            128,
            Some(50 << 20),
        );
        assert_eq!(
            cold,
            "REPORT RequestId: id\tInit Duration: 250.00 ms\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB"
        );
        assert!(!report("id", None, Duration::ZERO, 128, None).contains("Init Duration"));
    }

    #[test]
    fn events_must_be_json() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("e.json");
        std::fs::write(&good, br#"{"a": 1}"#).unwrap();
        assert_eq!(&read_event(Some(&good)).unwrap()[..], br#"{"a": 1}"#);
        assert_eq!(&read_event(None).unwrap()[..], b"{}");
        std::fs::write(&good, b"not json").unwrap();
        assert!(read_event(Some(&good)).is_err());
    }
}
