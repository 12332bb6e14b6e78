//! Redis: GET and SET over a key space of `keys` keys (`key_prefix` + index), uniform or
//! zipfian, values of `value_size` bytes.
//!
//! Connections are multiplexed: requests of several users that share a connection are
//! pipelined on it, as redis-benchmark's `-P` does, and requests on distinct connections
//! run side by side, as its `-c` clients do. With no `connections` in the recipe, each
//! closed-loop user has its own connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aifb_core::recipe::RedisWorkload;
use aifb_core::requests::error_class;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, RedisError};

use super::{Call, Driver, DriverError, Exchange, Keyspace, Mix, Spec, payload};

/// The Redis driver.
pub struct Redis {
    client: redis::Client,
    conns: Vec<Mutex<MultiplexedConnection>>,
    next: AtomicUsize,
    w: RedisWorkload,
    mix: Mix,
    keys: Keyspace,
}

fn describe(e: &RedisError) -> String {
    e.to_string()
}

/// The error class of a failed command.
fn classify(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        error_class::TIMEOUT
    } else if e.is_connection_refusal() {
        error_class::CONNECT
    } else if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
        error_class::RESET
    } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        error_class::PROTOCOL
    } else if e.code() == Some("BUSY") || e.code() == Some("LOADING") {
        error_class::BACKPRESSURE
    } else {
        error_class::SERVER
    }
}

impl Redis {
    fn key(&self, index: u64) -> String {
        format!("{}{index}", self.w.key_prefix)
    }

    /// The connection slot of `worker`: closed-loop users keep theirs; open-loop
    /// arrivals rotate.
    fn slot(&self, worker: u32) -> usize {
        let i = if self.conns.len() as u64 > u64::from(worker) {
            worker as usize
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        i % self.conns.len()
    }

    fn conn(&self, slot: usize) -> Option<MultiplexedConnection> {
        self.conns[slot].lock().ok().map(|c| c.clone())
    }

    /// Replaces a connection the server dropped (it may be back).
    async fn reconnect(&self, slot: usize) {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        if let Ok(fresh) = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            && let Ok(mut c) = self.conns[slot].lock()
        {
            *c = fresh;
        }
    }
}

impl Driver for Redis {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.redis.clone().unwrap_or_default();
        let auth = &spec.recipe.service.auth;
        let mut info = spec
            .target
            .as_str()
            .into_connection_info()
            .map_err(|e| DriverError::new(format!("{}: {}", spec.target, describe(&e))))?;
        if auth.user.is_some() || spec.secret.is_some() {
            let mut settings = info.redis_settings().clone();
            if let Some(u) = &auth.user {
                settings = settings.set_username(u);
            }
            if let Some(p) = &spec.secret {
                settings = settings.set_password(p);
            }
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)
            .map_err(|e| DriverError::new(format!("{}: {}", spec.target, describe(&e))))?;
        let n = w.connections.unwrap_or(spec.connections).max(1);
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let c = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| {
                    let msg = format!("redis at {}: {}", spec.target, describe(&e));
                    if e.kind() == ErrorKind::AuthenticationFailed
                        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
                    {
                        DriverError::permanent(format!("{msg} (check service.auth)"))
                    } else {
                        DriverError::new(msg)
                    }
                })?;
            conns.push(Mutex::new(c));
        }
        Ok(Redis {
            client,
            conns,
            next: AtomicUsize::new(0),
            mix: Mix::new(
                spec.recipe.workload.seed,
                &[("get", w.mix.get), ("set", w.mix.set)],
            ),
            keys: Keyspace::new(w.keys, w.key_distribution, w.zipf_exponent),
            w,
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        let Some(mut c) = self.conn(0) else {
            return Err(DriverError::new("redis: connection lost".into()));
        };
        let pong: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| DriverError::new(format!("redis PING: {}", describe(&e))))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(DriverError::new(format!("redis PING answered {pong:?}")))
        }
    }

    async fn setup(&self) -> Result<(), DriverError> {
        if !self.w.preload {
            return Ok(());
        }
        let Some(mut c) = self.conn(0) else {
            return Err(DriverError::new("redis: connection lost".into()));
        };
        let size = self.w.value_size as usize;
        let chunk = 1000u64;
        let mut start = 0;
        while start < self.w.keys {
            let end = (start + chunk).min(self.w.keys);
            let mut pipe = redis::pipe();
            for k in start..end {
                pipe.cmd("SET")
                    .arg(self.key(k))
                    .arg(payload(k, size))
                    .ignore();
            }
            pipe.query_async::<()>(&mut c)
                .await
                .map_err(|e| DriverError::new(format!("redis preload: {}", describe(&e))))?;
            start = end;
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
        let slot = self.slot(call.worker);
        let Some(mut c) = self.conn(slot) else {
            return Exchange::start(op, 0).finish(Some(error_class::RESET));
        };
        let mut cmd = redis::cmd(if op == "set" { "SET" } else { "GET" });
        cmd.arg(&key);
        let mut sent_bytes = key.len() as u64;
        if op == "set" {
            let value = payload(index, self.w.value_size as usize);
            sent_bytes += value.len() as u64;
            cmd.arg(value);
        }
        let mut x = Exchange::start(op, sent_bytes);
        let result = tokio::time::timeout(call.timeout, async {
            if op == "set" {
                cmd.query_async::<redis::Value>(&mut c)
                    .await
                    .map(|v| match v {
                        redis::Value::Okay => Ok(0),
                        _ => Err(()),
                    })
            } else {
                cmd.query_async::<Option<Vec<u8>>>(&mut c)
                    .await
                    .map(|v| Ok(v.map_or(0, |b| b.len() as u64)))
            }
        })
        .await;
        x.end = std::time::Instant::now();
        x.first_byte = Some(x.end);
        match result {
            Err(_) => x.error = Some(error_class::TIMEOUT),
            Ok(Err(e)) => {
                x.first_byte = None;
                x.error = Some(classify(&e));
                if matches!(x.error, Some(error_class::RESET | error_class::CONNECT)) {
                    self.reconnect(slot).await;
                }
            }
            Ok(Ok(Err(()))) => x.error = Some(error_class::PROTOCOL),
            Ok(Ok(Ok(n))) => x.bytes_received = n,
        }
        x
    }

    async fn identity(&self) -> super::Identity {
        let mut version = None;
        if let Some(mut c) = self.conn(0) {
            let info: Result<String, _> =
                redis::cmd("INFO").arg("server").query_async(&mut c).await;
            version = info.ok().and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .map(|v| format!("redis {}", v.trim()))
            });
        }
        super::Identity {
            version,
            models: Vec::new(),
        }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_server_errors_are_told_apart() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused), error_class::CONNECT);
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&reset), error_class::RESET);
    }
}
