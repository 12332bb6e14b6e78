//! Qdrant through its REST API: top-k queries (`POST /collections/{c}/points/query`) and
//! upserts (`PUT /collections/{c}/points?wait=true`) of precomputed vectors. The API key,
//! when given, goes in the `api-key` header.

use aifb_core::recipe::{Distance, VectorWorkload};
use serde_json::{Value, json};

use super::http::{Expect, JsonApi, exchange};
use super::{
    Call, Driver, DriverError, Exchange, Mix, Spec, VectorOp, http_client, http_ping,
    preload_batches, vector,
};

/// The Qdrant driver.
pub struct Qdrant {
    api: JsonApi,
    w: VectorWorkload,
    mix: Mix,
}

fn distance(d: Distance) -> &'static str {
    match d {
        Distance::Cosine => "Cosine",
        Distance::Euclid => "Euclid",
        Distance::Dot => "Dot",
    }
}

/// Points of ids `ids` with their deterministic vectors.
fn points(ids: impl Iterator<Item = u64>, dim: u32) -> Value {
    let points: Vec<Value> = ids
        .map(|i| json!({"id": i, "vector": vector(i, dim)}))
        .collect();
    json!({ "points": points })
}

/// A Qdrant answer is `{"result": …, "status": "ok", "time": …}`.
fn answered_ok(v: &Value) -> bool {
    v.get("status").and_then(Value::as_str) == Some("ok") && v.get("result").is_some()
}

fn error_text(v: &Value) -> String {
    v.pointer("/status/error")
        .and_then(Value::as_str)
        .map_or_else(|| v.to_string(), str::to_string)
}

impl Qdrant {}

impl Driver for Qdrant {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.vector.clone().unwrap_or_default();
        Ok(Qdrant {
            api: JsonApi {
                client: http_client(spec.connections)?,
                base: spec.target.clone(),
                auth: spec.secret.as_ref().map(|k| ("api-key", k.clone())),
                name: "qdrant",
            },
            mix: Mix::new(
                spec.recipe.workload.seed,
                &[("query", w.mix.query), ("upsert", w.mix.upsert)],
            ),
            w,
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        http_ping(&self.api.client, &format!("{}/readyz", self.api.base)).await
    }

    async fn setup(&self) -> Result<(), DriverError> {
        let name = &self.w.collection;
        let path = format!("/collections/{name}");
        if self.w.recreate {
            let (status, v) = self.api.call(reqwest::Method::DELETE, &path, None).await?;
            if !(200..300).contains(&status) && status != 404 {
                return Err(DriverError::new(format!(
                    "qdrant: deleting collection {name}: {status} {}",
                    error_text(&v)
                )));
            }
            let body = json!({"vectors": {"size": self.w.dimension, "distance": distance(self.w.distance)}});
            let (status, v) = self
                .api
                .call(reqwest::Method::PUT, &path, Some(body))
                .await?;
            if !(200..300).contains(&status) {
                return Err(DriverError::new(format!(
                    "qdrant: creating collection {name}: {status} {}",
                    error_text(&v)
                )));
            }
        } else {
            let (status, v) = self.api.call(reqwest::Method::GET, &path, None).await?;
            if !(200..300).contains(&status) {
                return Err(DriverError::permanent(format!(
                    "qdrant: collection {name} does not exist ({status} {}); set workload.vector.recreate: true to create it",
                    error_text(&v)
                )));
            }
        }
        for batch in preload_batches(self.w.preload) {
            let (status, v) = self
                .api
                .call(
                    reqwest::Method::PUT,
                    &format!("{path}/points?wait=true"),
                    Some(points(batch, self.w.dimension)),
                )
                .await?;
            if !(200..300).contains(&status) {
                return Err(DriverError::new(format!(
                    "qdrant: preloading points: {status} {}",
                    error_text(&v)
                )));
            }
        }
        Ok(())
    }

    fn op(&self, seq: u64) -> &'static str {
        self.mix.op(seq)
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        let (op, what) = VectorOp::draw(&self.mix, call.seq, self.w.preload, self.w.batch);
        let name = &self.w.collection;
        let (method, path, body) = match what {
            VectorOp::Query(target) => (
                reqwest::Method::POST,
                format!("/collections/{name}/points/query"),
                json!({"query": vector(target, self.w.dimension), "limit": self.w.top_k}),
            ),
            VectorOp::Upsert(ids) => (
                reqwest::Method::PUT,
                format!("/collections/{name}/points?wait=true"),
                points(ids.into_iter(), self.w.dimension),
            ),
        };
        let payload = body.to_string();
        let sent = payload.len() as u64;
        let req = self
            .api
            .request(method, &path)
            .header("content-type", "application/json")
            .body(payload);
        let check = |b: &[u8]| serde_json::from_slice::<Value>(b).is_ok_and(|v| answered_ok(&v));
        exchange(req, op, sent, Expect::Success, call, Some(&check)).await
    }

    async fn identity(&self) -> super::Identity {
        let version = self
            .api
            .call(reqwest::Method::GET, "/", None)
            .await
            .ok()
            .and_then(|(_, v)| v["version"].as_str().map(|s| format!("qdrant {s}")));
        super::Identity {
            version,
            models: Vec::new(),
        }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        if self.w.teardown {
            self.api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/collections/{}", self.w.collection),
                    None,
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_answers_are_understood() {
        // From Qdrant's API reference: a query answer and an error answer.
        let ok: Value = serde_json::from_str(
            r#"{"result":{"points":[{"id":3,"version":0,"score":0.99}]},"status":"ok","time":0.0021}"#,
        )
        .unwrap();
        assert!(answered_ok(&ok));
        let err: Value = serde_json::from_str(
            r#"{"status":{"error":"Not found: Collection `bench` doesn't exist!"},"time":0.0001}"#,
        )
        .unwrap();
        assert!(!answered_ok(&err));
        assert_eq!(
            error_text(&err),
            "Not found: Collection `bench` doesn't exist!"
        );
    }
}
