//! `requests.parquet`, schema `aifb.requests/1`: one row per finished or failed request.
//!
//! Timestamps are `Timestamp(ns, UTC)`. The run manifest is stored in the footer under
//! `aifb.run`, so one file describes itself.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::parquet_util::{self, RowWriter, column, str_column, utc};

/// Schema name and version stored in the footer.
pub const SCHEMA_NAME: &str = "aifb.requests/1";

/// Error classes of failed requests.
pub mod error_class {
    /// No response within the timeout.
    pub const TIMEOUT: &str = "timeout";
    /// Could not connect.
    pub const CONNECT: &str = "connect";
    /// Connection reset or closed mid-response.
    pub const RESET: &str = "reset";
    /// HTTP 4xx.
    pub const HTTP_4XX: &str = "http_4xx";
    /// HTTP 5xx.
    pub const HTTP_5XX: &str = "http_5xx";
    /// Server pushed back (HTTP 429/503 busy).
    pub const BACKPRESSURE: &str = "backpressure";
    /// Response did not follow the protocol.
    pub const PROTOCOL: &str = "protocol";
    /// Stream ended without a finish reason.
    pub const TRUNCATED: &str = "truncated";
    /// Stopped by the run ending (signal or stage end).
    pub const CANCELLED: &str = "cancelled";
    /// A non-HTTP server answered with an error (Redis error reply, PostgreSQL error
    /// such as a serialization failure).
    pub const SERVER: &str = "server";
}

/// One request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestRecord {
    /// Index of the load level in the sweep.
    pub stage: u32,
    /// Closed loop: users in this stage.
    pub concurrency: Option<u32>,
    /// Open loop: offered requests/s in this stage.
    pub rate: Option<f64>,
    /// `warmup`, `measure` or `cooldown`.
    pub phase: &'static str,
    /// Shard or node that sent it.
    pub client: String,
    /// User or worker index.
    pub worker: u32,
    /// Operation, e.g. `chat`.
    pub op: &'static str,
    /// When the request should have started (Unix ns).
    pub t_intended: i64,
    /// When it was written to the socket.
    pub t_sent: i64,
    /// First response byte.
    pub t_first_byte: Option<i64>,
    /// First chunk carrying content, reasoning or tool-call output.
    pub t_first_token: Option<i64>,
    /// Last byte or error.
    pub t_end: i64,
    /// Succeeded.
    pub ok: bool,
    /// Protocol status (HTTP).
    pub status: Option<u16>,
    /// Error class (see [`error_class`]).
    pub error: Option<&'static str>,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// Prompt tokens (server usage preferred).
    pub prompt_tokens: Option<u32>,
    /// Output tokens (server usage preferred).
    pub output_tokens: Option<u32>,
    /// Streamed chunks received.
    pub chunks: Option<u32>,
    /// Request id, sent as `x-request-id`.
    pub request_id: String,
}

/// A request read back from a file (string columns owned).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestRow {
    /// See [`RequestRecord::stage`].
    pub stage: u32,
    /// See [`RequestRecord::concurrency`].
    pub concurrency: Option<u32>,
    /// See [`RequestRecord::rate`].
    pub rate: Option<f64>,
    /// See [`RequestRecord::phase`].
    pub phase: String,
    /// See [`RequestRecord::client`].
    pub client: String,
    /// See [`RequestRecord::worker`].
    pub worker: u32,
    /// See [`RequestRecord::op`].
    pub op: String,
    /// See [`RequestRecord::t_intended`].
    pub t_intended: i64,
    /// See [`RequestRecord::t_sent`].
    pub t_sent: i64,
    /// See [`RequestRecord::t_first_byte`].
    pub t_first_byte: Option<i64>,
    /// See [`RequestRecord::t_first_token`].
    pub t_first_token: Option<i64>,
    /// See [`RequestRecord::t_end`].
    pub t_end: i64,
    /// See [`RequestRecord::ok`].
    pub ok: bool,
    /// See [`RequestRecord::status`].
    pub status: Option<u16>,
    /// See [`RequestRecord::error`].
    pub error: Option<String>,
    /// See [`RequestRecord::bytes_sent`].
    pub bytes_sent: u64,
    /// See [`RequestRecord::bytes_received`].
    pub bytes_received: u64,
    /// See [`RequestRecord::prompt_tokens`].
    pub prompt_tokens: Option<u32>,
    /// See [`RequestRecord::output_tokens`].
    pub output_tokens: Option<u32>,
    /// See [`RequestRecord::chunks`].
    pub chunks: Option<u32>,
    /// See [`RequestRecord::request_id`].
    pub request_id: String,
}

