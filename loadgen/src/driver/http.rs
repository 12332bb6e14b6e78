//! Any HTTP service: one configurable request (method, path, body, headers), a success
//! status list, and the shared exchange used by the JSON-over-HTTP drivers (ChromaDB,
//! Qdrant).

use aifb_core::recipe::HttpWorkload;
use aifb_core::requests::error_class;
use reqwest::Method;

use super::{
    ByteSource, Call, Driver, DriverError, Exchange, ReqwestBody, Spec, http_client, http_ping,
    read_body, send, send_lean, status_class,
};

/// A check of a successful response body: false makes it a protocol error.
pub type BodyCheck<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

/// What makes a response a success.
pub enum Expect<'a> {
    /// Any 2xx status.
    Success,
    /// One of these statuses.
    Statuses(&'a [u16]),
}

impl Expect<'_> {
    fn accepts(&self, status: u16) -> bool {
        match self {
            Expect::Success => (200..300).contains(&status),
            Expect::Statuses(s) => s.contains(&status),
        }
    }
}

/// Reads the body of an answer with `status` to its end and sets the outcome; false when
/// the body broke off.
async fn settle(
    body: &mut impl ByteSource,
    x: &mut Exchange,
    status: u16,
    expect: Expect<'_>,
    check: Option<BodyCheck<'_>>,
) -> bool {
    let ok = expect.accepts(status);
    let Some(buf) = read_body(body, x, ok && check.is_some()).await else {
        return false;
    };
    if !ok {
        x.error = Some(status_class(status));
    } else if let Some(check) = check
        && !check(&buf)
    {
        x.error = Some(error_class::PROTOCOL);
    }
    true
}

/// Sends `req` and reads the whole body, timing headers and end. `check` may reject a
/// successful body (it then counts as a protocol error).
pub async fn exchange(
    req: reqwest::RequestBuilder,
    op: &'static str,
    bytes_sent: u64,
    expect: Expect<'_>,
    call: Call<'_>,
    check: Option<BodyCheck<'_>>,
) -> Exchange {
    let mut x = Exchange::start(op, bytes_sent);
    let body = async {
        let Some(resp) = send(req.header("x-request-id", call.request_id), &mut x).await else {
            return;
        };
        let status = resp.status().as_u16();
        settle(&mut ReqwestBody::new(resp), &mut x, status, expect, check).await;
    };
    let timed_out = tokio::time::timeout(call.timeout, body).await.is_err();
    x.ended(timed_out)
}

/// [`exchange`] over the lean HTTP/1.1 pool.
pub async fn exchange_h1(
    pool: &super::h1::Pool,
    request: super::h1::Request<'_>,
    op: &'static str,
    bytes_sent: u64,
    expect: Expect<'_>,
    call: Call<'_>,
    check: Option<BodyCheck<'_>>,
) -> Exchange {
    let mut x = Exchange::start(op, bytes_sent);
    let body = async {
        let Some((mut body, status)) = send_lean(pool, &request, &mut x).await else {
            return;
        };
        if settle(&mut body, &mut x, status, expect, check).await {
            body.release();
        }
    };
    let timed_out = tokio::time::timeout(call.timeout, body).await.is_err();
    x.ended(timed_out)
}

/// The parts of the generic driver's request that do not change between requests, for
/// the lean client.
struct Prepared {
    target: super::h1::Target,
    head: super::h1::Head,
    body: Vec<u8>,
}

impl Prepared {
    fn new(spec: &Spec, w: &HttpWorkload, method: &Method) -> Option<Prepared> {
        let mut target = super::h1::Target::new(
            &spec.target,
            spec.connections.max(64) as usize,
            spec.secret.as_deref(),
        )?;
        for (k, v) in &w.headers {
            target = target.with_header(k, v)?;
        }
        Some(Prepared {
            head: target.head(method, &w.path)?,
            target,
            body: w.body.clone().unwrap_or_default().into_bytes(),
        })
    }
}

/// A JSON-over-HTTP API with an optional credential header: the setup calls of the
/// vector databases.
pub struct JsonApi {
    /// The shared client.
    pub client: reqwest::Client,
    /// Base URL.
    pub base: String,
    /// Header carrying the credential, e.g. `("authorization", "Bearer …")`.
    pub auth: Option<(&'static str, String)>,
    /// Service name for messages.
    pub name: &'static str,
}

impl JsonApi {
    /// A request to `path`, with the credential.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((k, v)) => r.header(*k, v),
            None => r,
        }
    }

    /// Sends `body` (if any) as JSON; returns the status and the answer (JSON, else its
    /// text as a JSON string).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), DriverError> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| {
            DriverError::new(format!("{} {path}: {}", self.name, super::describe(&e)))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, v))
    }
}

/// The generic HTTP driver.
pub struct Http {
    client: reqwest::Client,
    base: String,
    method: Method,
    w: HttpWorkload,
    health: Option<String>,
    token: Option<String>,
    /// The lean client for `http://` targets (`None`: reqwest, e.g. for `https://`).
    lean: Option<Prepared>,
}

impl Driver for Http {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.http.clone().unwrap_or_default();
        let method =
            Method::from_bytes(w.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                DriverError::new(format!(
                    "workload.http.method: {:?} is not an HTTP method",
                    w.method
                ))
            })?;
        let lean = Prepared::new(spec, &w, &method);
        Ok(Http {
            lean,
            client: http_client(spec.connections)?,
            base: spec.target.clone(),
            method,
            w,
            health: spec.recipe.service.health_path(),
            token: spec.secret.clone(),
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        let path = self.health.as_deref().unwrap_or("/");
        http_ping(&self.client, &format!("{}{path}", self.base)).await
    }

    async fn setup(&self) -> Result<(), DriverError> {
        Ok(())
    }

    fn op(&self, _seq: u64) -> &'static str {
        "http"
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        let expect = if self.w.expect_status.is_empty() {
            Expect::Success
        } else {
            Expect::Statuses(&self.w.expect_status)
        };
        if let Some(p) = &self.lean {
            let request = super::h1::Request {
                head: &p.head,
                request_id: Some(call.request_id),
                body: &p.body,
            };
            return exchange_h1(
                &p.target.pool,
                request,
                "http",
                p.body.len() as u64,
                expect,
                call,
                None,
            )
            .await;
        }
        let mut req = self
            .client
            .request(self.method.clone(), format!("{}{}", self.base, self.w.path));
        for (k, v) in &self.w.headers {
            req = req.header(k, v);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut sent = 0;
        if let Some(b) = &self.w.body {
            sent = b.len() as u64;
            req = req.body(b.clone());
        }
        exchange(req, "http", sent, expect, call, None).await
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        Ok(())
    }
}
