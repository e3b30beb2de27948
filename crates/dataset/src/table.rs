//! Streaming CSV to Arrow, typed by a dataset spec.
//!
//! The reader yields record batches of at most `chunk_rows` rows, so memory is
//! bounded by the chunk size whatever the file size. Structural problems (no
//! header, missing or unexpected columns, invalid UTF-8, ragged rows) stop the read
//! with an error naming the line and column; a cell that does not parse as its
//! column's type becomes null in Arrow and is reported, with its row, so the
//! validator can count it against the column's type.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::schema::ColumnType;
pub use crate::schema::{BadCell, SAMPLE};
use crate::spec::DatasetSpec;

/// A structural problem that stops reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TableError {
    /// Nothing at all in the file.
    #[error("the file is empty: expected a header row")]
    Empty,
    /// The header names the same column twice.
    #[error("the header names column {0:?} more than once")]
    DuplicateColumn(String),
    /// Declared columns are absent, or undeclared columns present.
    #[error("{}", header_message(.missing, .unexpected))]
    Columns {
        /// Declared columns not in the header.
        missing: Vec<String>,
        /// Header columns not declared (and extra columns not allowed).
        unexpected: Vec<String>,
    },
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8 at line {line}, column {column:?}")]
    Utf8 {
        /// 1-based line in the file.
        line: u64,
        /// Header name of the field.
        column: String,
    },
    /// A row with a different number of fields than the header.
    #[error("ragged row at line {line}: {found} fields where the header has {expected}")]
    Ragged {
        /// 1-based line in the file.
        line: u64,
        /// Fields in the header.
        expected: u64,
        /// Fields in the row.
        found: u64,
    },
    /// The CSV itself is malformed or could not be read.
    #[error("cannot read CSV{}: {message}", .line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Csv {
        /// Line, when known.
        line: Option<u64>,
        /// The parser's message.
        message: String,
    },
}

fn header_message(missing: &[String], unexpected: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing column(s) {missing:?}"));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "unexpected column(s) {unexpected:?} (set allow_extra_columns = true to accept them)"
        ));
    }
    parts.join("; ")
}

/// One chunk of typed rows.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Columns in the spec's declaration order.
    pub batch: RecordBatch,
    /// Data row number (1-based) of the chunk's first row.
    pub first_row: u64,
    /// Cells that failed to parse, per column: count and up to `SAMPLE` examples.
    pub bad_cells: Vec<(u64, Vec<BadCell>)>,
}

/// Arrow schema of a spec's declared columns (all nullable at the Arrow level).
pub fn arrow_schema(spec: &DatasetSpec) -> SchemaRef {
    Arc::new(Schema::new(
        spec.columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.ty), true))
            .collect::<Vec<_>>(),
    ))
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::String => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
    }
}

/// Parses a boolean cell: true/false, t/f, yes/no, y/n, 1/0 (case-insensitive).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(t: ColumnType, cap: usize) -> Self {
        match t {
            ColumnType::Int => Builder::Int(Int64Builder::with_capacity(cap)),
            ColumnType::Float => Builder::Float(Float64Builder::with_capacity(cap)),
            ColumnType::String => Builder::Str(StringBuilder::with_capacity(cap, cap * 8)),
            ColumnType::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
        }
    }

    fn null(&mut self) {
        match self {
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
        }
    }

    /// Appends a parsed value; false (and a null) when the text does not parse.
    fn push(&mut self, s: &str) -> bool {
        match self {
            Builder::Str(b) => {
                b.append_value(s);
                true
            }
            Builder::Int(b) => match s.trim().parse::<i64>() {
                Ok(v) => {
                    b.append_value(v);
                    true
                }
                Err(_) => {
                    b.append_null();
                    false
                }
            },
            Builder::Float(b) => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => {
                    b.append_value(v);
                    true
                }
                _ => {
                    b.append_null();
                    false
                }
            },
            Builder::Bool(b) => match parse_bool(s.trim()) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => {
                    b.append_null();
                    false
                }
            },
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Reads a CSV stream as typed Arrow chunks.
pub struct CsvChunks<R: Read> {
    reader: csv::Reader<R>,
    spec: Arc<DatasetSpec>,
    schema: SchemaRef,
    /// For each field of the file: the index of its declared column, or None (extra, ignored).
    mapping: Vec<Option<usize>>,
    header: Vec<String>,
    chunk_rows: usize,
    rows: u64,
    record: csv::StringRecord,
    nulls: NullMarkers,
    done: bool,
}

/// A spec's null markers and the longest one: most cells are longer and
/// skip the compare.
#[derive(Debug, Clone)]
pub struct NullMarkers {
    values: Vec<String>,
    max_len: usize,
}

impl NullMarkers {
    /// The markers of `null_values`.
    pub fn new(values: Vec<String>) -> Self {
        let max_len = values.iter().map(String::len).max().unwrap_or(0);
        Self { values, max_len }
    }

