//! A lean HTTP/1.1 client for the hot path of plain-HTTP targets.
//!
//! A load generator's client is part of what it measures: every microsecond it spends per
//! request is a microsecond the service under test does not get asked. A general-purpose
//! client (reqwest, or hyper's connection API beneath it) builds a header map and a request
//! object per request, parses the URL, and runs a dispatcher state machine around the
//! socket; on a fast local service that costs more CPU than the exchange itself. Here the
//! request line and fixed headers are serialised once per target ([`Head`]); a request
//! appends its `x-request-id`, `content-length` and body and goes out in one write on a
//! kept-alive connection from a pool. The response head is parsed with `httparse` (the
//! parser hyper uses) straight from the connection's read buffer, and the body is framed by
//! `content-length`, chunked transfer coding (chunk sizes parsed by `httparse` as well) or
//! the connection's end, each piece handed to the caller as it arrives. A closed loop of N
//! users thus holds N connections, each used by one request at a time, with no connection
//! task and no hand-over between tasks. Other targets go through reqwest.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use aifb_core::requests::error_class;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 64;
/// Room made in a connection's read buffer before each read.
const READ_ROOM: usize = 16 * 1024;

/// Why an exchange failed, as an `error_class`.
pub type Failure = &'static str;

/// One keep-alive connection and the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The request being sent, serialised.
    out: Vec<u8>,
    /// Served a request before (a failure before the response may be a stale keep-alive).
    reused: bool,
}

/// A pool of HTTP/1.1 connections to one `host:port`.
pub struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("addr", &self.addr).finish()
    }
}

/// A plain-HTTP service: its pool, the path its URL starts with, and the header lines
/// every request to it carries (`Host`, the credential, the driver's own).
#[derive(Debug)]
pub struct Target {
    /// The connections.
    pub pool: Pool,
    base_path: String,
    /// `name: value\r\n` lines.
    headers: Vec<u8>,
}

/// The request line and fixed header lines of one kind of request, serialised once.
#[derive(Debug, Clone)]
pub struct Head {
    bytes: Vec<u8>,
    /// The method always sends `content-length` (POST, PUT, PATCH), even for no body.
    sends_length: bool,
    /// The answer never has a body (HEAD).
    bodiless: bool,
}

/// One request: its head, the id it carries in `x-request-id`, its body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Request line and fixed headers.
    pub head: &'a Head,
    /// Sent as `x-request-id` when it is a valid header value.
    pub request_id: Option<&'a str>,
    /// The body (`content-length` framed).
    pub body: &'a [u8],
}

