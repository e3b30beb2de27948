//! Numeric accumulators: bounds, running sums and moments, and the median's
//! quantile sketch.

/// Non-null values kept for an exact median; beyond, the median is approximate.
pub const EXACT_MEDIAN_LIMIT: usize = 1_000_000;

/// Buffer size of each level of the median's quantile sketch (even).
pub const SKETCH_K: usize = 32_768;

/// Bounds of a `*_to_be_between` expectation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) strict_min: bool,
    pub(crate) strict_max: bool,
}

impl Bounds {
    /// The bounds `min_value`, `max_value`, `strict_min`, `strict_max` say.
    pub(crate) fn new(
        min: Option<f64>,
        max: Option<f64>,
        strict_min: bool,
        strict_max: bool,
    ) -> Self {
        Self {
            min,
            max,
            strict_min,
            strict_max,
        }
    }

    #[inline]
    pub(crate) fn contains(&self, v: f64) -> bool {
        let low = self
            .min
            .is_none_or(|m| if self.strict_min { v > m } else { v >= m });
        let high = self
            .max
            .is_none_or(|m| if self.strict_max { v < m } else { v <= m });
        low && high
    }
}

/// Neumaier-compensated running sum, in row order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sum {
    pub(crate) sum: f64,
    pub(crate) comp: f64,
    pub(crate) n: u64,
}

impl Sum {
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
        self.n += 1;
    }
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.sum + self.comp) / self.n as f64)
    }
}

/// Welford's running mean and sum of squared deviations, in row order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Welford {
    pub(crate) n: u64,
    pub(crate) mean: f64,
    pub(crate) m2: f64,
}

impl Welford {
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    /// Sample standard deviation (ddof = 1), from two values on.
    pub(crate) fn stdev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
    }
}

/// A deterministic streaming quantile summary (Manku, Rajagopalan and Lindsay,
/// 1998): level `h` buffers up to `k` values of weight 2^h; a full buffer is sorted
/// and every other value (alternating the offset) moves up a level with twice the
/// weight. A compaction at level h moves the weighted rank of any value by at most
/// 2^h, so [`error_bound`](Self::error_bound) (the sum over compactions) bounds the
/// rank error of every query; it is at most n·log2(n/k)/k. Memory: at most
/// `k·(1 + log2(n/k))` values. The result depends only on the order of the values.
#[derive(Debug, Clone)]
pub struct QuantileSketch {
    pub(crate) k: usize,
    pub(crate) levels: Vec<Vec<f64>>,
    pub(crate) flip: Vec<bool>,
    pub(crate) n: u64,
    pub(crate) error_bound: u64,
}

impl QuantileSketch {
    /// A sketch whose buffers hold `k` values (rounded up to an even number ≥ 2).
    pub fn new(k: usize) -> Self {
        let k = k.max(2).next_multiple_of(2);
        Self {
            k,
            levels: vec![Vec::with_capacity(k)],
            flip: vec![false],
            n: 0,
            error_bound: 0,
        }
    }

    /// Adds a value.
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.n += 1;
        self.levels[0].push(x);
        if self.levels[0].len() >= self.k {
            self.compact(0);
        }
    }

    pub(crate) fn compact(&mut self, mut h: usize) {
        loop {
            if self.levels.len() <= h + 1 {
                self.levels.push(Vec::with_capacity(self.k));
                self.flip.push(false);
            }
            let mut buf = std::mem::take(&mut self.levels[h]);
            buf.sort_unstable_by(f64::total_cmp);
            let offset = self.flip[h] as usize;
            self.flip[h] = !self.flip[h];
            self.levels[h + 1].extend(buf.iter().skip(offset).step_by(2));
            buf.clear();
            self.levels[h] = buf;
            self.error_bound += 1 << h;
            if self.levels[h + 1].len() >= self.k {
                h += 1;
            } else {
                return;
            }
        }
    }

    /// Values inserted.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Largest possible difference between the rank a query assumes for a value
    /// and its true rank among the inserted values.
    pub fn error_bound(&self) -> u64 {
        self.error_bound
    }

    /// Values held (memory is 8 bytes each plus the buffers' spare capacity).
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// A value whose rank (1-based, among the inserted values, some tie counted) is
    /// within ±[`error_bound`](Self::error_bound) of `rank`; None when empty.
    pub fn value_at_rank(&self, rank: u64) -> Option<f64> {
        let mut items: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, l)| l.iter().map(move |x| (*x, 1u64 << h)))
            .collect();
        if items.is_empty() {
            return None;
        }
        items.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut cum = 0u64;
        for (x, w) in &items {
            cum += w;
            if cum >= rank {
                return Some(*x);
            }
        }
        items.last().map(|(x, _)| *x)
    }

    /// The median estimate: the value at rank ⌈n/2⌉ (the lower median).
    pub fn median(&self) -> Option<f64> {
        self.value_at_rank(self.n.div_ceil(2).max(1))
    }
}