    /// Whether a field's text is one of the markers.
    pub fn is_null(&self, text: &str) -> bool {
        text.len() <= self.max_len && self.values.iter().any(|n| n == text)
    }
}

impl<R: Read> CsvChunks<R> {
    /// Reads and checks the header against the spec.
    pub fn new(input: R, spec: Arc<DatasetSpec>, chunk_rows: usize) -> Result<Self, TableError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(input);
        let raw = reader.byte_headers().map_err(csv_error)?.clone();
        if raw.is_empty() || (raw.len() == 1 && raw[0].is_empty()) {
            return Err(TableError::Empty);
        }
        let mut header = Vec::with_capacity(raw.len());
        for field in raw.iter() {
            let name = std::str::from_utf8(field).map_err(|_| TableError::Utf8 {
                line: 1,
                column: format!("(header field {})", header.len() + 1),
            })?;
            header.push(name.to_string());
        }
        let mut seen = BTreeSet::new();
        for h in &header {
            if !seen.insert(h.as_str()) {
                return Err(TableError::DuplicateColumn(h.clone()));
            }
        }
        let mapping: Vec<Option<usize>> = header
            .iter()
            .map(|h| spec.columns.iter().position(|c| &c.name == h))
            .collect();
        let missing: Vec<String> = spec
            .columns
            .iter()
            .filter(|c| !header.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        let unexpected: Vec<String> = if spec.allow_extra_columns {
            Vec::new()
        } else {
            header
                .iter()
                .zip(&mapping)
                .filter(|(_, m)| m.is_none())
                .map(|(h, _)| h.clone())
                .collect()
        };
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(TableError::Columns {
                missing,
                unexpected,
            });
        }
        let null_values = spec.null_values.clone();
        Ok(Self {
            reader,
            schema: arrow_schema(&spec),
            spec,
            mapping,
            header,
            chunk_rows: chunk_rows.max(1),
            rows: 0,
            record: csv::StringRecord::new(),
            nulls: NullMarkers::new(null_values),
            done: false,
        })
    }

    /// Header names, as in the file.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Arrow schema of the chunks.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Data rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Reads the next record into `self.record`; false at the end.
    fn read_one(&mut self) -> Result<bool, TableError> {
        if self.done {
            return Ok(false);
        }
        // One UTF-8 check per record (not per field): the reader validates
        // the whole record and names the field that is not UTF-8.
        match self.reader.read_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                Ok(false)
            }
            Ok(true) => {
                self.rows += 1;
                Ok(true)
            }
            Err(e) => {
                let header = &self.header;
                let rows = self.rows;
                Err(match e.kind() {
                    csv::ErrorKind::Utf8 { pos, err } => TableError::Utf8 {
                        line: pos.as_ref().map(|p| p.line()).unwrap_or(rows + 2),
                        column: header
                            .get(err.field())
                            .cloned()
                            .unwrap_or_else(|| format!("(field {})", err.field() + 1)),
                    },
                    _ => csv_error(e),
                })
            }
        }
    }

    /// The next record's fields in file order, for a reader that wants cells
    /// rather than Arrow chunks (no column is built); `Ok(None)` at the end.
    /// [`Self::mapping`] says which declared column each field is, and
    /// [`Self::null_markers`] which fields are nulls.
    pub fn next_record(&mut self) -> Result<Option<&csv::StringRecord>, TableError> {
        Ok(if self.read_one()? {
            Some(&self.record)
        } else {
            None
        })
    }

    /// For each field of the file: the index of its declared column in the
    /// spec, or None (an extra column, ignored).
    pub fn mapping(&self) -> &[Option<usize>] {
        &self.mapping
    }

    /// The spec's null markers, to tell a record's nulls.
    pub fn null_markers(&self) -> &NullMarkers {
        &self.nulls
    }

    /// The next chunk; `Ok(None)` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, TableError> {
        if self.done {
            return Ok(None);
        }
        let ncols = self.spec.columns.len();
        let mut builders: Vec<Builder> = self
            .spec
            .columns
            .iter()
            .map(|c| Builder::new(c.ty, self.chunk_rows.min(1 << 16)))
            .collect();
        let mut bad: Vec<(u64, Vec<BadCell>)> = vec![(0, Vec::new()); ncols];
        let first_row = self.rows + 1;
        let mut n = 0usize;
        while n < self.chunk_rows {
            if !self.read_one()? {
                break;
            }
            for (i, text) in self.record.iter().enumerate() {
                let Some(col) = self.mapping.get(i).copied().flatten() else {
                    continue;
                };
                if self.nulls.is_null(text) {
                    builders[col].null();
                } else if !builders[col].push(text) {
                    let (count, sample) = &mut bad[col];
                    *count += 1;
                    if sample.len() < SAMPLE {
                        sample.push(BadCell {
                            column: col,
                            row: self.rows,
                            value: text.chars().take(200).collect(),
                        });
                    }
                }
            }
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| TableError::Csv {
                line: None,
                message: e.to_string(),
            })?;
        Ok(Some(Chunk {
            batch,
            first_row,
            bad_cells: bad,
        }))
    }
}

