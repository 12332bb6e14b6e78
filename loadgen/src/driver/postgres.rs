//! PostgreSQL: pgbench's TPC-B-like transaction (`tpcb`) and its `-S` point query
//! (`select`) on pgbench's own tables, with prepared statements, so a run compares with
//! `pgbench -M prepared` on the same data.
//!
//! Each request borrows a connection from a pool; a closed loop gets one connection per
//! user unless the recipe says otherwise. The wait for a connection happens before
//! `t_sent`: it shows in the response time (from the intended start), not in the service
//! latency.

use std::sync::Mutex;

use aifb_core::recipe::{PostgresWorkload, SchemaMode};
use aifb_core::requests::error_class;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Call, Driver, DriverError, Exchange, Mix, Spec};

const TABLES: &str = "pgbench_history, pgbench_tellers, pgbench_accounts, pgbench_branches";

/// One pooled connection and its prepared statements.
struct Conn {
    client: Client,
    update_account: Statement,
    select_account: Statement,
    update_teller: Statement,
    update_branch: Statement,
    insert_history: Statement,
}

/// The PostgreSQL driver.
pub struct Postgres {
    admin: Client,
    pool: Vec<tokio::sync::Mutex<Option<Conn>>>,
    free: Mutex<Vec<usize>>,
    permits: Semaphore,
    w: PostgresWorkload,
    mix: Mix,
    config: tokio_postgres::Config,
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                s = format!("{s}: {src}");
            }
            s
        }
    }
}

/// The error class of a failed statement.
fn classify(e: &tokio_postgres::Error) -> &'static str {
    if let Some(db) = e.as_db_error() {
        // 53300 too_many_connections, 57P03 cannot_connect_now: the server pushes back.
        return match db.code().code() {
            "53300" | "57P03" => error_class::BACKPRESSURE,
            _ => error_class::SERVER,
        };
    }
    if e.is_closed() {
        return error_class::RESET;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => error_class::CONNECT,
        Some(_) => error_class::RESET,
        None => error_class::PROTOCOL,
    }
}

