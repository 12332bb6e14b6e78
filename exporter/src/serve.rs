//! Serving `/metrics`.
//!
//! - The scrape deadline comes from Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`
//!   (minus a margin for the answer to travel), else `--web.scrape-timeout`.
//! - Scrapes that arrive while a collection runs share it instead of starting another.
//! - Beyond `--web.max-requests` scrapes in flight, the answer is 503 at once.
//! - With `--collection.interval`, collection runs in the background and scrapes get the
//!   latest result.
//! - The body is the classic text format, or OpenMetrics when `Accept` asks for it, and
//!   gzip-compressed when `Accept-Encoding` allows.
//! - With a web config: basic authentication (401 otherwise) and TLS.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::{Mutex, RwLock, Semaphore};

use crate::scrape::{self, Scraper};
use crate::webconfig::BasicAuth;

/// Serving settings.
pub struct Settings {
    /// Deadline when the scraper sends none.
    pub default_timeout: Duration,
    /// Scrapes served at once; more get 503.
    pub max_requests: usize,
    /// Background collection interval.
    pub background: Option<Duration>,
    /// Basic authentication.
    pub auth: Option<BasicAuth>,
}

/// The families of one collection.
pub type Collected = Arc<Vec<crate::collector::Family>>;

type Collection = Shared<BoxFuture<'static, Collected>>;

/// Shared state of the server.
pub struct App {
    scraper: Scraper,
    settings: Settings,
    inflight: Mutex<Option<Collection>>,
    latest: RwLock<Option<Collected>>,
    limit: Semaphore,
}

impl App {
    /// The app over `scraper`.
    pub fn new(scraper: Scraper, settings: Settings) -> Arc<Self> {
        let limit = Semaphore::new(settings.max_requests.max(1));
        Arc::new(Self {
            scraper,
            settings,
            inflight: Mutex::new(None),
            latest: RwLock::new(None),
            limit,
        })
    }

    /// One collection, shared with every scrape that arrives while it runs.
    pub async fn collect(self: &Arc<Self>, deadline: Duration) -> Collected {
        let fut = {
            let mut slot = self.inflight.lock().await;
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let scraper = self.scraper.clone();
                    let f = async move { Arc::new(scraper.collect(deadline).await) }
                        .boxed()
                        .shared();
                    *slot = Some(f.clone());
                    f
                }
            }
        };
        let text = fut.clone().await;
        let mut slot = self.inflight.lock().await;
        if slot.as_ref().is_some_and(|f| f.ptr_eq(&fut)) {
            *slot = None;
        }
        text
    }

    /// Runs background collection forever (with `--collection.interval`).
    pub async fn background(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let text = self.collect(every.max(Duration::from_millis(100))).await;
            *self.latest.write().await = Some(text);
        }
    }
}

/// The deadline for a scrape: Prometheus' timeout header minus a margin, else the default.
pub fn deadline(headers: &HeaderMap, default: Duration) -> Duration {
    let Some(secs) = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    else {
        return default;
    };
    let margin = (secs * 0.1).min(0.5);
    Duration::from_secs_f64((secs - margin).max(0.05))
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Ok(_permit) = app.limit.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent scrapes\n",
        )
            .into_response();
    };
    let cached = if app.settings.background.is_some() {
        app.latest.read().await.clone()
    } else {
        None
    };
    let text = match cached {
        Some(t) => t,
        None => {
            app.collect(deadline(&headers, app.settings.default_timeout))
                .await
        }
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = if accept.is_some_and(|a| a.contains("application/openmetrics-text"))
    {
        (
            aifb_core::promtext::OPENMETRICS_CONTENT_TYPE,
            scrape::encode(text),
        )
    } else {
        (
            aifb_core::promtext::CLASSIC_CONTENT_TYPE,
            scrape::encode_classic(&text),
        )
    };

    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mut resp = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match enc.write_all(body.as_bytes()).and_then(|_| enc.finish()) {
            Ok(bytes) => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Err(_) => Response::new(Body::from(body)),
        }
    } else {
        Response::new(Body::from(body))
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(auth) = &app.settings.auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ok = tokio::task::spawn_blocking({
            let app = app.clone();
            move || {
                app.settings
                    .auth
                    .as_ref()
                    .is_some_and(|a| a.check(given.as_deref()))
            }
        })
        .await
        .unwrap_or(false);
        let _ = auth;
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"aifb exporter\"")],
                "Unauthorized\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(|| async { "aifb exporter: see /metrics\n" }))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .with_state(app)
}

