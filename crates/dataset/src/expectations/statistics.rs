//! Aggregate expectations: a statistic of a numeric column's non-null values
//! (folded in row order) is within bounds. One `Statistic` each; they share
//! their arguments' shape, their accumulator and their GE mapping.

use super::{Check, Kwargs, Plan, PlanContext, Severity};
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally};
use crate::validate::columns::each_f64;
use crate::validate::numeric::{Bounds, MedianAcc, Sum, Welford};

arguments! {
    /// The mean of the non-null values is within bounds.
    pub struct MeanBetween {
        column,
        bounds,
    }
}

arguments! {
    /// The median of the non-null values is within bounds (exact up to 1,000,000
    /// values, then approximate with a documented rank error; see `validate`).
    pub struct MedianBetween {
        column,
        bounds,
    }
}

arguments! {
    /// The sample standard deviation (ddof = 1, like pandas) of the non-null values
    /// is within bounds.
    pub struct StdevBetween {
        column,
        bounds,
    }
}

arguments! {
    /// The smallest non-null value is within bounds.
    pub struct MinBetween {
        column,
        bounds,
    }
}

arguments! {
    /// The largest non-null value is within bounds.
    pub struct MaxBetween {
        column,
        bounds,
    }
}

/// Implements [`Check`] for expectations whose arguments are `column` and
/// `bounds`, each with its [`Statistic`].
macro_rules! statistic_between {
    ($($args:ident: $stat:ty,)*) => {$(
        impl Check for $args {
            fn needs_numeric(&self) -> bool {
                true
            }

            fn plan(&self, columns: &PlanContext<'_>) -> Plan {
                Plan::Rows(Box::new(StatAcc {
                    column: columns.index(&self.column).unwrap_or_default(),
                    stat: <$stat>::new(columns),
                    bounds: Bounds::new(self.min_value, self.max_value, self.strict_min, self.strict_max),
                }))
            }

            fn from_ge(k: &mut Kwargs<'_>, severity: Severity, _: &mut Vec<String>) -> Result<Self, String> {
                let column = k.required_string("column")?;
                let (min_value, max_value, strict_min, strict_max) = k.bounds()?;
                Ok(Self {
                    column,
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    severity,
                })
            }
        }
    )*};
}

statistic_between! {
    MeanBetween: Mean,
    MedianBetween: Median,
    StdevBetween: Stdev,
    MinBetween: Min,
    MaxBetween: Max,
}

/// A statistic of a column's non-null values, folded in row order.
trait Statistic: Send + 'static {
    /// What it needs to be computed, said when it cannot be.
    const NEEDS: &'static str = "at least one non-null value";

    /// An empty statistic for a plan.
    fn new(columns: &PlanContext<'_>) -> Self;

    /// Folds a value in.
    fn add(&mut self, x: f64);

    /// Its value (None when not computable), and how it was obtained when
    /// that is worth saying.
    fn value(&mut self) -> (Option<f64>, Option<String>);
}

/// The mean (a compensated sum).
struct Mean(Sum);

impl Statistic for Mean {
    fn new(_: &PlanContext<'_>) -> Self {
        Mean(Sum::default())
    }
    #[inline]
    fn add(&mut self, x: f64) {
        self.0.add(x);
    }
    fn value(&mut self) -> (Option<f64>, Option<String>) {
        (self.0.mean(), None)
    }
}

/// The median: exact up to the plan's limit, then from a quantile sketch.
struct Median(Box<MedianAcc>);

impl Statistic for Median {
    fn new(columns: &PlanContext<'_>) -> Self {
        Median(Box::new(MedianAcc::new(columns.median_limit)))
    }
    #[inline]
    fn add(&mut self, x: f64) {
        self.0.add(x);
    }
    fn value(&mut self) -> (Option<f64>, Option<String>) {
        self.0.finish()
    }
}

/// The sample standard deviation (Welford).
struct Stdev(Welford);

impl Statistic for Stdev {
    const NEEDS: &'static str = "at least two non-null values";

    fn new(_: &PlanContext<'_>) -> Self {
        Stdev(Welford::default())
    }
    #[inline]
    fn add(&mut self, x: f64) {
        self.0.add(x);
    }
    fn value(&mut self) -> (Option<f64>, Option<String>) {
        (self.0.stdev(), None)
    }
}

/// The smallest value.
struct Min(Option<f64>);

impl Statistic for Min {
    fn new(_: &PlanContext<'_>) -> Self {
        Min(None)
    }
    #[inline]
    fn add(&mut self, x: f64) {
        self.0 = Some(self.0.map_or(x, |m| m.min(x)));
    }
    fn value(&mut self) -> (Option<f64>, Option<String>) {
        (self.0, None)
    }
}

/// The largest value.
struct Max(Option<f64>);

impl Statistic for Max {
    fn new(_: &PlanContext<'_>) -> Self {
        Max(None)
    }
    #[inline]
    fn add(&mut self, x: f64) {
        self.0 = Some(self.0.map_or(x, |m| m.max(x)));
    }
    fn value(&mut self) -> (Option<f64>, Option<String>) {
        (self.0, None)
    }
}

/// A statistic of one column against bounds.
struct StatAcc<S> {
    column: usize,
    stat: S,
    bounds: Bounds,
}

impl<S: Statistic> Accumulator for StatAcc<S> {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        each_f64(col, |_, x| self.stat.add(x));
    }

    fn finish(mut self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        let (value, note) = self.stat.value();
        out.detail.details = note;
        match value {
            Some(v) => {
                out.detail.observed_value = Some(v.into());
                self.bounds.contains(v)
            }
            None => {
                out.detail.details = Some(format!("not computable: needs {}", S::NEEDS));
                false
            }
        }
    }
}
