//! A lean HTTP/1.1 client for the hot path of plain-HTTP targets, on hyper's low-level
//! connection API.
//!
//! A general-purpose client (reqwest) parses the URL of every request, runs it through
//! redirect and retry layers and hands it to a connection task over a channel, which costs
//! more CPU than the exchange itself on a fast local service. Here a request takes an idle
//! keep-alive connection from a pool (or opens one), and the task that sends the request
//! also drives the connection until the body has been read: no connection task, no
//! hand-over between tasks. A closed loop of N users thus holds N connections, each used by
//! one request at a time. `https://` targets keep using reqwest.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;

use aifb_core::requests::error_class;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Io = TokioIo<TcpStream>;

/// One keep-alive connection: the sending half and the connection state machine, which
/// whoever holds it must poll.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<Io, Full<Bytes>>,
    /// The connection future has ended (closed by either side or failed).
    closed: bool,
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

/// A plain-HTTP service: its pool, the path its URL starts with, and the headers every
/// request to it carries (`Host`, the credential, the driver's own).
#[derive(Debug)]
pub struct Target {
    /// The connections.
    pub pool: Pool,
    base_path: String,
    headers: hyper::HeaderMap,
}

impl Target {
    /// The target at `url` (`http://host:port[/base]`) with a bearer `token`; `None` for
    /// any other scheme or a header that cannot be sent.
    pub fn new(url: &str, max_idle: usize, token: Option<&str>) -> Option<Target> {
        use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
        let pool = Pool::for_target(url, max_idle)?;
        let base_path = url
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
            .unwrap_or_default();
        let mut headers = hyper::HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(pool.authority()).ok()?);
        if let Some(t) = token {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).ok()?,
            );
        }
        Some(Target {
            pool,
            base_path,
            headers,
        })
    }

    /// Adds a header every request carries; `None` when it cannot be sent.
    pub fn with_header(mut self, name: &str, value: &str) -> Option<Target> {
        self.headers.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).ok()?,
            hyper::header::HeaderValue::from_str(value).ok()?,
        );
        Some(self)
    }

    /// The request target of `path` under the base path.
    pub fn uri(&self, path: &str) -> Option<hyper::Uri> {
        format!("{}{path}", self.base_path).parse().ok()
    }

    /// A request with the target's headers and the request id.
    pub fn request(
        &self,
        method: &hyper::Method,
        uri: &hyper::Uri,
        body: &Bytes,
        request_id: Option<&hyper::header::HeaderValue>,
    ) -> hyper::Request<Full<Bytes>> {
        let mut r = hyper::Request::new(Full::new(body.clone()));
        *r.method_mut() = method.clone();
        *r.uri_mut() = uri.clone();
        *r.headers_mut() = self.headers.clone();
        if let Some(id) = request_id {
            r.headers_mut().insert("x-request-id", id.clone());
        }
        r
    }
}

/// Why an exchange failed, as an `error_class`.
pub type Failure = &'static str;

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
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| error_class::CONNECT)?;
        Ok(Conn {
            sender,
            conn,
            closed: false,
            reused: false,
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    /// Sends `req` and returns the response head with the connection that carries its
    /// body. A kept-alive connection the server closed meanwhile fails before any response
    /// byte: such a request is sent once more on a new connection, as HTTP clients do.
    pub async fn send(
        &self,
        req: impl Fn() -> hyper::Request<Full<Bytes>>,
    ) -> Result<(Lease<'_>, hyper::Response<Incoming>), Failure> {
        let mut conn = match self.take_idle() {
            Some(c) => c,
            None => self.connect().await?,
        };
        match conn.request(req()).await {
            Ok(resp) => return Ok((Lease { pool: self, conn }, resp)),
            Err(e) if !conn.reused => return Err(e),
            Err(_) => {}
        }
        let mut conn = self.connect().await?;
        let resp = conn.request(req()).await?;
        Ok((Lease { pool: self, conn }, resp))
    }
}

/// Polls `fut` while driving the connection `conn`. `None` when the connection ended
/// before `fut` did.
async fn drive<F: Future>(
    conn: &mut Connection<Io, Full<Bytes>>,
    closed: &mut bool,
    fut: F,
) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if !*closed && Pin::new(&mut *conn).poll(cx).is_ready() {
            *closed = true;
        }
        match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            // What the connection delivered before ending has been seen above.
            Poll::Pending if *closed => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl Conn {
    async fn request(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let Conn {
            sender,
            conn,
            closed,
            ..
        } = self;
        let ready = drive(
            conn,
            closed,
            std::future::poll_fn(|cx| sender.poll_ready(cx)),
        )
        .await;
        if !matches!(ready, Some(Ok(()))) {
            *closed = true;
            return Err(error_class::RESET);
        }
        let sent = sender.send_request(req);
        match drive(conn, closed, sent).await {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => Err(classify(&e)),
            None => Err(error_class::RESET),
        }
    }
}

/// A connection lent to one exchange while its response body is read; back to the pool
/// when the body was read to its end.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Conn,
}

impl Lease<'_> {
    /// The next chunk of `body`: `None` at its end.
    pub async fn chunk(&mut self, body: &mut Incoming) -> Option<Result<Bytes, Failure>> {
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
            match drive(&mut self.conn.conn, &mut self.conn.closed, frame).await {
                None => return Some(Err(error_class::RESET)),
                Some(None) => return None,
                Some(Some(Err(e))) => return Some(Err(classify(&e))),
                Some(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data()
                        && !data.is_empty()
                    {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }

    /// Returns the connection to the pool (the body was read to its end).
    pub fn release(mut self) {
        if self.conn.closed {
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

/// The error class of a hyper error.
fn classify(e: &hyper::Error) -> Failure {
    if e.is_parse() || e.is_parse_status() || e.is_user() {
        error_class::PROTOCOL
    } else if e.is_timeout() {
        error_class::TIMEOUT
    } else {
        error_class::RESET
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

    async fn get(pool: &Pool) -> Result<Vec<u8>, Failure> {
        let request = || {
            let mut r = hyper::Request::new(Full::new(Bytes::new()));
            r.headers_mut().insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_str(pool.authority()).unwrap(),
            );
            r
        };
        let (mut lease, resp) = pool.send(request).await?;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = lease.chunk(&mut body).await {
            out.extend_from_slice(&chunk?);
        }
        lease.release();
        Ok(out)
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_are_not_reused() {
        for announce in [true, false] {
            let (addr, accepted) = one_shot_server(announce).await;
            let pool = Pool::for_target(&format!("http://{addr}"), 4).unwrap();
            for _ in 0..3 {
                // Unannounced, the close is seen when the body ends, or else by the next
                // request failing before any answer byte, which is then sent once more on
                // a new connection: either way every request succeeds.
                assert_eq!(get(&pool).await.unwrap(), b"ok", "announce {announce}");
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
        let pool = Pool::for_target(&format!("http://127.0.0.1:{port}"), 4).unwrap();
        assert_eq!(get(&pool).await.unwrap_err(), error_class::CONNECT);
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