impl RequestRow {
    /// Service latency in seconds: `t_end − t_sent`.
    pub fn latency_s(&self) -> f64 {
        (self.t_end - self.t_sent) as f64 / 1e9
    }
    /// Response time in seconds, from the intended start (no coordinated omission).
    pub fn response_time_s(&self) -> f64 {
        (self.t_end - self.t_intended) as f64 / 1e9
    }
    /// Time to first token in seconds: `t_first_token − t_sent`.
    pub fn ttft_s(&self) -> Option<f64> {
        self.t_first_token.map(|t| (t - self.t_sent) as f64 / 1e9)
    }
    /// Time per output token after the first, in seconds.
    pub fn tpot_s(&self) -> Option<f64> {
        let n = self.output_tokens?;
        let first = self.t_first_token?;
        (n > 1).then(|| (self.t_end - first) as f64 / 1e9 / f64::from(n - 1))
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, utc())
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The Arrow schema of `aifb.requests/1`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stage", DataType::UInt32, false),
        Field::new("concurrency", DataType::UInt32, true),
        Field::new("rate", DataType::Float64, true),
        Field::new("phase", dict(), false),
        Field::new("client", dict(), false),
        Field::new("worker", DataType::UInt32, false),
        Field::new("op", dict(), false),
        Field::new("t_intended", ts(), false),
        Field::new("t_sent", ts(), false),
        Field::new("t_first_byte", ts(), true),
        Field::new("t_first_token", ts(), true),
        Field::new("t_end", ts(), false),
        Field::new("ok", DataType::Boolean, false),
        Field::new("status", DataType::UInt16, true),
        Field::new("error", dict(), true),
        Field::new("bytes_sent", DataType::UInt64, false),
        Field::new("bytes_received", DataType::UInt64, false),
        Field::new("prompt_tokens", DataType::UInt32, true),
        Field::new("output_tokens", DataType::UInt32, true),
        Field::new("chunks", DataType::UInt32, true),
        Field::new("request_id", DataType::Utf8, false),
    ]))
}

fn dict_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    for v in values {
        match v {
            Some(s) => {
                b.append_value(s);
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

fn ts_array(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(values.collect::<Vec<_>>()).with_timezone("UTC"))
}

/// Builds a record batch from records.
pub fn to_batch(rows: &[RequestRecord]) -> Result<RecordBatch, String> {
    let mut ids = StringBuilder::new();
    for r in rows {
        ids.append_value(&r.request_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.stage))),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.concurrency).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.rate).collect::<Vec<_>>(),
        )),
        dict_array(rows.iter().map(|r| Some(r.phase))),
        dict_array(rows.iter().map(|r| Some(r.client.as_str()))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.worker))),
        dict_array(rows.iter().map(|r| Some(r.op))),
        ts_array(rows.iter().map(|r| Some(r.t_intended))),
        ts_array(rows.iter().map(|r| Some(r.t_sent))),
        ts_array(rows.iter().map(|r| r.t_first_byte)),
        ts_array(rows.iter().map(|r| r.t_first_token)),
        ts_array(rows.iter().map(|r| Some(r.t_end))),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.ok).collect::<Vec<_>>(),
        )),
        Arc::new(UInt16Array::from(
            rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        )),
        dict_array(rows.iter().map(|r| r.error)),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.bytes_sent),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.bytes_received),
        )),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.output_tokens).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.chunks).collect::<Vec<_>>(),
        )),
        Arc::new(ids.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())
}

/// Streams request rows into `requests.parquet`, one row group per 16 Ki rows.
pub type RequestWriter = RowWriter<RequestRecord>;

impl RowWriter<RequestRecord> {
    /// Creates the file.
    pub fn create(path: &Path) -> Result<Self, String> {
        RowWriter::open(
            path,
            schema(),
            SCHEMA_NAME,
            16_384,
            &[
                "t_intended",
                "t_sent",
                "t_first_byte",
                "t_first_token",
                "t_end",
                "request_id",
            ],
            to_batch,
        )
    }
}