impl Request<'_> {
    /// Writes the whole request into `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        out.extend_from_slice(&self.head.bytes);
        if let Some(id) = self
            .request_id
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()))
        {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() || self.head.sends_length {
            let _ = write!(out, "content-length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }
}

impl Target {
    /// The target at `url` (`http://host:port[/base]`) with a bearer `token`; `None` for
    /// any other scheme or a header that cannot be sent.
    pub fn new(url: &str, max_idle: usize, token: Option<&str>) -> Option<Target> {
        let pool = Pool::for_target(url, max_idle)?;
        let base_path = url
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
            .unwrap_or_default();
        let host = pool.authority().to_string();
        let mut t = Target {
            pool,
            base_path,
            headers: Vec::new(),
        }
        .with_header("host", &host)?;
        if let Some(token) = token {
            t = t.with_header("authorization", &format!("Bearer {token}"))?;
        }
        Some(t)
    }

    /// Adds a header every request carries; `None` when it cannot be sent.
    pub fn with_header(mut self, name: &str, value: &str) -> Option<Target> {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = reqwest::header::HeaderValue::from_str(value).ok()?;
        self.headers.extend_from_slice(name.as_str().as_bytes());
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value.as_bytes());
        self.headers.extend_from_slice(b"\r\n");
        Some(self)
    }

    /// The head of `method` requests to `path` under the base path; `None` when the path
    /// is not a request target (it must start with `/` and be visible ASCII, non-ASCII
    /// characters percent-encoded).
    pub fn head(&self, method: &reqwest::Method, path: &str) -> Option<Head> {
        let target = format!("{}{path}", self.base_path);
        if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut bytes = Vec::with_capacity(target.len() + self.headers.len() + 32);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        bytes.extend_from_slice(&self.headers);
        Some(Head {
            bytes,
            sends_length: matches!(method.as_str(), "POST" | "PUT" | "PATCH"),
            bodiless: *method == reqwest::Method::HEAD,
        })
    }
}

impl Pool {
    /// A pool for `http://host:port` targets; `None` for any other scheme.
    pub fn for_target(target: &str, max_idle: usize) -> Option<Pool> {
        let rest = target.strip_prefix("http://")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Some(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    /// The `host:port` connected to (the `Host` header of requests).
    pub fn authority(&self) -> &str {
        &self.addr
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|_| error_class::CONNECT)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_ROOM),
            out: Vec::new(),
            reused: false,
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    /// Sends `req` and returns the response status with the connection that carries its
    /// body. A kept-alive connection the server closed meanwhile fails before any response
    /// byte: such a request is sent once more on a new connection, as HTTP clients do.
    pub async fn send(&self, req: &Request<'_>) -> Result<(Lease<'_>, u16), Failure> {
        let mut conn = match self.take_idle() {
            Some(c) => c,
            None => self.connect().await?,
        };
        match conn.exchange(req).await {
            Ok(head) => return Ok(Lease::new(self, conn, head, req.head.bodiless)),
            Err(Attempt::Stale) if conn.reused => {}
            Err(a) => return Err(a.failure()),
        }
        let mut conn = self.connect().await?;
        let head = conn.exchange(req).await.map_err(Attempt::failure)?;
        Ok(Lease::new(self, conn, head, req.head.bodiless))
    }
}

/// How an attempt to get a response head failed.
enum Attempt {
    /// The connection was gone before any response byte (worth a retry when reused).
    Stale,
    /// Anything else.
    Failed(Failure),
}

impl Attempt {
    /// The error class of an attempt that is not retried.
    fn failure(self) -> Failure {
        match self {
            Attempt::Stale => error_class::RESET,
            Attempt::Failed(e) => e,
        }
    }
}

/// A header value as text (empty when it is not UTF-8).
fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap_or("")
}

/// What a response head says about the body and the connection.
struct ResponseHead {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl Conn {
    /// Writes the request and reads the response head (skipping interim 1xx answers).
    async fn exchange(&mut self, req: &Request<'_>) -> Result<ResponseHead, Attempt> {
        req.encode(&mut self.out);
        if self.stream.write_all(&self.out).await.is_err() {
            return Err(Attempt::Stale);
        }
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                match parse_head(&self.buf) {
                    Parsed::Partial if self.buf.len() > MAX_HEAD => {
                        return Err(Attempt::Failed(error_class::PROTOCOL));
                    }
                    Parsed::Partial => {}
                    Parsed::Bad => return Err(Attempt::Failed(error_class::PROTOCOL)),
                    Parsed::Interim(n) => {
                        self.buf.advance(n);
                        continue;
                    }
                    Parsed::Head(n, head) => {
                        self.buf.advance(n);
                        return Ok(head);
                    }
                }
            }
            self.buf.reserve(READ_ROOM);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if !answered => return Err(Attempt::Stale),
                Ok(0) | Err(_) => return Err(Attempt::Failed(error_class::RESET)),
                Ok(_) => {}
            }
        }
    }
}

/// The outcome of parsing the start of a read buffer as a response head.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Not HTTP/1.x, or a head this client cannot follow.
    Bad,
    /// An interim (1xx) head of this many bytes, to be skipped.
    Interim(usize),
    /// A final head of this many bytes.
    Head(usize, ResponseHead),
}

/// Parses a response head (status line and headers) at the start of `buf`.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut r,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let Some(status) = r.code else {
        return Parsed::Bad;
    };
    match status {
        101 => return Parsed::Bad,
        100..=199 => return Parsed::Interim(n),
        _ => {}
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_coded = false;
    let mut close = false;
    let mut keep = false;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = text(h.value);
            let Ok(v) = value.trim().parse::<u64>() else {
                return Parsed::Bad;
            };
            if length.is_some_and(|l| l != v) {
                return Parsed::Bad;
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
            chunked = text(h.value)
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in text(h.value).split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(ChunkState::Size)
    } else if transfer_coded {
        Framing::UntilClose
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let keep_alive = !close
        && (r.version == Some(1) || keep)
        && !matches!(framing, Framing::UntilClose)
        && !(chunked && length.is_some());
    Parsed::Head(
        n,
        ResponseHead {
            status,
            framing,
            keep_alive,
        },
    )
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked transfer coding, at this point.
    Chunked(ChunkState),
    /// The body ends with the connection.
    UntilClose,
}

/// Where a chunked body's reader stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many data bytes to come.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last (zero-size) chunk: trailer fields up to an empty line.
    Trailers,
}