async fn open(config: &tokio_postgres::Config, target: &str) -> Result<Client, DriverError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let msg = format!("postgres at {target}: {}", describe(&e));
        // Class 28: invalid authorization; 3D000: no such database.
        match e.as_db_error().map(|d| d.code().code()) {
            Some(c) if c.starts_with("28") || c == "3D000" => {
                DriverError::permanent(format!("{msg} (check service.auth and service.database)"))
            }
            _ => DriverError::new(msg),
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

async fn prepare(client: Client) -> Result<Conn, tokio_postgres::Error> {
    Ok(Conn {
        update_account: client
            .prepare("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")
            .await?,
        select_account: client
            .prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
            .await?,
        update_teller: client
            .prepare("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2")
            .await?,
        update_branch: client
            .prepare("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2")
            .await?,
        insert_history: client
            .prepare(
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
            )
            .await?,
        client,
    })
}

/// Draws pgbench's random variables: `aid`, `bid`, `tid`, `delta`.
fn draw(rng: &mut SmallRng, scale: u32) -> (i32, i32, i32, i32) {
    let scale = i32::try_from(scale).unwrap_or(i32::MAX / 100_000);
    let aid = rng.random_range(1..=100_000 * scale);
    let bid = rng.random_range(1..=scale);
    let tid = rng.random_range(1..=10 * scale);
    let delta = rng.random_range(-5000..=5000);
    (aid, bid, tid, delta)
}

async fn tpcb(
    c: &Conn,
    aid: i32,
    bid: i32,
    tid: i32,
    delta: i32,
) -> Result<(), tokio_postgres::Error> {
    c.client.batch_execute("BEGIN").await?;
    let body = async {
        c.client.execute(&c.update_account, &[&delta, &aid]).await?;
        c.client.query_opt(&c.select_account, &[&aid]).await?;
        c.client.execute(&c.update_teller, &[&delta, &tid]).await?;
        c.client.execute(&c.update_branch, &[&delta, &bid]).await?;
        c.client
            .execute(&c.insert_history, &[&tid, &bid, &aid, &delta])
            .await?;
        c.client.batch_execute("COMMIT").await
    };
    let r = body.await;
    if r.is_err() && !c.client.is_closed() {
        let _ = c.client.batch_execute("ROLLBACK").await;
    }
    r
}

impl Driver for Postgres {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let w = spec.recipe.workload.postgres.clone().unwrap_or_default();
        let svc = &spec.recipe.service;
        let mut config: tokio_postgres::Config = spec
            .target
            .parse()
            .map_err(|e| DriverError::new(format!("{}: {e}", spec.target)))?;
        if let Some(u) = &svc.auth.user {
            config.user(u);
        } else if config.get_user().is_none() {
            config.user("postgres");
        }
        if let Some(p) = &spec.secret {
            config.password(p);
        }
        if let Some(d) = &svc.database {
            config.dbname(d);
        }
        config.application_name("aifb-loadgen");
        let admin = open(&config, &spec.target).await?;
        let n = w.connections.unwrap_or(spec.connections).max(1) as usize;
        Ok(Postgres {
            admin,
            pool: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
            free: Mutex::new((0..n).rev().collect()),
            permits: Semaphore::new(n),
            mix: Mix::new(
                spec.recipe.workload.seed,
                &[("tpcb", w.mix.tpcb), ("select", w.mix.select)],
            ),
            w,
            config,
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        self.admin
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| DriverError::new(format!("postgres SELECT 1: {}", describe(&e))))
    }

    async fn setup(&self) -> Result<(), DriverError> {
        let fail = |what: &str, e: tokio_postgres::Error| {
            DriverError::new(format!("postgres {what}: {}", describe(&e)))
        };
        if self.w.schema == SchemaMode::Create {
            let scale = self.w.scale;
            let script = format!(
                "DROP TABLE IF EXISTS {TABLES};
                 CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100);
                 CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100);
                 CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
                 CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
                 INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, {scale}) b;
                 INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, {tellers}) t;
                 INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, {accounts}) a;
                 ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
                 ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
                 ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);
                 ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;",
                tellers = u64::from(scale) * 10,
                accounts = u64::from(scale) * 100_000,
            );
            self.admin
                .batch_execute(&script)
                .await
                .map_err(|e| fail("creating the pgbench tables", e))?;
        } else {
            let rows = self
                .admin
                .query_one("SELECT count(*) FROM pgbench_branches", &[])
                .await
                .map_err(|e| fail("schema: existing", e))?;
            let branches: i64 = rows.get(0);
            if branches != i64::from(self.w.scale) {
                return Err(DriverError::new(format!(
                    "postgres schema: existing: pgbench_branches has {branches} rows but workload.postgres.scale is {}",
                    self.w.scale
                )));
            }
        }
        // Open and prepare every pooled connection now, not during the first stage.
        for slot in &self.pool {
            let client = open(&self.config, "the pool").await?;
            let conn = prepare(client)
                .await
                .map_err(|e| fail("preparing statements", e))?;
            *slot.lock().await = Some(conn);
        }
        Ok(())
    }

    fn op(&self, seq: u64) -> &'static str {
        self.mix.op(seq)
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        let (op, mut rng) = self.mix.draw(call.seq);
        let (aid, bid, tid, delta) = draw(&mut rng, self.w.scale);
        let queued = std::time::Instant::now();
        let sent = std::sync::OnceLock::new();
        let run = async {
            let Ok(_permit) = self.permits.acquire().await else {
                return Exchange::start(op, 0).finish(Some(error_class::CANCELLED));
            };
            let index = self.free.lock().ok().and_then(|mut f| f.pop()).unwrap_or(0);
            let slot = self.pool[index].lock().await;
            let mut x = Exchange::start(op, 0);
            let _ = sent.set(x.sent);
            let result = match slot.as_ref() {
                None => Err(None),
                Some(c) if op == "select" => c
                    .client
                    .query_opt(&c.select_account, &[&aid])
                    .await
                    .map(|_| ())
                    .map_err(Some),
                Some(c) => tpcb(c, aid, bid, tid, delta).await.map_err(Some),
            };
            drop(slot);
            if let Ok(mut f) = self.free.lock() {
                f.push(index);
            }
            x = x.finish(match &result {
                Ok(()) => None,
                Err(Some(e)) => Some(classify(e)),
                Err(None) => Some(error_class::CONNECT),
            });
            if x.error.is_none() {
                x.first_byte = Some(x.end);
            }
            x
        };
        match tokio::time::timeout(call.timeout, run).await {
            Ok(x) => x,
            Err(_) => {
                let mut x = Exchange::start(op, 0);
                x.sent = sent.get().copied().unwrap_or(queued);
                x.finish(Some(error_class::TIMEOUT))
            }
        }
    }

    async fn identity(&self) -> super::Identity {
        let version = self
            .admin
            .query_one("SHOW server_version", &[])
            .await
            .ok()
            .map(|r| format!("postgresql {}", r.get::<_, String>(0)));
        super::Identity {
            version,
            models: Vec::new(),
        }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        if self.w.teardown && self.w.schema == SchemaMode::Create {
            self.admin
                .batch_execute(&format!("DROP TABLE IF EXISTS {TABLES}"))
                .await
                .map_err(|e| DriverError::new(format!("postgres teardown: {}", describe(&e))))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_variables_stay_in_their_ranges() {
        let mut rng = crate::driver::rng_for(1, 1);
        for _ in 0..10_000 {
            let (aid, bid, tid, delta) = draw(&mut rng, 2);
            assert!((1..=200_000).contains(&aid));
            assert!((1..=2).contains(&bid));
            assert!((1..=20).contains(&tid));
            assert!((-5000..=5000).contains(&delta));
        }
    }
}