fn csv_error(e: csv::Error) -> TableError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => TableError::Ragged {
            line: pos.map(|p| p.line()).or(line).unwrap_or(0),
            expected: expected_len,
            found: len,
        },
        csv::ErrorKind::Utf8 { pos, .. } => TableError::Utf8 {
            line: pos.map(|p| p.line()).or(line).unwrap_or(0),
            column: "(unknown)".into(),
        },
        // The reader's own error (an artifact that fails its digest check, a
        // broken pipe): its message, not the parser's debug dump.
        csv::ErrorKind::Io(e) => TableError::Csv {
            line,
            message: e.to_string(),
        },
        other => TableError::Csv {
            line,
            message: format!("{other:?}"),
        },
    }
}

/// Reads a whole CSV into memory as one list of chunks (training-sized data).
pub fn read_all<R: Read>(
    input: R,
    spec: Arc<DatasetSpec>,
    chunk_rows: usize,
) -> Result<Vec<Chunk>, TableError> {
    let mut r = CsvChunks::new(input, spec, chunk_rows)?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk()? {
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    fn spec() -> Arc<DatasetSpec> {
        let text = r#"name = "d"
entity_column = "id"
null_values = ["", "NA"]
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "x"
type = "float"
nullable = true
[[columns]]
name = "n"
type = "int"
[[columns]]
name = "y"
type = "int"
"#;
        Arc::new(DatasetSpec::parse(text, "t").unwrap().spec)
    }

    #[test]
    fn reads_typed_chunks_with_nulls_and_bad_cells() {
        let csv = "id,n,x,y\na,1,0.5,1\nb,2,NA,0\nc,zz,1e3,1\n";
        let mut r = CsvChunks::new(csv.as_bytes(), spec(), 2).unwrap();
        let c1 = r.next_chunk().unwrap().unwrap();
        assert_eq!(c1.batch.num_rows(), 2);
        assert_eq!(c1.first_row, 1);
        // Column order is the spec's, not the file's.
        assert_eq!(c1.batch.schema().field(1).name(), "x");
        assert_eq!(c1.batch.column(1).null_count(), 1);
        let c2 = r.next_chunk().unwrap().unwrap();
        assert_eq!(c2.first_row, 3);
        assert_eq!(c2.bad_cells[2].0, 1);
        assert_eq!(c2.bad_cells[2].1[0].row, 3);
        assert_eq!(c2.bad_cells[2].1[0].value, "zz");
        assert!(r.next_chunk().unwrap().is_none());
        assert_eq!(r.rows(), 3);
    }

    #[test]
    fn structural_errors_name_the_problem() {
        assert_eq!(
            CsvChunks::new(&b""[..], spec(), 10).err(),
            Some(TableError::Empty)
        );
        let e = CsvChunks::new(&b"id,x,y\n"[..], spec(), 10).err().unwrap();
        assert!(e.to_string().contains("missing column(s) [\"n\"]"), "{e}");
        let e = CsvChunks::new(&b"id,x,y,n,extra\n"[..], spec(), 10)
            .err()
            .unwrap();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = CsvChunks::new(&b"id,x,x,n,y\n"[..], spec(), 10)
            .err()
            .unwrap();
        assert_eq!(e, TableError::DuplicateColumn("x".into()));

        let mut r = CsvChunks::new(&b"id,x,n,y\na,1,1,1\nb,2,2\n"[..], spec(), 10).unwrap();
        let e = r.next_chunk().unwrap_err();
        assert_eq!(
            e,
            TableError::Ragged {
                line: 3,
                expected: 4,
                found: 3
            }
        );

        let mut r =
            CsvChunks::new(&b"id,x,n,y\na,1,1,1\n\xff\xfe,2,2,1\n"[..], spec(), 10).unwrap();
        let e = r.next_chunk().unwrap_err();
        assert_eq!(
            e,
            TableError::Utf8 {
                line: 3,
                column: "id".into()
            }
        );
    }

    #[test]
    fn reads_the_telco_file() {
        let text = include_str!("../../../config/datasets/telco-churn.toml");
        let spec = Arc::new(DatasetSpec::parse(text, "t").unwrap().spec);
        let f = std::fs::File::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap();
        let chunks = read_all(f, spec.clone(), 4096).unwrap();
        let rows: usize = chunks.iter().map(|c| c.batch.num_rows()).sum();
        assert_eq!(rows, 7043);
        let total_idx = spec
            .columns
            .iter()
            .position(|c| c.name == "TotalCharges")
            .unwrap();
        let nulls: usize = chunks
            .iter()
            .map(|c| c.batch.column(total_idx).null_count())
            .sum();
        assert_eq!(nulls, 11);
        assert!(
            chunks
                .iter()
                .all(|c| c.bad_cells.iter().all(|(n, _)| *n == 0))
        );
    }
}
