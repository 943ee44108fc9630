//! A fault-injecting HTTP/1.1 proxy for registry tests: it sits between ocilambda
//! and a real registry on loopback, forwards requests unchanged (the Host header
//! too, so the registry's upload Locations point back at the proxy), and, for
//! requests matching a rule, answers with an error, resets the connection in the
//! middle of the request body, or forwards the request and then loses the answer.
//! It logs every request it sees (method, path, what it did, when).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and a registry-style JSON error body) without
    /// forwarding the request.
    Status {
        code: u16,
        error_code: &'static str,
        retry_after: Option<u64>,
    },
    /// Read half of the request body, then reset the connection (RST).
    ResetMidBody,
    /// Forward the request, read the registry's answer, then reset the connection
    /// instead of passing the answer on.
    LoseResponse,
    /// Forward the request, pass on the answer's head and half of its body, then reset
    /// the connection (a download cut off in the middle).
    CutResponse,
}

impl Fault {
    pub fn status(code: u16, error_code: &'static str) -> Fault {
        Fault::Status {
            code,
            error_code,
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    /// Substring of the request target.
    pub path_contains: String,
    /// Only requests with at least this many body bytes match.
    pub min_body: u64,
    pub fault: Fault,
    /// How many matching requests get the fault (`usize::MAX`: all of them).
    pub times: usize,
}

impl Rule {
    pub fn new(method: &'static str, path_contains: &str, fault: Fault, times: usize) -> Rule {
        Rule {
            method,
            path_contains: path_contains.to_string(),
            min_body: 0,
            fault,
            times,
        }
    }

    pub fn min_body(mut self, bytes: u64) -> Rule {
        self.min_body = bytes;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub method: String,
    pub target: String,
    pub body_len: u64,
    pub fault: Option<Fault>,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Entry>,
}

pub struct FaultProxy {
    /// "127.0.0.1:PORT": use it as the registry host.
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp, up) = (state.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, up) = (st.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &st);
                });
            }
        });
        FaultProxy { addr, state, stop }
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    pub fn log(&self) -> Vec<Entry> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Head {
    method: String,
    target: String,
    raw: Vec<u8>,
    content_length: Option<u64>,
    chunked: bool,
}

fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                content_length = v.trim().parse().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Some(Head {
        method,
        target,
        raw,
        content_length,
        chunked,
    }))
}

/// Copy a message body framed by `head` from `from` to `to`; returns its length.
/// `limit` stops after that many bytes of a Content-Length body.
fn copy_body(
    head: &Head,
    from: &mut impl BufRead,
    to: &mut impl Write,
    limit: Option<u64>,
) -> io::Result<u64> {
    if head.chunked {
        let mut total = 0;
        loop {
            let mut size_line = Vec::new();
            from.read_until(b'\n', &mut size_line)?;
            to.write_all(&size_line)?;
            let text = String::from_utf8_lossy(&size_line);
            let size = u64::from_str_radix(text.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut line = Vec::new();
                    from.read_until(b'\n', &mut line)?;
                    to.write_all(&line)?;
                    if line == b"\r\n" || line.is_empty() {
                        return Ok(total);
                    }
                }
            }
            io::copy(&mut from.take(size + 2), to)?;
            total += size;
        }
    }
    let len = head.content_length.unwrap_or(0);
    let want = limit.map_or(len, |l| l.min(len));
    let copied = io::copy(&mut from.take(want), to)?;
    if copied != want {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(copied)
}

/// Close with RST rather than FIN, as a crashed peer or a middlebox does.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid, owned socket with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn serve(client: TcpStream, upstream_addr: &str, state: &Mutex<State>) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client_reader = BufReader::new(client.try_clone()?);
    let mut client_writer = client.try_clone()?;
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while let Some(head) = read_head(&mut client_reader)? {
        let body_len = head.content_length.unwrap_or(0);
        let fault = {
            let mut st = state.lock().unwrap();
            let found = st.rules.iter_mut().find(|r| {
                r.times > 0
                    && r.method == head.method
                    && head.target.contains(&r.path_contains)
                    && body_len >= r.min_body
            });
            let fault = found.map(|r| {
                r.times = r.times.saturating_sub(1);
                r.fault.clone()
            });
            st.log.push(Entry {
                method: head.method.clone(),
                target: head.target.clone(),
                body_len,
                fault: fault.clone(),
                at: Instant::now(),
            });
            fault
        };
        match fault {
            Some(Fault::Status {
                code,
                error_code,
                retry_after,
            }) => {
                copy_body(&head, &mut client_reader, &mut io::sink(), None)?;
                let body = format!(
                    r#"{{"errors":[{{"code":"{error_code}","message":"injected by the test proxy","detail":null}}]}}"#
                );
                let mut answer = format!(
                    "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reason(code),
                    body.len()
                );
                if let Some(secs) = retry_after {
                    answer.push_str(&format!("Retry-After: {secs}\r\n"));
                }
                answer.push_str("\r\n");
                answer.push_str(&body);
                client_writer.write_all(answer.as_bytes())?;
                let _ = client_writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::ResetMidBody) => {
                copy_body(
                    &head,
                    &mut client_reader,
                    &mut io::sink(),
                    Some(body_len / 2),
                )?;
                reset(client);
                return Ok(());
            }
            fault => {
                if upstream.is_none() {
                    let s = TcpStream::connect(upstream_addr)?;
                    upstream = Some((BufReader::new(s.try_clone()?), s));
                }
                let (up_reader, up_writer) = upstream.as_mut().unwrap();
                up_writer.write_all(&head.raw)?;
                copy_body(&head, &mut client_reader, up_writer, None)?;
                up_writer.flush()?;
                let response = read_head(up_reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
                let status: u16 = String::from_utf8_lossy(&response.raw)
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let bodiless =
                    head.method == "HEAD" || status == 204 || status == 304 || status < 200;
                if fault == Some(Fault::LoseResponse) {
                    if !bodiless {
                        copy_body(&response, up_reader, &mut io::sink(), None)?;
                    }
                    reset(client);
                    return Ok(());
                }
                client_writer.write_all(&response.raw)?;
                if fault == Some(Fault::CutResponse) {
                    let half = response.content_length.unwrap_or(0) / 2;
                    copy_body(&response, up_reader, &mut client_writer, Some(half))?;
                    client_writer.flush()?;
                    reset(client);
                    return Ok(());
                }
                if !bodiless {
                    copy_body(&response, up_reader, &mut client_writer, None)?;
                }
                client_writer.flush()?;
            }
        }
    }
    Ok(())
}
