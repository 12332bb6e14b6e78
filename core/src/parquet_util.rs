//! Shared Parquet plumbing: writer properties, footer metadata, the streaming row writer
//! behind both file kinds, and typed column access.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// Footer key holding the schema name and version, e.g. `aifb.requests/1`.
pub const SCHEMA_KEY: &str = "aifb.schema";
/// Footer key holding the run manifest (run.json content).
pub const RUN_KEY: &str = "aifb.run";

/// Opens a writer: zstd level 1 (on request rows its files are about 1 % larger than
/// level 3's for about 12 % less encoding CPU, and the loadgen encodes while it
/// measures); dictionary encoding everywhere but in the `unique` columns, where every
/// value differs and a dictionary only costs hashing before it is abandoned (on request
/// rows, leaving it out there took 35 % off the encoding CPU and 45 % off the size).
fn open_writer(
    path: &Path,
    schema: SchemaRef,
    schema_name: &str,
    unique: &[&str],
) -> Result<ArrowWriter<File>, String> {
    let file = File::create(path).map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_KEY.to_string(),
            schema_name.to_string(),
        )]));
    for c in unique {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    let props = props.build();
    ArrowWriter::try_new(file, schema, Some(props))
        .map_err(|e| format!("{}: cannot write Parquet: {e}", path.display()))
}

/// An opened aifb Parquet file: its batches and footer metadata.
pub(crate) struct Opened {
    pub batches: Vec<RecordBatch>,
    pub run: Option<String>,
}

/// Opens an aifb Parquet file: checks its schema name and returns the reader builder and
/// the run manifest JSON from its footer.
pub(crate) fn open_checked(
    path: &Path,
    schema_name: &str,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, Option<String>), String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |key: &str| {
        kv.iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.clone())
    };
    match get(SCHEMA_KEY) {
        Some(s) if s == schema_name => {}
        Some(other) => {
            return Err(format!(
                "{shown}: schema is {other}, expected {schema_name}"
            ));
        }
        None => {
            return Err(format!(
                "{shown}: not an aifb file (no {SCHEMA_KEY} in the footer; expected {schema_name})"
            ));
        }
    }
    Ok((builder, get(RUN_KEY)))
}

pub(crate) fn open_reader(path: &Path, schema_name: &str) -> Result<Opened, String> {
    let shown = path.display();
    let (builder, run) = open_checked(path, schema_name)?;
    let reader = builder.build().map_err(|e| format!("{shown}: {e}"))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| format!("{shown}: corrupt data: {e}"))?);
    }
    Ok(Opened { batches, run })
}

pub(crate) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    file: &Path,
) -> Result<&'a T, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("{}: column {name} is missing", file.display()))?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        format!(
            "{}: column {name} has type {}",
            file.display(),
            col.data_type()
        )
    })
}

/// A string column that may be dictionary-encoded or plain.
#[doc(hidden)]
pub enum StrColumn<'a> {
    Dict(&'a DictionaryArray<Int32Type>, &'a StringArray),
    Plain(&'a StringArray),
}

impl StrColumn<'_> {
    /// The value of row `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            StrColumn::Dict(d, values) => {
                if d.is_null(i) {
                    None
                } else {
                    Some(values.value(d.keys().value(i) as usize))
                }
            }
            StrColumn::Plain(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

pub(crate) fn str_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    file: &Path,
) -> Result<StrColumn<'a>, String> {
    let col: &'a ArrayRef = batch
        .column_by_name(name)
        .ok_or_else(|| format!("{}: column {name} is missing", file.display()))?;
    let wrong = || {
        format!(
            "{}: column {name} has type {}, expected a string",
            file.display(),
            col.data_type()
        )
    };
    match col.data_type() {
        DataType::Utf8 => Ok(StrColumn::Plain(
            col.as_any().downcast_ref().ok_or_else(wrong)?,
        )),
        DataType::Dictionary(_, _) => {
            let d: &DictionaryArray<Int32Type> = col.as_any().downcast_ref().ok_or_else(wrong)?;
            let values: &StringArray = d.values().as_any().downcast_ref().ok_or_else(wrong)?;
            Ok(StrColumn::Dict(d, values))
        }
        _ => Err(wrong()),
    }
}

pub(crate) fn utc() -> Option<Arc<str>> {
    Some(Arc::from("UTC"))
}

/// A streaming writer of typed rows: rows are buffered, turned into a record batch and
/// written as one row group every `row_group` rows; [`RowWriter::finish`] adds the run
/// manifest to the footer and closes the file.
pub struct RowWriter<R> {
    writer: ArrowWriter<File>,
    pending: Vec<R>,
    rows: u64,
    row_group: usize,
    to_batch: fn(&[R]) -> Result<RecordBatch, String>,
    path: std::path::PathBuf,
}

impl<R> RowWriter<R> {
    pub(crate) fn open(
        path: &Path,
        schema: SchemaRef,
        schema_name: &str,
        row_group: usize,
        unique: &[&str],
        to_batch: fn(&[R]) -> Result<RecordBatch, String>,
    ) -> Result<Self, String> {
        Ok(Self {
            writer: open_writer(path, schema, schema_name, unique)?,
            pending: Vec::new(),
            rows: 0,
            row_group,
            to_batch,
            path: path.to_path_buf(),
        })
    }

    /// Adds a row.
    pub fn push(&mut self, row: R) -> Result<(), String> {
        self.extend(std::iter::once(row))
    }

    /// Adds rows.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = R>) -> Result<(), String> {
        let before = self.pending.len();
        self.pending.extend(rows);
        self.rows += (self.pending.len() - before) as u64;
        if self.pending.len() >= self.row_group {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the buffered rows as a row group.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.write_group(&pending)
    }

    /// Writes rows the caller keeps (after any buffered ones) as one row group.
    pub fn write_rows(&mut self, rows: &[R]) -> Result<(), String> {
        self.flush()?;
        self.rows += rows.len() as u64;
        self.write_group(rows)
    }

    fn write_group(&mut self, rows: &[R]) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = (self.to_batch)(rows)?;
        let shown = self.path.display();
        self.writer
            .write(&batch)
            .map_err(|e| format!("{shown}: {e}"))?;
        self.writer.flush().map_err(|e| format!("{shown}: {e}"))
    }

    /// Writes the remaining rows and the footer (with the run manifest when given);
    /// returns the number of rows.
    pub fn finish(mut self, manifest_json: Option<&str>) -> Result<u64, String> {
        self.flush()?;
        if let Some(m) = manifest_json {
            self.writer
                .append_key_value_metadata(KeyValue::new(RUN_KEY.to_string(), m.to_string()));
        }
        let shown = self.path.display().to_string();
        self.writer.close().map_err(|e| format!("{shown}: {e}"))?;
        Ok(self.rows)
    }
}
