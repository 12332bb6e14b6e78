//! S3 object stores (MinIO, Garage, Ceph RGW, AWS): PUT and GET of `object_size`-byte
//! objects, SigV4-signed (presigned URLs from `rusty-s3`, sent with the shared HTTP
//! client), path-style addressing. Every GET checks the body length.

use std::time::Duration;

use aifb_core::recipe::S3Workload;
use aifb_core::requests::error_class;
use futures_util::{StreamExt, stream};
use rusty_s3::actions::{CreateBucket, DeleteObject, GetObject, HeadBucket, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::http::{Expect, exchange};
use super::{
    Call, Driver, DriverError, Exchange, Keyspace, Mix, Spec, describe, http_client, payload,
};

const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

/// The S3 driver.
pub struct S3 {
    client: reqwest::Client,
    bucket: Bucket,
    creds: Option<Credentials>,
    w: S3Workload,
    mix: Mix,
    keys: Keyspace,
    endpoint: String,
}

/// The text of `<tag>` in an XML error body.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

/// The S3 error code in an XML error body (`<Code>NoSuchBucket</Code>`).
fn error_code(body: &str) -> Option<&str> {
    xml_field(body, "Code")
}

/// True when the store says the signature is wrong: the key exists, the secret differs.
fn bad_signature(body: &str) -> bool {
    error_code(body) == Some("SignatureDoesNotMatch")
        || xml_field(body, "Message").is_some_and(|m| m.to_ascii_lowercase().contains("signature"))
}

impl S3 {
    fn key(&self, index: u64) -> String {
        format!("{}{index}", self.w.key_prefix)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String), DriverError> {
        let mut r = self.client.request(method, url.as_str());
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| DriverError::new(format!("s3 at {}: {}", self.endpoint, describe(&e))))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    async fn put(&self, index: u64) -> Result<(), DriverError> {
        let key = self.key(index);
        let url = PutObject::new(&self.bucket, self.creds.as_ref(), &key).sign(SIGNATURE_LIFETIME);
        let (status, body) = self
            .send(
                reqwest::Method::PUT,
                url,
                Some(payload(index, self.w.object_size as usize)),
            )
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(self.refusal(&format!("writing {key}"), status, &body))
        }
    }

    fn refusal(&self, what: &str, status: u16, body: &str) -> DriverError {
        let code = error_code(body).unwrap_or("no error code");
        let msg = format!("s3 bucket {}: {what}: {status} {code}", self.w.bucket);
        match code {
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "NoSuchBucket"
            | "InvalidBucketName" => {
                DriverError::permanent(format!("{msg} (check service.auth and workload.s3.bucket)"))
            }
            _ => DriverError::new(msg),
        }
    }
}

