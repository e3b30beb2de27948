//! Distribution expectations: which distinct values a column holds, and how
//! far its distribution is from a reference (KL divergence).
//!
//! `expect_column_kl_divergence_to_be_less_than` computes KL(P ‖ Q) = Σ p·ln(p/q)
//! in nats, P the observed distribution of the non-null values over the reference
//! bins (numeric: `[e_i, e_{i+1})`, the last bin closed, plus a bucket below the
//! first edge and one above the last) or values (categorical: plus one bucket for
//! every other value), Q the reference weights normalised to sum to 1 (tails from
//! `tail_weights`, else 0). Buckets where p = 0 contribute nothing. A reference
//! weight of 0 (including the tails and the other-values bucket) is replaced by
//! [`KL_EPSILON`] = 1e-6 before renormalising, so observed mass where the
//! reference has none adds p·ln(p/ε) (about 13.8·p) instead of making the
//! divergence infinite. It passes when the divergence is at most `threshold`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Check, ColumnType, Kwargs, PathPart, Plan, PlanContext, Refusal, Scalar, Severity,
    value_set_fits_at,
};
use crate::ge_import::kwargs::scalar;
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally, pct};
use crate::validate::columns::each_f64;
use crate::validate::outside::{DISTINCT_OUTSIDE_CAP, Outside, distinct_values};
use crate::validate::value_sets::ValueSet;

arguments! {
    /// Every distinct non-null value is in the set (the observed value is the list of
    /// distinct values; not every value of the set has to appear).
    pub struct DistinctValuesInSet {
        column,
        /// Allowed values.
        pub value_set: Vec<Scalar>,
    }
}

impl Check for DistinctValuesInSet {
    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        value_set_fits_at(ty, &self.value_set, &self.column)
            .map_err(|r| Refusal::at("value_set", r))
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        let ty = columns.type_of(&self.column);
        Plan::Rows(Box::new(DistinctInSetAcc {
            column: columns.index(&self.column).unwrap_or_default(),
            values: self.value_set.clone(),
            set: ValueSet::new(ty, &self.value_set),
            seen: vec![false; self.value_set.len()],
            outside: Outside::new(ty),
            overflow: false,
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            column: k.required_string("column")?,
            value_set: k.scalars("value_set")?,
            severity,
        })
    }

    fn check_ge(&self) -> Result<(), String> {
        if self.value_set.is_empty() {
            return Err("value_set is empty".into());
        }
        Ok(())
    }
}

struct DistinctInSetAcc {
    column: usize,
    values: Vec<Scalar>,
    set: ValueSet,
    seen: Vec<bool>,
    outside: Outside,
    overflow: bool,
}

impl Accumulator for DistinctInSetAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        let Self {
            set,
            seen,
            outside,
            overflow,
            ..
        } = self;
        set.each_position(col, |i, pos| match pos {
            Some(p) => seen[p as usize] = true,
            None => {
                if !outside.note(col, i) {
                    *overflow = true;
                }
                tally.flag(c.first + i as u64, || col.json(i));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        let unexpected = out.detail.unexpected_count;
        out.detail.unexpected_percent = pct(unexpected, out.non_null);
        out.detail.observed_value =
            Some(distinct_values(&self.values, &self.seen, &self.outside).into());
        if self.overflow {
            out.detail.details = Some(format!(
                "more than {DISTINCT_OUTSIDE_CAP} distinct values outside the set; the \
                 first {DISTINCT_OUTSIDE_CAP} found are listed"
            ));
        }
        unexpected == 0
    }
}

/// Weight given to an empty bucket of a KL reference distribution.
pub const KL_EPSILON: f64 = 1e-6;

/// The reference distribution of `expect_column_kl_divergence_to_be_less_than`, GE's
/// `partition_object`: either numeric bins (`bins` are the k+1 increasing edges of k
/// bins, the last bin closed on the right) or categorical `values`, with one weight
/// per bin or value. The weights are normalised to sum to 1 together with the
/// optional `tail_weights` (mass below the first edge and above the last one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionObject {
    /// Bin edges, for a numeric column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<f64>>,
    /// Category values, for a categorical column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Scalar>>,
    /// One weight per bin or value.
    pub weights: Vec<f64>,
    /// `[below, above]` weights outside the bins (numeric only; default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_weights: Option<Vec<f64>>,
}

