//! `chunks.parquet`, schema `aifb.chunks/1` (optional, `monitoring.chunks`): one row per
//! streamed content chunk of every LLM request, for inter-token analysis.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `request_id` | str | the request (`requests.parquet` `request_id`) |
//! | `t` | ts(ns, UTC) | when the chunk was read |
//! | `tokens` | u32 null | output tokens in it, when the server counts them per chunk |
//! | `answer` | bool | it carried answer output (content or a tool call), not reasoning only |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::parquet_util::{self, RowWriter, column, utc};

/// Schema name and version stored in the footer.
pub const SCHEMA_NAME: &str = "aifb.chunks/1";

/// One streamed chunk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkRecord {
    /// The request it belongs to.
    pub request_id: String,
    /// When it was read (Unix ns).
    pub t: i64,
    /// Output tokens in it, when the server counts them per chunk.
    pub tokens: Option<u32>,
    /// Answer output rather than reasoning only.
    pub answer: bool,
}

/// The Arrow schema of `aifb.chunks/1`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, utc()), false),
        Field::new("tokens", DataType::UInt32, true),
        Field::new("answer", DataType::Boolean, false),
    ]))
}

fn to_batch(rows: &[ChunkRecord]) -> Result<RecordBatch, String> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.request_id.as_str()),
        )),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.t))
                .with_timezone_opt(utc()),
        ),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.tokens).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.answer).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())
}

/// Streams chunk rows into `chunks.parquet`, one row group per 64 Ki rows.
pub type ChunkWriter = RowWriter<ChunkRecord>;

impl RowWriter<ChunkRecord> {
    /// Creates the file.
    pub fn create(path: &Path) -> Result<Self, String> {
        RowWriter::open(path, schema(), SCHEMA_NAME, 65_536, &["t"], to_batch)
    }
}

/// Reads every row of a `chunks.parquet` file, checking its schema name.
pub fn read(path: &Path) -> Result<Vec<ChunkRecord>, String> {
    let opened = parquet_util::open_reader(path, SCHEMA_NAME)?;
    let mut out = Vec::new();
    for b in &opened.batches {
        let ids: &StringArray = column(b, "request_id", path)?;
        let t: &TimestampNanosecondArray = column(b, "t", path)?;
        let tokens: &UInt32Array = column(b, "tokens", path)?;
        let answer: &BooleanArray = column(b, "answer", path)?;
        for i in 0..b.num_rows() {
            out.push(ChunkRecord {
                request_id: ids.value(i).to_string(),
                t: t.value(i),
                tokens: (!tokens.is_null(i)).then(|| tokens.value(i)),
                answer: answer.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_the_schema_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chunks.parquet");
        let rows = vec![
            ChunkRecord {
                request_id: "r-1".into(),
                t: 10,
                tokens: Some(3),
                answer: false,
            },
            ChunkRecord {
                request_id: "r-1".into(),
                t: 25,
                tokens: None,
                answer: true,
            },
        ];
        let mut w = ChunkWriter::create(&p).unwrap();
        w.extend(rows.clone()).unwrap();
        assert_eq!(w.finish(Some("{}")).unwrap(), 2);
        assert_eq!(read(&p).unwrap(), rows);
        let req = dir.path().join("requests.parquet");
        crate::requests::RequestWriter::create(&req)
            .unwrap()
            .finish(None)
            .unwrap();
        assert!(read(&req).unwrap_err().contains("aifb.chunks/1"));
    }
}