/// The median's accumulator: exact up to a limit, then a [`QuantileSketch`].
#[derive(Debug, Clone)]
pub(crate) struct MedianAcc {
    pub(crate) exact: Vec<f64>,
    pub(crate) sketch: Option<QuantileSketch>,
    pub(crate) limit: usize,
}

impl MedianAcc {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            exact: Vec::new(),
            sketch: None,
            limit,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        match &mut self.sketch {
            Some(s) => s.insert(x),
            None => {
                self.exact.push(x);
                if self.exact.len() > self.limit {
                    let mut s = QuantileSketch::new(SKETCH_K);
                    for v in self.exact.drain(..) {
                        s.insert(v);
                    }
                    self.exact = Vec::new();
                    self.sketch = Some(s);
                }
            }
        }
    }

    /// The median and, when approximate, an explanation with its error bound.
    pub(crate) fn finish(&mut self) -> (Option<f64>, Option<String>) {
        if let Some(s) = &self.sketch {
            let m = s.median();
            let n = s.count();
            let e = s.error_bound();
            return (
                m,
                Some(format!(
                    "approximate median: {n} values exceed the exact limit of {}; a streaming \
                     quantile sketch returned a value whose rank is within ±{e} ({:.4}%) of the \
                     median's",
                    self.limit,
                    100.0 * e as f64 / n.max(1) as f64
                )),
            );
        }
        let v = &mut self.exact;
        let n = v.len();
        if n == 0 {
            return (None, None);
        }
        let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
        let hi = *hi;
        if n % 2 == 1 {
            return (Some(hi), None);
        }
        let lo = v[..n / 2]
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .unwrap_or(hi);
        (Some((lo + hi) / 2.0), None)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// (values strictly below v, values at or below v).
    fn rank_range(values: &[f64], v: f64) -> (u64, u64) {
        let below = values.iter().filter(|x| **x < v).count() as u64;
        let at_or_below = values.iter().filter(|x| **x <= v).count() as u64;
        (below, at_or_below)
    }

    /// Whether v can be given a rank within ±e of `target` among `values`.
    fn within(values: &[f64], v: f64, target: u64, e: u64) -> bool {
        let (below, at_or_below) = rank_range(values, v);
        below < target + e && at_or_below + e >= target
    }

    #[test]
    fn approximate_median_stays_within_its_documented_error() {
        let n = 2_000_000usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let random: Vec<f64> = (0..n)
            .map(|_| rng.random::<f64>() * 1000.0 - 100.0)
            .collect();
        let mut ascending = random.clone();
        ascending.sort_by(f64::total_cmp);
        let mut descending = ascending.clone();
        descending.reverse();
        let ties: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64).collect();
        let bound = |n: usize| {
            let levels = (n as f64 / SKETCH_K as f64).log2().ceil().max(1.0);
            (n as f64 * levels / SKETCH_K as f64).ceil() as u64
        };
        for (what, values) in [
            ("random", &random),
            ("ascending", &ascending),
            ("descending", &descending),
            ("ties", &ties),
        ] {
            let mut acc = MedianAcc::new(EXACT_MEDIAN_LIMIT);
            for x in values.iter() {
                acc.add(*x);
            }
            let retained = acc.sketch.as_ref().map(|s| s.retained()).unwrap();
            assert!(
                retained <= SKETCH_K * (1 + (n / SKETCH_K).ilog2() as usize + 1),
                "{what}: {retained} values retained"
            );
            let e = acc.sketch.as_ref().unwrap().error_bound();
            assert!(
                e <= bound(n),
                "{what}: bound {e} above documented {}",
                bound(n)
            );
            assert!(e > 0 && e < n as u64 / 1000, "{what}: {e}");
            let (m, details) = acc.finish();
            let m = m.unwrap();
            let details = details.unwrap();
            assert!(details.contains("approximate") && details.contains(&format!("±{e}")));
            assert!(
                within(values, m, n.div_ceil(2) as u64, e),
                "{what}: median {m} has ranks {:?}, wanted {} ± {e}",
                rank_range(values, m),
                n / 2
            );
        }
    }

    #[test]
    fn small_sketches_keep_their_bound_through_many_levels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let values: Vec<f64> = (0..100_000).map(|_| rng.random::<f64>()).collect();
        let mut s = QuantileSketch::new(64);
        for x in &values {
            s.insert(*x);
        }
        assert_eq!(s.count(), 100_000);
        assert!(s.retained() <= 64 * 12, "{}", s.retained());
        let e = s.error_bound();
        for q in [1u64, 10_000, 50_000, 99_000, 100_000] {
            let v = s.value_at_rank(q).unwrap();
            assert!(within(&values, v, q, e), "rank {q}: {v} ± {e}");
        }
        let m = s.median().unwrap();
        assert!(within(&values, m, 50_000, e));
        assert!(QuantileSketch::new(8).median().is_none());
    }
}