arguments! {
    /// The Kullback-Leibler divergence KL(observed ‖ reference) of the column's
    /// non-null values, over the bins or values of `partition_object`, is at most
    /// `threshold`. See the module documentation for how zero weights are handled.
    pub struct KlDivergenceLessThan {
        column,
        /// The reference distribution.
        pub partition_object: PartitionObject,
        /// Largest divergence accepted (in nats).
        pub threshold: f64,
    }
}

impl Check for KlDivergenceLessThan {
    fn needs_numeric(&self) -> bool {
        self.partition_object.bins.is_some()
    }

    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        let (p, threshold) = (&self.partition_object, self.threshold);
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(Refusal::at(
                "threshold",
                format!("must be a finite number >= 0, got {threshold}"),
            ));
        }
        let po = |sub: &str, reason: String| {
            Refusal::at_path(
                vec![
                    PathPart::Key("partition_object".into()),
                    PathPart::Key(sub.into()),
                ],
                reason,
            )
        };
        let categories = match (&p.bins, &p.values) {
            (Some(_), Some(_)) => {
                return Err(Refusal::at(
                    "partition_object",
                    "give either bins (numeric) or values (categorical), not both",
                ));
            }
            (None, None) => {
                return Err(Refusal::at(
                    "partition_object",
                    "give bins (numeric edges) or values (categories), with weights",
                ));
            }
            (Some(bins), None) => {
                if bins.len() < 2 {
                    return Err(po("bins", "give at least two edges (one bin)".into()));
                }
                if bins.iter().any(|b| !b.is_finite()) || bins.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(po(
                        "bins",
                        "edges must be finite and strictly increasing".into(),
                    ));
                }
                bins.len() - 1
            }
            (None, Some(values)) => {
                value_set_fits_at(ty, values, &self.column).map_err(|r| po("values", r))?;
                let mut seen = Vec::new();
                for v in values {
                    if seen.contains(&v) {
                        return Err(po("values", format!("value {v} is listed twice")));
                    }
                    seen.push(v);
                }
                if p.tail_weights.is_some() {
                    return Err(po(
                        "tail_weights",
                        "tail weights apply to numeric bins only".into(),
                    ));
                }
                values.len()
            }
        };
        if p.weights.len() != categories {
            let what = if p.bins.is_some() {
                format!("{} edges make {categories} bins", categories + 1)
            } else {
                format!("{categories} values")
            };
            return Err(po(
                "weights",
                format!(
                    "bins/values and weights lengths do not match: {what} but {} weights",
                    p.weights.len()
                ),
            ));
        }
        if let Some(w) = p.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(po(
                "weights",
                format!("weights must be finite and not negative, got {w}"),
            ));
        }
        let mut total: f64 = p.weights.iter().sum();
        if let Some(t) = &p.tail_weights {
            if t.len() != 2 || t.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
                return Err(po(
                    "tail_weights",
                    "give two finite, non-negative weights: [below, above]".into(),
                ));
            }
            total += t[0] + t[1];
        }
        if total <= 0.0 {
            return Err(po("weights", "the weights sum to 0".into()));
        }
        Ok(())
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        let p = &self.partition_object;
        let probabilities = kl_reference(p);
        let reference = match (&p.bins, &p.values) {
            (Some(bins), _) => KlRef::Bins(bins.clone()),
            (None, values) => KlRef::Values(ValueSet::new(
                columns.type_of(&self.column),
                values.as_deref().unwrap_or(&[]),
            )),
        };
        Plan::Rows(Box::new(KlAcc {
            column: columns.index(&self.column).unwrap_or_default(),
            counts: vec![0; probabilities.len()],
            probabilities,
            reference,
            threshold: self.threshold,
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        for key in ["internal_weight_holdout", "tail_weight_holdout"] {
            if k.f64(key)?.is_some_and(|x| x != 0.0) {
                return Err(format!("{key} is not supported"));
            }
        }
        if k.bool("bucketize_data")? == Some(false) {
            return Err("bucketize_data = false is not supported".into());
        }
        let Some(threshold) = k.f64("threshold")? else {
            return Err("no threshold: an observation-only KL divergence is not supported".into());
        };
        let Some(po) = k.get("partition_object")? else {
            return Err("argument `partition_object` is missing".into());
        };
        Ok(Self {
            column: k.required_string("column")?,
            partition_object: partition(po)?,
            threshold,
            severity,
        })
    }
}

/// GE's `partition_object`, read from a suite.
fn partition(v: &Value) -> Result<PartitionObject, String> {
    let Value::Object(o) = v else {
        return Err(format!("partition_object should be an object, got {v}"));
    };
    let numbers = |key: &str| -> Result<Option<Vec<f64>>, String> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_f64()
                        .ok_or_else(|| format!("partition_object.{key}: {x} is not a number"))
                })
                .collect::<Result<Vec<f64>, String>>()
                .map(Some),
            Some(other) => Err(format!(
                "partition_object.{key} should be a list, got {other}"
            )),
        }
    };
    for key in o.keys() {
        if !["bins", "values", "weights", "tail_weights"].contains(&key.as_str()) {
            return Err(format!("partition_object.{key} is not supported"));
        }
    }
    let values = match o.get("values") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| scalar("partition_object.values", x))
                .collect::<Result<Vec<Scalar>, String>>()?,
        ),
        Some(other) => {
            return Err(format!(
                "partition_object.values should be a list, got {other}"
            ));
        }
    };
    Ok(PartitionObject {
        bins: numbers("bins")?,
        values,
        weights: numbers("weights")?.ok_or("partition_object.weights is missing")?,
        tail_weights: numbers("tail_weights")?,
    })
}