/// The rows of a `requests.parquet` file and its manifest (footer `aifb.run`).
#[derive(Debug, Clone, Default)]
pub struct RequestsFile {
    /// All rows in file order.
    pub rows: Vec<RequestRow>,
    /// The run manifest JSON from the footer, if present.
    pub manifest: Option<String>,
}

/// Reads a `requests.parquet` file, checking its schema name.
pub fn read(path: &Path) -> Result<RequestsFile, String> {
    let opened = parquet_util::open_reader(path, SCHEMA_NAME)?;
    let mut rows = Vec::new();
    for b in &opened.batches {
        let stage: &UInt32Array = column(b, "stage", path)?;
        let conc: &UInt32Array = column(b, "concurrency", path)?;
        let rate: &Float64Array = column(b, "rate", path)?;
        let phase = str_column(b, "phase", path)?;
        let client = str_column(b, "client", path)?;
        let worker: &UInt32Array = column(b, "worker", path)?;
        let op = str_column(b, "op", path)?;
        let t_int: &TimestampNanosecondArray = column(b, "t_intended", path)?;
        let t_sent: &TimestampNanosecondArray = column(b, "t_sent", path)?;
        let t_fb: &TimestampNanosecondArray = column(b, "t_first_byte", path)?;
        let t_ft: &TimestampNanosecondArray = column(b, "t_first_token", path)?;
        let t_end: &TimestampNanosecondArray = column(b, "t_end", path)?;
        let ok: &BooleanArray = column(b, "ok", path)?;
        let status: &UInt16Array = column(b, "status", path)?;
        let error = str_column(b, "error", path)?;
        let bs: &UInt64Array = column(b, "bytes_sent", path)?;
        let br: &UInt64Array = column(b, "bytes_received", path)?;
        let pt: &UInt32Array = column(b, "prompt_tokens", path)?;
        let ot: &UInt32Array = column(b, "output_tokens", path)?;
        let ch: &UInt32Array = column(b, "chunks", path)?;
        let id: &StringArray = column(b, "request_id", path)?;
        let opt_u32 = |a: &UInt32Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        let opt_ts = |a: &TimestampNanosecondArray, i: usize| (!a.is_null(i)).then(|| a.value(i));
        for i in 0..b.num_rows() {
            rows.push(RequestRow {
                stage: stage.value(i),
                concurrency: opt_u32(conc, i),
                rate: (!rate.is_null(i)).then(|| rate.value(i)),
                phase: phase.get(i).unwrap_or_default().to_string(),
                client: client.get(i).unwrap_or_default().to_string(),
                worker: worker.value(i),
                op: op.get(i).unwrap_or_default().to_string(),
                t_intended: t_int.value(i),
                t_sent: t_sent.value(i),
                t_first_byte: opt_ts(t_fb, i),
                t_first_token: opt_ts(t_ft, i),
                t_end: t_end.value(i),
                ok: ok.value(i),
                status: (!status.is_null(i)).then(|| status.value(i)),
                error: error.get(i).map(str::to_string),
                bytes_sent: bs.value(i),
                bytes_received: br.value(i),
                prompt_tokens: opt_u32(pt, i),
                output_tokens: opt_u32(ot, i),
                chunks: opt_u32(ch, i),
                request_id: id.value(i).to_string(),
            });
        }
    }
    Ok(RequestsFile {
        rows,
        manifest: opened.run,
    })
}

/// The columns of one batch that aggregations need, typed.
pub struct Columns<'a> {
    /// `stage`.
    pub stage: &'a UInt32Array,
    /// `ok`.
    pub ok: &'a BooleanArray,
    /// `t_intended`.
    pub t_intended: &'a TimestampNanosecondArray,
    /// `t_sent`.
    pub t_sent: &'a TimestampNanosecondArray,
    /// `t_first_token`.
    pub t_first_token: &'a TimestampNanosecondArray,
    /// `t_end`.
    pub t_end: &'a TimestampNanosecondArray,
    /// `output_tokens`.
    pub output_tokens: &'a UInt32Array,
    phase: parquet_util::StrColumn<'a>,
    error: parquet_util::StrColumn<'a>,
}

