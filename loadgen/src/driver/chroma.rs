//! ChromaDB through its HTTP v2 API (`/api/v2/tenants/default_tenant/databases/
//! default_database/collections`): top-k queries and upserts of precomputed vectors, so
//! no embedding model runs on either side.

use aifb_core::recipe::{Distance, VectorWorkload};
use serde_json::{Value, json};

use super::http::{Expect, JsonApi, exchange};
use super::{
    Call, Driver, DriverError, Exchange, Mix, Spec, VectorOp, http_client, http_ping,
    preload_batches, vector,
};

const PREFIX: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// The ChromaDB driver.
pub struct Chroma {
    api: JsonApi,
    w: VectorWorkload,
    mix: Mix,
    /// Collection id, known after setup.
    id: std::sync::OnceLock<String>,
}

impl Chroma {
    fn collection_id(&self) -> &str {
        self.id.get().map_or("", String::as_str)
    }
}

fn space(d: Distance) -> &'static str {
    match d {
        Distance::Cosine => "cosine",
        Distance::Euclid => "l2",
        Distance::Dot => "ip",
    }
}

fn error_text(v: &Value) -> String {
    v.get("message").or_else(|| v.get("error")).map_or_else(
        || v.to_string(),
        |m| m.as_str().map_or_else(|| m.to_string(), str::to_string),
    )
}

impl Driver for Chroma {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.vector.clone().unwrap_or_default();
        Ok(Chroma {
            api: JsonApi {
                client: http_client(spec.connections)?,
                base: spec.target.clone(),
                auth: spec
                    .secret
                    .as_ref()
                    .map(|t| ("authorization", format!("Bearer {t}"))),
                name: "chroma",
            },
            mix: Mix::new(
                spec.recipe.workload.seed,
                &[("query", w.mix.query), ("upsert", w.mix.upsert)],
            ),
            w,
            id: std::sync::OnceLock::new(),
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        http_ping(
            &self.api.client,
            &format!("{}/api/v2/heartbeat", self.api.base),
        )
        .await
    }

    async fn setup(&self) -> Result<(), DriverError> {
        let name = &self.w.collection;
        let path = format!("{PREFIX}/{name}");
        if self.w.recreate {
            let (status, v) = self.api.call(reqwest::Method::DELETE, &path, None).await?;
            if !(200..300).contains(&status) && status != 404 {
                return Err(DriverError::new(format!(
                    "chroma: deleting collection {name}: {status} {}",
                    error_text(&v)
                )));
            }
            let body = json!({"name": name, "metadata": {"hnsw:space": space(self.w.distance)}});
            let (status, v) = self
                .api
                .call(reqwest::Method::POST, PREFIX, Some(body))
                .await?;
            if !(200..300).contains(&status) {
                return Err(DriverError::new(format!(
                    "chroma: creating collection {name}: {status} {}",
                    error_text(&v)
                )));
            }
            let _ = self
                .id
                .set(v["id"].as_str().unwrap_or_default().to_string());
        } else {
            let (status, v) = self.api.call(reqwest::Method::GET, &path, None).await?;
            if status == 404 || !(200..300).contains(&status) {
                return Err(DriverError::permanent(format!(
                    "chroma: collection {name} does not exist ({status} {}); set workload.vector.recreate: true to create it",
                    error_text(&v)
                )));
            }
            let _ = self
                .id
                .set(v["id"].as_str().unwrap_or_default().to_string());
        }
        if self.collection_id().is_empty() {
            return Err(DriverError::new(format!(
                "chroma: no id for collection {name}"
            )));
        }
        let add = format!("{PREFIX}/{}/upsert", self.collection_id());
        for batch in preload_batches(self.w.preload) {
            let ids: Vec<String> = batch.clone().map(|i| i.to_string()).collect();
            let vectors: Vec<Vec<f32>> = batch.map(|i| vector(i, self.w.dimension)).collect();
            let (status, v) = self
                .api
                .call(
                    reqwest::Method::POST,
                    &add,
                    Some(json!({"ids": ids, "embeddings": vectors})),
                )
                .await?;
            if !(200..300).contains(&status) {
                return Err(DriverError::new(format!(
                    "chroma: preloading vectors: {status} {}",
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
        let id = self.collection_id();
        let (path, body) = match what {
            VectorOp::Query(target) => (
                format!("{PREFIX}/{id}/query"),
                json!({"query_embeddings": [vector(target, self.w.dimension)], "n_results": self.w.top_k, "include": ["distances"]}),
            ),
            VectorOp::Upsert(ids) => {
                let vectors: Vec<Vec<f32>> =
                    ids.iter().map(|&i| vector(i, self.w.dimension)).collect();
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                (
                    format!("{PREFIX}/{id}/upsert"),
                    json!({"ids": ids, "embeddings": vectors}),
                )
            }
        };
        let payload = body.to_string();
        let sent = payload.len() as u64;
        let req = self
            .api
            .request(reqwest::Method::POST, &path)
            .header("content-type", "application/json")
            .body(payload);
        let check = |b: &[u8]| -> bool {
            serde_json::from_slice::<Value>(b)
                .is_ok_and(|v| v.get("ids").is_some_and(Value::is_array))
        };
        let check: Option<super::http::BodyCheck<'_>> =
            if op == "query" { Some(&check) } else { None };
        exchange(req, op, sent, Expect::Success, call, check).await
    }

    async fn identity(&self) -> super::Identity {
        let version = super::get_json(
            &self.api.client,
            &format!("{}/api/v2/version", self.api.base),
        )
        .await
        .and_then(|v| v.as_str().map(|s| format!("chroma api {s}")));
        super::Identity {
            version,
            models: Vec::new(),
        }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        if self.w.teardown {
            let path = format!("{PREFIX}/{}", self.w.collection);
            self.api.call(reqwest::Method::DELETE, &path, None).await?;
        }
        Ok(())
    }
}