/// What the buffered bytes give next.
enum Piece {
    Data(Bytes),
    End,
    NeedMore,
    Bad,
}

/// A connection lent to one exchange while its response body is read; back to the pool
/// when the body was read to its end.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Conn,
    body: Decoder,
    keep_alive: bool,
    ended: bool,
}

/// Cuts a response body out of the bytes read from a connection.
#[derive(Debug)]
struct Decoder {
    framing: Framing,
}

impl Decoder {
    /// The next piece of the body from the bytes in `buf` (which it consumes).
    fn piece(&mut self, buf: &mut BytesMut) -> Piece {
        loop {
            match self.framing {
                Framing::Length(0) => return Piece::End,
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Piece::NeedMore;
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.framing = Framing::Length(left - n as u64);
                    return Piece::Data(buf.split_to(n).freeze());
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Piece::NeedMore;
                    }
                    return Piece::Data(buf.split().freeze());
                }
                Framing::Chunked(ChunkState::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        buf.advance(n);
                        self.framing = Framing::Chunked(ChunkState::Trailers);
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        buf.advance(n);
                        self.framing = Framing::Chunked(ChunkState::Data(size));
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Piece::Bad,
                    Ok(httparse::Status::Partial) => return Piece::NeedMore,
                    Err(_) => return Piece::Bad,
                },
                Framing::Chunked(ChunkState::Data(left)) => {
                    if buf.is_empty() {
                        return Piece::NeedMore;
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let rest = left - n as u64;
                    self.framing = Framing::Chunked(if rest == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rest)
                    });
                    return Piece::Data(buf.split_to(n).freeze());
                }
                Framing::Chunked(ChunkState::DataEnd) => {
                    if buf.len() < 2 {
                        return Piece::NeedMore;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Piece::Bad;
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(ChunkState::Size);
                }
                Framing::Chunked(ChunkState::Trailers) => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        return Piece::End;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 16];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            buf.advance(n);
                            return Piece::End;
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Piece::Bad;
                        }
                        Ok(httparse::Status::Partial) => return Piece::NeedMore,
                        Err(_) => return Piece::Bad,
                    }
                }
            }
        }
    }
}

impl<'a> Lease<'a> {
    fn new(pool: &'a Pool, conn: Conn, head: ResponseHead, bodiless: bool) -> (Lease<'a>, u16) {
        let framing = if bodiless {
            Framing::Length(0)
        } else {
            head.framing
        };
        let lease = Lease {
            pool,
            conn,
            body: Decoder { framing },
            keep_alive: head.keep_alive,
            ended: false,
        };
        (lease, head.status)
    }

