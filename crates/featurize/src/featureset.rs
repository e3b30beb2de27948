//! Feature sets: the encoded rows of one batch with entity ids, labels and the
//! train/holdout split, stored as Parquet so any tool (pandas, DuckDB, Spark) can
//! read what a model was trained on.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt8Array};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use crate::FeaturizeError as MlError;

/// Split marker values in the `__split` column.
pub const TRAIN: u8 = 0;
/// Holdout rows.
pub const HOLDOUT: u8 = 1;

/// An encoded feature set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// Feature names, in column order.
    pub names: Vec<String>,
    /// Entity id per row.
    pub entity: Vec<String>,
    /// Label per row (1.0 positive, 0.0 negative).
    pub label: Vec<f64>,
    /// [`TRAIN`] or [`HOLDOUT`] per row.
    pub split: Vec<u8>,
    /// Row-major features, `names.len()` per row.
    pub x: Vec<f64>,
}

impl FeatureSet {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.label.len()
    }

    /// Rows (and labels) of one split, row-major.
    pub fn split_rows(&self, which: u8) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
        let k = self.names.len();
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut idx = Vec::new();
        for (i, s) in self.split.iter().enumerate() {
            if *s == which {
                x.extend_from_slice(&self.x[i * k..(i + 1) * k]);
                y.push(self.label[i]);
                idx.push(i);
            }
        }
        (x, y, idx)
    }

    /// Parquet bytes: `__entity`, `__label`, `__split`, then one float column per feature.
    /// Written without timestamps or random ids, so the same set gives the same bytes.
    pub fn to_parquet(&self) -> Result<Bytes, MlError> {
        let k = self.names.len();
        let mut fields = vec![
            Field::new("__entity", DataType::Utf8, false),
            Field::new("__label", DataType::Float64, false),
            Field::new("__split", DataType::UInt8, false),
        ];
        fields.extend(
            self.names
                .iter()
                .map(|n| Field::new(n, DataType::Float64, false)),
        );
        let schema = Arc::new(Schema::new(fields));
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.entity.clone())),
            Arc::new(Float64Array::from(self.label.clone())),
            Arc::new(UInt8Array::from(self.split.clone())),
        ];
        for j in 0..k {
            let col: Vec<f64> = (0..self.rows()).map(|i| self.x[i * k + j]).collect();
            cols.push(Arc::new(Float64Array::from(col)));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| MlError::InvalidData(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_created_by("modelbus".to_string())
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))
            .map_err(|e| MlError::InvalidData(e.to_string()))?;
        w.write(&batch)
            .map_err(|e| MlError::InvalidData(e.to_string()))?;
        w.close().map_err(|e| MlError::InvalidData(e.to_string()))?;
        Ok(Bytes::from(buf))
    }

    /// Reads what [`FeatureSet::to_parquet`] wrote.
    pub fn from_parquet(bytes: Bytes) -> Result<Self, MlError> {
        let bad = |m: String| MlError::InvalidModel(format!("feature set: {m}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut out = FeatureSet {
            names: Vec::new(),
            entity: Vec::new(),
            label: Vec::new(),
            split: Vec::new(),
            x: Vec::new(),
        };
        let mut columns: Vec<Vec<f64>> = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let schema = batch.schema();
            if out.names.is_empty() {
                out.names = schema
                    .fields()
                    .iter()
                    .skip(3)
                    .map(|f| f.name().clone())
                    .collect();
                columns = vec![Vec::new(); out.names.len()];
            }
            let get = |i: usize| batch.column(i).clone();
            let ent = get(0);
            let ent = ent
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad("__entity is not text".into()))?;
            let lab = get(1);
            let lab = lab
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| bad("__label is not float".into()))?;
            let spl = get(2);
            let spl = spl
                .as_any()
                .downcast_ref::<UInt8Array>()
                .ok_or_else(|| bad("__split is not uint8".into()))?;
            for i in 0..batch.num_rows() {
                out.entity.push(ent.value(i).to_string());
                out.label.push(lab.value(i));
                out.split.push(spl.value(i));
            }
            for (j, col) in columns.iter_mut().enumerate() {
                let a = get(3 + j);
                let a = a
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(|| bad(format!("feature column {j} is not float")))?;
                col.extend((0..a.len()).map(|i| a.value(i)));
            }
        }
        let n = out.label.len();
        let k = out.names.len();
        out.x = vec![0.0; n * k];
        for (j, col) in columns.iter().enumerate() {
            for (i, v) in col.iter().enumerate() {
                out.x[i * k + j] = *v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_round_trip_is_exact_and_deterministic() {
        let fs = FeatureSet {
            names: vec!["a".into(), "b=x".into()],
            entity: vec!["e1".into(), "e2".into(), "e3".into()],
            label: vec![1.0, 0.0, 1.0],
            split: vec![TRAIN, HOLDOUT, TRAIN],
            x: vec![0.1, 1.0, 0.2, 0.0, f64::MAX, 1.0],
        };
        let a = fs.to_parquet().unwrap();
        assert_eq!(a, fs.to_parquet().unwrap());
        assert_eq!(FeatureSet::from_parquet(a).unwrap(), fs);
        let (x, y, idx) = fs.split_rows(TRAIN);
        assert_eq!(x, vec![0.1, 1.0, f64::MAX, 1.0]);
        assert_eq!(y, vec![1.0, 1.0]);
        assert_eq!(idx, vec![0, 2]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(FeatureSet::from_parquet(Bytes::from_static(b"not parquet")).is_err());
    }
}
