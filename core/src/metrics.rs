//! `metrics.parquet`, schema `aifb.metrics/1`: scraped time series in long format, one row
//! per sample: `t` Timestamp(ms, UTC), `source`, `metric`, `labels` Map<str,str>, `value`.
//! Histograms are stored as Prometheus stores them (`_bucket` with `le`, `_sum`, `_count`).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{MapBuilder, MapFieldNames, StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, Float64Array, MapArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::parquet_util::{self, RowWriter, column, str_column, utc};

/// Schema name and version stored in the footer.
pub const SCHEMA_NAME: &str = "aifb.metrics/1";

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Unix milliseconds of the scrape.
    pub t_ms: i64,
    /// `exporter`, `loadgen`, `service` or `prometheus`.
    pub source: String,
    /// Metric name as exposed (`_bucket`, `_sum`, `_count`, `_total` included).
    pub metric: String,
    /// Labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl MetricSample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn map_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

fn labels_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The Arrow schema of `aifb.metrics/1`.
pub fn schema() -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, utc()),
            false,
        ),
        Field::new("source", dict.clone(), false),
        Field::new("metric", dict, false),
        Field::new("labels", labels_type(), false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// Builds a record batch from samples.
pub fn to_batch(rows: &[MetricSample]) -> Result<RecordBatch, String> {
    let mut source = StringDictionaryBuilder::<Int32Type>::new();
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut labels = MapBuilder::new(
        Some(map_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
    .with_values_field(Arc::new(Field::new("value", DataType::Utf8, true)));
    for r in rows {
        source.append_value(&r.source);
        metric.append_value(&r.metric);
        for (k, v) in &r.labels {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true).map_err(|e| e.to_string())?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.t_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(source.finish()),
        Arc::new(metric.finish()),
        Arc::new(labels.finish()),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())
}

/// Streams samples into `metrics.parquet`, one row group per 64 Ki samples.
pub type MetricsWriter = RowWriter<MetricSample>;

impl RowWriter<MetricSample> {
    /// Creates the file.
    pub fn create(path: &Path) -> Result<Self, String> {
        RowWriter::open(path, schema(), SCHEMA_NAME, 65_536, &[], to_batch)
    }
}

/// Reads every sample of a `metrics.parquet` file.
pub fn read(path: &Path) -> Result<Vec<MetricSample>, String> {
    let opened = parquet_util::open_reader(path, SCHEMA_NAME)?;
    let mut out = Vec::new();
    for b in &opened.batches {
        let t: &TimestampMillisecondArray = column(b, "t", path)?;
        let source = str_column(b, "source", path)?;
        let metric = str_column(b, "metric", path)?;
        let labels: &MapArray = column(b, "labels", path)?;
        let value: &Float64Array = column(b, "value", path)?;
        let keys = labels
            .keys()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| format!("{}: labels keys are not strings", path.display()))?;
        let vals = labels
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| format!("{}: labels values are not strings", path.display()))?;
        let offsets = labels.value_offsets();
        for i in 0..b.num_rows() {
            let (lo, hi) = (offsets[i] as usize, offsets[i + 1] as usize);
            let labels = (lo..hi)
                .map(|j| {
                    (
                        keys.value(j).to_string(),
                        if vals.is_null(j) {
                            String::new()
                        } else {
                            vals.value(j).to_string()
                        },
                    )
                })
                .collect();
            out.push(MetricSample {
                t_ms: t.value(i),
                source: source.get(i).unwrap_or_default().to_string(),
                metric: metric.get(i).unwrap_or_default().to_string(),
                labels,
                value: value.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.parquet");
        let mut w = MetricsWriter::create(&p).unwrap();
        let samples = vec![
            MetricSample {
                t_ms: 5,
                source: "exporter".into(),
                metric: "up".into(),
                labels: vec![],
                value: 1.0,
            },
            MetricSample {
                t_ms: 6,
                source: "loadgen".into(),
                metric: "aifb_loadgen_ttft_seconds_bucket".into(),
                labels: vec![("le".into(), "+Inf".into()), ("op".into(), "chat".into())],
                value: 3.0,
            },
        ];
        w.extend(samples.clone()).unwrap();
        assert_eq!(w.finish(None).unwrap(), 2);
        assert_eq!(read(&p).unwrap(), samples);
        assert_eq!(samples[1].label("le"), Some("+Inf"));
    }
}