/// The reference side of a KL divergence.
enum KlRef {
    /// Edges; counts are `[below, bins..., above]`.
    Bins(Vec<f64>),
    /// Categories; counts are `[values..., other]`.
    Values(ValueSet),
}

/// Normalised reference probabilities in the layout of the counts, with
/// [`KL_EPSILON`] for empty buckets, renormalised.
fn kl_reference(p: &PartitionObject) -> Vec<f64> {
    let mut w: Vec<f64> = Vec::with_capacity(p.weights.len() + 2);
    if p.bins.is_some() {
        let tails = p.tail_weights.clone().unwrap_or_default();
        w.push(tails.first().copied().unwrap_or(0.0));
        w.extend(&p.weights);
        w.push(tails.get(1).copied().unwrap_or(0.0));
    } else {
        w.extend(&p.weights);
        w.push(0.0);
    }
    let total: f64 = w.iter().sum();
    for x in &mut w {
        *x = if total > 0.0 { *x / total } else { 0.0 };
        if *x <= 0.0 {
            *x = KL_EPSILON;
        }
    }
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// KL(P ‖ Q) in nats of observed counts against reference probabilities.
fn kl_divergence(counts: &[u64], reference: &[f64]) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let mut kl = 0.0;
    for (c, q) in counts.iter().zip(reference) {
        if *c > 0 {
            let p = *c as f64 / n as f64;
            kl += p * (p / q).ln();
        }
    }
    Some(kl.max(0.0))
}

struct KlAcc {
    column: usize,
    reference: KlRef,
    probabilities: Vec<f64>,
    counts: Vec<u64>,
    threshold: f64,
}

impl Accumulator for KlAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        let counts = &mut self.counts;
        match &self.reference {
            KlRef::Bins(edges) => {
                let (lo, hi) = (edges[0], edges[edges.len() - 1]);
                let last = counts.len() - 1;
                each_f64(col, |_, x| {
                    let slot = if x < lo {
                        0
                    } else if x > hi {
                        last
                    } else if x == hi {
                        last - 1
                    } else {
                        edges.partition_point(|e| *e <= x)
                    };
                    counts[slot] += 1;
                });
            }
            KlRef::Values(set) => {
                let other = counts.len() - 1;
                set.each_position(col, |_, pos| {
                    counts[pos.map_or(other, |p| p as usize)] += 1;
                });
            }
        }
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        let counts = &self.counts;
        let Some(kl) = kl_divergence(counts, &self.probabilities) else {
            out.detail.details = Some("not computable: no non-null values".into());
            return false;
        };
        out.detail.observed_value = Some(kl.into());
        let total: u64 = counts.iter().sum();
        let (outside, what) = match self.reference {
            KlRef::Bins(_) => (
                counts[0] + counts[counts.len() - 1],
                "outside the reference bins",
            ),
            KlRef::Values(_) => (counts[counts.len() - 1], "outside the reference values"),
        };
        if outside > 0 {
            out.detail.details = Some(format!(
                "{outside} of {total} values ({:.2}%) fall {what}",
                pct(outside, total)
            ));
        }
        kl <= self.threshold
    }
}
