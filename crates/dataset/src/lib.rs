//! The dataset contract and what checks data against it: the spec (the
//! user's TOML: columns, expectations, features, models, gates), the
//! expression language of derived features, streaming CSV to typed Arrow
//! chunks, validation with Great Expectations semantics and its HTML data
//! docs, and the import of GE suites.
//!
//! Layers, each importing only those before it: `schema` (column types,
//! literals, cells that did not parse) → `expr` → the building blocks of
//! validation and of the GE import (`validate::{report, columns, hashing,
//! value_sets, outside, numeric, distinct, accumulator}`, `ge_import::kwargs`)
//! → `expectations` (one home per expectation: arguments, checks, accumulator,
//! GE mapping) → `spec` → `table` → {`validate` (the engine), `ge_import`,
//! `validation_html`}. Nothing here talks to the bus, the registry or the
//! artifact store, and nothing is async; the one I/O of its own is
//! validation's spill of uniqueness fingerprints to temporary files (in the
//! system temporary directory) once they outgrow memory.
#![forbid(unsafe_code)]

pub mod expectations;
pub mod expr;
pub mod ge_import;
pub mod html;
pub mod labels;
pub mod schema;
pub mod spec;
pub mod table;
pub mod validate;
pub mod validation_html;