/// Serves `router` on `listener`, over TLS when configured, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            // A failed handshake (wrong or missing client certificate) just closes the connection.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Collector, Family, Kind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// Counts its runs, says when it starts, and holds until released.
    struct Gate {
        runs: Arc<AtomicUsize>,
        started: mpsc::Sender<()>,
        release: Arc<std::sync::Mutex<mpsc::Receiver<()>>>,
    }
    impl Collector for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.started.send(());
            let _ = self.release.lock().unwrap().recv();
            out.push(Family::single(
                "aifb_test_runs",
                "runs",
                Kind::Gauge,
                n as f64,
            ));
            Ok(())
        }
    }

    fn gated(
        max_requests: usize,
    ) -> (
        Arc<App>,
        Arc<AtomicUsize>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Gate {
            runs: runs.clone(),
            started: started_tx,
            release: Arc::new(std::sync::Mutex::new(release_rx)),
        };
        let settings = Settings {
            default_timeout: Duration::from_secs(30),
            max_requests,
            background: None,
            auth: None,
        };
        (
            App::new(Scraper::new(vec![Box::new(gate)]), settings),
            runs,
            started_rx,
            release_tx,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_collection() {
        let (app, runs, started, release) = gated(10);
        let first = tokio::spawn({
            let app = app.clone();
            async move { app.collect(Duration::from_secs(30)).await }
        });
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .unwrap()
            .unwrap();
        // The collection is running: a second scrape joins it (one poll is enough to join).
        let mut second = Box::pin(app.collect(Duration::from_secs(30)));
        let waker = futures_util::task::noop_waker();
        assert!(
            second
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_pending()
        );
        release.send(()).unwrap();
        let (a, b) = (first.await.unwrap(), second.await);
        assert!(Arc::ptr_eq(&a, &b), "both scrapes got the same collection");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A later scrape collects afresh.
        release.send(()).unwrap();
        let c = app.collect(Duration::from_secs(30)).await;
        let c = scrape::encode_classic(&c);
        assert!(c.contains("aifb_test_runs 2"), "{c}");
    }

    /// Counts its runs; never blocks.
    struct Counter(Arc<AtomicUsize>);
    impl Collector for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            out.push(Family::single(
                "aifb_test_runs",
                "runs",
                Kind::Gauge,
                n as f64,
            ));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_collection_serves_the_latest_result() {
        let runs = Arc::new(AtomicUsize::new(0));
        let every = Duration::from_secs(3600);
        let settings = Settings {
            default_timeout: Duration::from_secs(5),
            max_requests: 4,
            background: Some(every),
            auth: None,
        };
        let app = App::new(
            Scraper::new(vec![Box::new(Counter(runs.clone()))]),
            settings,
        );
        tokio::spawn(app.clone().background(every));
        // The first tick collects at once; wait for its result to be published.
        while app.latest.read().await.is_none() {
            tokio::task::yield_now().await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, router(app), None, std::future::pending()));
        for _ in 0..3 {
            let body = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).unwrap();
                r
            })
            .await
            .unwrap();
            assert!(body.contains("aifb_test_runs 1"), "{body}");
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "scrapes did not trigger collections"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_max_requests_the_answer_is_503_at_once() {
        let (app, _runs, started, release) = gated(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, router(app), None, std::future::pending()));
        let get = move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        };
        let first = tokio::task::spawn_blocking(get);
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .unwrap()
            .unwrap();
        let second = tokio::task::spawn_blocking(get).await.unwrap();
        assert!(second.starts_with("HTTP/1.0 503"), "{second}");
        release.send(()).unwrap();
        let first = first.await.unwrap();
        assert!(
            first.starts_with("HTTP/1.0 200") && first.contains("aifb_test_runs 1"),
            "{first}"
        );
    }

    #[test]
    fn deadline_follows_prometheus_header() {
        let mut h = HeaderMap::new();
        assert_eq!(deadline(&h, Duration::from_secs(7)), Duration::from_secs(7));
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("10"),
        );
        assert_eq!(
            deadline(&h, Duration::from_secs(7)),
            Duration::from_secs_f64(9.5)
        );
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("1"),
        );
        assert_eq!(
            deadline(&h, Duration::from_secs(7)),
            Duration::from_secs_f64(0.9)
        );
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("nonsense"),
        );
        assert_eq!(deadline(&h, Duration::from_secs(7)), Duration::from_secs(7));
    }
}