impl Columns<'_> {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.stage.len()
    }
    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.stage.is_empty()
    }
    /// `phase` of row `i`.
    pub fn phase(&self, i: usize) -> Option<&str> {
        self.phase.get(i)
    }
    /// `error` of row `i`.
    pub fn error(&self, i: usize) -> Option<&str> {
        self.error.get(i)
    }
}

/// The columns [`Columns`] reads; the others are not decoded.
const SCAN_COLUMNS: [&str; 9] = [
    "stage",
    "phase",
    "ok",
    "error",
    "t_intended",
    "t_sent",
    "t_first_token",
    "t_end",
    "output_tokens",
];

/// Streams a `requests.parquet` file batch by batch, decoding only the columns
/// aggregations need, so memory stays bounded whatever the file's size. Calls `f` for each
/// batch; returns the manifest JSON from the footer.
pub fn scan(
    path: &Path,
    mut f: impl FnMut(&Columns<'_>) -> Result<(), String>,
) -> Result<Option<String>, String> {
    let shown = path.display();
    let (builder, run) = parquet_util::open_checked(path, SCHEMA_NAME)?;
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), SCAN_COLUMNS);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| format!("{shown}: {e}"))?;
    for batch in reader {
        let b = batch.map_err(|e| format!("{shown}: corrupt data: {e}"))?;
        let cols = Columns {
            stage: column(&b, "stage", path)?,
            ok: column(&b, "ok", path)?,
            t_intended: column(&b, "t_intended", path)?,
            t_sent: column(&b, "t_sent", path)?,
            t_first_token: column(&b, "t_first_token", path)?,
            t_end: column(&b, "t_end", path)?,
            output_tokens: column(&b, "output_tokens", path)?,
            phase: str_column(&b, "phase", path)?,
            error: str_column(&b, "error", path)?,
        };
        f(&cols)?;
    }
    Ok(run)
}

/// The run manifest JSON from a requests file's footer, without reading its data.
pub fn scan_footer(path: &Path) -> Result<Option<String>, String> {
    parquet_util::open_checked(path, SCHEMA_NAME).map(|(_, run)| run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32, ok: bool) -> RequestRecord {
        RequestRecord {
            stage: i % 3,
            concurrency: Some(4),
            rate: None,
            phase: "measure",
            client: "local".into(),
            worker: i,
            op: "chat",
            t_intended: 1_000 + i64::from(i),
            t_sent: 2_000 + i64::from(i),
            t_first_byte: Some(3_000),
            t_first_token: ok.then_some(4_000),
            t_end: 9_000,
            ok,
            status: Some(if ok { 200 } else { 503 }),
            error: (!ok).then_some(error_class::HTTP_5XX),
            bytes_sent: 10,
            bytes_received: 20,
            prompt_tokens: Some(5),
            output_tokens: ok.then_some(7),
            chunks: Some(8),
            request_id: format!("r{i}"),
        }
    }

    #[test]
    fn round_trip_with_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("requests.parquet");
        let mut w = RequestWriter::create(&p).unwrap();
        let written: Vec<_> = (0..50).map(|i| record(i, i % 5 != 0)).collect();
        for r in &written {
            w.push(r.clone()).unwrap();
        }
        assert_eq!(w.finish(Some("{\"id\":\"x\"}")).unwrap(), 50);
        let back = read(&p).unwrap();
        assert_eq!(back.manifest.as_deref(), Some("{\"id\":\"x\"}"));
        assert_eq!(back.rows.len(), 50);
        for (a, b) in written.iter().zip(&back.rows) {
            assert_eq!(a.stage, b.stage);
            assert_eq!(a.error.map(str::to_string), b.error);
            assert_eq!(a.t_first_token, b.t_first_token);
            assert_eq!(a.output_tokens, b.output_tokens);
            assert_eq!(a.request_id, b.request_id);
            assert_eq!(a.phase, b.phase);
        }
        assert_eq!(back.rows[1].tpot_s(), Some(5_000.0 / 1e9 / 6.0));
    }

    #[test]
    fn rejects_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.parquet");
        crate::metrics::MetricsWriter::create(&p)
            .unwrap()
            .finish(None)
            .unwrap();
        let err = read(&p).unwrap_err();
        assert!(
            err.contains("schema is aifb.metrics/1, expected aifb.requests/1"),
            "{err}"
        );
        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet at all").unwrap();
        assert!(
            read(&junk)
                .unwrap_err()
                .contains("not a readable Parquet file")
        );
    }
}