impl Driver for S3 {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.s3.clone().unwrap_or_default();
        let endpoint: url::Url = spec
            .target
            .parse()
            .map_err(|e| DriverError::permanent(format!("{}: {e}", spec.target)))?;
        let region = spec
            .recipe
            .service
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".into());
        let bucket = Bucket::new(endpoint, UrlStyle::Path, w.bucket.clone(), region)
            .map_err(|e| DriverError::permanent(format!("{}: {e}", spec.target)))?;
        let creds = match (&spec.recipe.service.auth.user, &spec.secret) {
            (Some(k), Some(s)) => Some(Credentials::new(k.clone(), s.clone())),
            (None, None) => None,
            _ => {
                return Err(DriverError::permanent(
                    "service.auth: an S3 store needs both user (access key id) and password (secret key)".into(),
                ));
            }
        };
        Ok(S3 {
            client: http_client(spec.connections)?,
            bucket,
            creds,
            mix: Mix::new(
                spec.recipe.workload.seed,
                &[("put", w.mix.put), ("get", w.mix.get)],
            ),
            keys: Keyspace::new(w.objects, w.key_distribution, w.zipf_exponent),
            w,
            endpoint: spec.target.clone(),
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        // A signed ListObjectsV2 of the bucket: it lists (200) or the bucket is missing
        // (404 NoSuchBucket): the store accepts these credentials. A store still starting
        // answers 503; one whose keys are still being provisioned answers 403: both are
        // retried until service.health.timeout, whose message then carries the S3 code.
        let mut list = self.bucket.list_objects_v2(self.creds.as_ref());
        list.with_max_keys(1);
        let (status, body) = self
            .send(reqwest::Method::GET, list.sign(SIGNATURE_LIFETIME), None)
            .await?;
        if status == 200 || error_code(&body) == Some("NoSuchBucket") {
            Ok(())
        } else {
            let code = error_code(&body).unwrap_or("no error code");
            // The key exists but the secret differs: no wait will fix that.
            let make = if bad_signature(&body) {
                DriverError::permanent
            } else {
                DriverError::new
            };
            Err(make(format!(
                "s3 at {}: ListObjectsV2 of bucket {}: {status} {code}{}",
                self.endpoint,
                self.w.bucket,
                if status == 403 {
                    " (check service.auth)"
                } else {
                    ""
                }
            )))
        }
    }

    async fn setup(&self) -> Result<(), DriverError> {
        let head = HeadBucket::new(&self.bucket, self.creds.as_ref()).sign(SIGNATURE_LIFETIME);
        let (status, body) = self.send(reqwest::Method::HEAD, head, None).await?;
        match status {
            200 => {}
            403 | 404 if self.w.create_bucket => {
                let Some(creds) = &self.creds else {
                    return Err(DriverError::permanent(
                        "s3: creating a bucket needs service.auth".into(),
                    ));
                };
                let url = CreateBucket::new(&self.bucket, creds).sign(SIGNATURE_LIFETIME);
                let (status, body) = self.send(reqwest::Method::PUT, url, None).await?;
                if !(200..300).contains(&status)
                    && error_code(&body) != Some("BucketAlreadyOwnedByYou")
                {
                    return Err(self.refusal("creating it", status, &body));
                }
            }
            403 | 404 => {
                // HEAD has no body: ask again with a GET to learn the S3 error code.
                let list = self
                    .bucket
                    .list_objects_v2(self.creds.as_ref())
                    .sign(SIGNATURE_LIFETIME);
                let (status, body) = self.send(reqwest::Method::GET, list, None).await?;
                return Err(match error_code(&body) {
                    Some("NoSuchBucket") => DriverError::permanent(format!(
                        "s3 bucket {} does not exist (set workload.s3.create_bucket: true to create it)",
                        self.w.bucket
                    )),
                    _ => self.refusal("opening it", status, &body),
                });
            }
            _ => return Err(self.refusal("HeadBucket", status, &body)),
        }
        if self.w.preload {
            let results: Vec<Result<(), DriverError>> = stream::iter(0..self.w.objects)
                .map(|i| self.put(i))
                .buffer_unordered(16)
                .collect()
                .await;
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn op(&self, seq: u64) -> &'static str {
        self.mix.op(seq)
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        let (op, mut rng) = self.mix.draw(call.seq);
        let index = self.keys.draw(&mut rng);
        let key = self.key(index);
        let size = self.w.object_size;
        if op == "put" {
            let url =
                PutObject::new(&self.bucket, self.creds.as_ref(), &key).sign(SIGNATURE_LIFETIME);
            let req = self
                .client
                .put(url.as_str())
                .body(payload(index, size as usize));
            exchange(req, op, size, Expect::Success, call, None).await
        } else {
            let url =
                GetObject::new(&self.bucket, self.creds.as_ref(), &key).sign(SIGNATURE_LIFETIME);
            let req = self.client.get(url.as_str());
            let x = exchange(req, op, 0, Expect::Success, call, None).await;
            if x.error.is_none() && x.bytes_received != size {
                let mut x = x;
                x.error = Some(error_class::PROTOCOL);
                return x;
            }
            x
        }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        if self.w.teardown {
            for i in 0..self.w.objects {
                let key = self.key(i);
                let url = DeleteObject::new(&self.bucket, self.creds.as_ref(), &key)
                    .sign(SIGNATURE_LIFETIME);
                self.send(reqwest::Method::DELETE, url, None).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_s3_error_codes() {
        let body =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), Some("NoSuchBucket"));
        assert_eq!(error_code("garbage"), None);
        // Garage's answer to a wrong secret.
        let garage = "<Error><Code>AccessDenied</Code><Message>Forbidden: Invalid signature</Message></Error>";
        assert!(bad_signature(garage));
        assert!(!bad_signature(body));
    }
}