    /// The next chunk of the body: `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, Failure>> {
        if self.ended {
            return None;
        }
        loop {
            match self.body.piece(&mut self.conn.buf) {
                Piece::Data(b) => return Some(Ok(b)),
                Piece::End => {
                    self.ended = true;
                    return None;
                }
                Piece::Bad => {
                    self.ended = true;
                    self.keep_alive = false;
                    return Some(Err(error_class::PROTOCOL));
                }
                Piece::NeedMore => {}
            }
            self.conn.buf.reserve(READ_ROOM);
            match self.conn.stream.read_buf(&mut self.conn.buf).await {
                Ok(0) if self.body.framing == Framing::UntilClose => {
                    self.ended = true;
                    self.keep_alive = false;
                    return None;
                }
                Ok(0) | Err(_) => {
                    self.ended = true;
                    self.keep_alive = false;
                    return Some(Err(error_class::RESET));
                }
                Ok(_) => {}
            }
        }
    }

    /// Returns the connection to the pool when the body was read to its end and the
    /// connection may carry another request.
    pub fn release(mut self) {
        if !self.ended || !self.keep_alive || !self.conn.buf.is_empty() {
            return;
        }
        self.conn.reused = true;
        if let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < self.pool.max_idle
        {
            idle.push(self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request per connection and then closes it, announcing the
    /// close or not; returns its address and the number of connections it accepted.
    async fn one_shot_server(announce: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let close = if announce {
                        "connection: close\r\n"
                    } else {
                        ""
                    };
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{close}\r\nok");
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, accepted)
    }

    async fn get(target: &Target) -> Result<Vec<u8>, Failure> {
        let head = target.head(&reqwest::Method::GET, "/").unwrap();
        let req = Request {
            head: &head,
            request_id: Some("r-1"),
            body: b"",
        };
        let (mut lease, status) = target.pool.send(&req).await?;
        assert_eq!(status, 200);
        let mut out = Vec::new();
        while let Some(chunk) = lease.chunk().await {
            out.extend_from_slice(&chunk?);
        }
        lease.release();
        Ok(out)
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_are_not_reused() {
        for announce in [true, false] {
            let (addr, accepted) = one_shot_server(announce).await;
            let target = Target::new(&format!("http://{addr}"), 4, None).unwrap();
            for _ in 0..3 {
                // Unannounced, the close is seen by the next request failing before any
                // answer byte, which is then sent once more on a new connection: either
                // way every request succeeds.
                assert_eq!(get(&target).await.unwrap(), b"ok", "announce {announce}");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "announce {announce}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = Target::new(&format!("http://127.0.0.1:{port}"), 4, None).unwrap();
        assert_eq!(get(&target).await.unwrap_err(), error_class::CONNECT);
    }

    /// A server that answers every request on a connection with `answer`, and returns
    /// the requests it read (each up to its blank line, plus `content-length` bytes).
    async fn scripted_server(
        answer: &'static [u8],
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.parse().unwrap());
                        while got.len() < end + 4 + length {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let request: Vec<u8> = got.drain(..end + 4 + length).collect();
                        let _ = tx.send(request);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn a_chunked_answer_with_trailers_is_read_whole_and_the_connection_kept() {
        let answer =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            3\r\nabc\r\n5;ext=1\r\ndefgh\r\n0\r\nx-checksum: 1\r\n\r\n";
        let (addr, mut requests) = scripted_server(answer).await;
        let target = Target::new(&format!("http://{addr}/base"), 4, Some("tok"))
            .unwrap()
            .with_header("x-extra", "1")
            .unwrap();
        let head = target.head(&reqwest::Method::POST, "/v1/x?y=1").unwrap();
        for n in 0..2 {
            let id = format!("run-{n}");
            let req = Request {
                head: &head,
                request_id: Some(&id),
                body: b"{}",
            };
            let (mut lease, status) = target.pool.send(&req).await.unwrap();
            assert_eq!(status, 200);
            let mut body = Vec::new();
            while let Some(c) = lease.chunk().await {
                body.extend_from_slice(&c.unwrap());
            }
            assert_eq!(body, b"abcdefgh");
            lease.release();
            let sent = String::from_utf8(requests.recv().await.unwrap()).unwrap();
            assert_eq!(
                sent,
                format!(
                    "POST /base/v1/x?y=1 HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer tok\r\n\
                     x-extra: 1\r\nx-request-id: {id}\r\ncontent-length: 2\r\n\r\n{{}}"
                )
            );
        }
        // Both requests went over the one kept-alive connection.
        assert_eq!(target.pool.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_reset_and_garbage_is_a_protocol_error() {
        for (answer, want) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"[..],
                error_class::RESET,
            ),
            (&b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..], error_class::PROTOCOL),
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
                error_class::PROTOCOL,
            ),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
            let target = Target::new(&format!("http://{addr}"), 4, None).unwrap();
            let got = match get_any(&target).await {
                Err(e) => e,
                Ok(_) => panic!("{answer:?} was read as a whole answer"),
            };
            assert_eq!(got, want, "{answer:?}");
            assert!(target.pool.idle.lock().unwrap().is_empty());
        }
    }

    /// Like [`get`], for any status.
    async fn get_any(target: &Target) -> Result<Vec<u8>, Failure> {
        let head = target.head(&reqwest::Method::GET, "/").unwrap();
        let req = Request {
            head: &head,
            request_id: None,
            body: b"",
        };
        let (mut lease, _) = target.pool.send(&req).await?;
        let mut out = Vec::new();
        while let Some(chunk) = lease.chunk().await {
            out.extend_from_slice(&chunk?);
        }
        lease.release();
        Ok(out)
    }

    fn head_of(raw: &[u8]) -> (usize, ResponseHead) {
        match parse_head(raw) {
            Parsed::Head(n, h) => (n, h),
            _ => panic!("{raw:?} is not a final head"),
        }
    }

    #[test]
    fn the_head_decides_framing_and_keep_alive() {
        let (n, h) = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (n, h.status, h.framing, h.keep_alive),
            (38, 200, Framing::Length(5), true)
        );
        let (_, h) = head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(ChunkState::Size));
        // Neither length nor chunked: the body runs to the close.
        let (_, h) = head_of(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let (_, h) = head_of(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let (_, h) = head_of(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!h.keep_alive);
        let (_, h) =
            head_of(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let (_, h) = head_of(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Parsed::Interim(25)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Parsed::Partial
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"<html>\r\n\r\n",
        ] {
            assert!(matches!(parse_head(bad), Parsed::Bad), "{bad:?}");
        }
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes; returns the body, or `None`
    /// when the decoder found it malformed.
    fn decode(framing: Framing, wire: &[u8], step: usize) -> Option<Vec<u8>> {
        let mut d = Decoder { framing };
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.piece(&mut buf) {
                Piece::Data(b) => body.extend_from_slice(&b),
                Piece::End => {
                    assert!(buf.is_empty() && fed == wire.len(), "stopped early");
                    return Some(body);
                }
                Piece::Bad => return None,
                Piece::NeedMore => {
                    assert!(fed < wire.len(), "wanted more than the body");
                    let to = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..to]);
                    fed = to;
                }
            }
        }
    }

    #[test]
    fn bodies_decode_the_same_however_the_bytes_arrive() {
        let chunked = b"4\r\ndata\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ntrailer: 1\r\n\r\n";
        let want = b"dataabcdefghijklmnopqrstuvwxyz".to_vec();
        for step in 1..=chunked.len() {
            let c = Framing::Chunked(ChunkState::Size);
            assert_eq!(decode(c, chunked, step), Some(want.clone()), "step {step}");
            assert_eq!(
                decode(Framing::Length(4), b"data", step.min(4)),
                Some(b"data".to_vec())
            );
        }
        let c = Framing::Chunked(ChunkState::Size);
        assert_eq!(decode(c, b"0\r\n\r\n", 1), Some(Vec::new()));
        // Chunk data not followed by CRLF, and a size that is not hex.
        assert_eq!(decode(c, b"2\r\nabXY0\r\n\r\n", 3), None);
        assert_eq!(decode(c, b"g\r\n", 3), None);
    }

    #[test]
    fn request_ids_that_are_not_header_values_are_left_out() {
        let target = Target::new("http://127.0.0.1:1", 1, None).unwrap();
        let head = target.head(&reqwest::Method::GET, "/health").unwrap();
        let mut out = Vec::new();
        for (id, want) in [
            (Some("a-1"), "x-request-id: a-1\r\n"),
            (Some("bad id"), ""),
            (Some("bad\r\nid"), ""),
            (None, ""),
        ] {
            Request {
                head: &head,
                request_id: id,
                body: b"",
            }
            .encode(&mut out);
            let want = format!("GET /health HTTP/1.1\r\nhost: 127.0.0.1:1\r\n{want}\r\n");
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
        assert!(target.head(&reqwest::Method::GET, "health").is_none());
        assert!(target.head(&reqwest::Method::GET, "/a b").is_none());
        assert!(Target::new("http://127.0.0.1:1", 1, Some("bad\ntoken")).is_none());
    }

    #[test]
    fn only_plain_http_targets_get_a_pool() {
        let p = Pool::for_target("http://127.0.0.1:8080", 4).unwrap();
        assert_eq!(p.authority(), "127.0.0.1:8080");
        assert_eq!(
            Pool::for_target("http://example.org", 4)
                .unwrap()
                .authority(),
            "example.org:80"
        );
        assert_eq!(
            Pool::for_target("http://[::1]:9000/base", 4)
                .unwrap()
                .authority(),
            "[::1]:9000"
        );
        assert!(Pool::for_target("https://example.org", 4).is_none());
        assert!(Pool::for_target("http://user:pw@example.org", 4).is_none());
    }
}
