//! Latency histograms: how serving reports the latencies of a statistics
//! window, so the deployer can judge a percentile over every request of a
//! rollout step (pooled across windows and replicas) instead of taking the worst
//! window's own percentile, which a handful of slow requests decides.
//!
//! Buckets are fixed and log-spaced (four per doubling, from 50 µs to about
//! 44 s; the last bucket holds everything slower), so histograms from any
//! replica add up bucket by bucket. A quantile is interpolated inside its
//! bucket, as Prometheus's `histogram_quantile` does: at most one bucket's width
//! (about 19 %) from the exact value.

use serde::{Deserialize, Serialize};

/// Number of buckets.
pub const BUCKETS: usize = 80;

/// Lower edge of the first bucket, milliseconds.
const FIRST_MS: f64 = 0.05;

/// Upper edge of bucket `i` in milliseconds (infinite for the last one).
pub fn upper_bound_ms(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        FIRST_MS * 2f64.powf((i + 1) as f64 / 4.0)
    }
}

fn lower_bound_ms(i: usize) -> f64 {
    if i == 0 { 0.0 } else { upper_bound_ms(i - 1) }
}

/// The bucket a latency falls in (NaN and negatives into the first).
pub fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms <= FIRST_MS {
        return 0;
    }
    let k = ((ms / FIRST_MS).log2() * 4.0).ceil() - 1.0;
    if k.is_nan() || k < 0.0 {
        0
    } else {
        (k as usize).min(BUCKETS - 1)
    }
}

/// Why a histogram from the bus is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("latency histogram has {0} buckets; expected {BUCKETS} (or none)")]
pub struct HistogramError(pub usize);

/// Request counts per latency bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram(Vec<u64>);

impl Default for Histogram {
    fn default() -> Self {
        Self(vec![0; BUCKETS])
    }
}

impl Histogram {
    /// A histogram from counts received on the bus: exactly [`BUCKETS`] of them.
    pub fn from_counts(counts: Vec<u64>) -> Result<Self, HistogramError> {
        if counts.len() == BUCKETS {
            Ok(Self(counts))
        } else {
            Err(HistogramError(counts.len()))
        }
    }

    /// The counts, one per bucket.
    pub fn counts(&self) -> &[u64] {
        &self.0
    }

    /// Into the counts, for an event.
    pub fn into_counts(self) -> Vec<u64> {
        self.0
    }

    /// Counts one latency.
    pub fn record(&mut self, ms: f64) {
        let b = bucket_of(ms);
        self.0[b] = self.0[b].saturating_add(1);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = a.saturating_add(*b);
        }
    }

    /// Latencies counted.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |t, c| t.saturating_add(*c))
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds, interpolated within its
    /// bucket; `None` when empty. In the open last bucket it is that bucket's
    /// lower edge.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.0.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let before = seen as f64;
            seen = seen.saturating_add(c);
            if seen as f64 >= rank {
                let lo = lower_bound_ms(i);
                let hi = upper_bound_ms(i);
                if hi.is_infinite() {
                    return Some(lo);
                }
                return Some(lo + (hi - lo) * ((rank - before) / c as f64));
            }
        }
        Some(lower_bound_ms(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_in_order() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(-3.0), 0);
        assert_eq!(bucket_of(1e12), BUCKETS - 1);
        assert_eq!(bucket_of(f64::INFINITY), BUCKETS - 1);
        for ms in [0.06, 0.5, 1.0, 7.3, 250.0, 9_999.0] {
            let b = bucket_of(ms);
            assert!(
                lower_bound_ms(b) < ms && ms <= upper_bound_ms(b),
                "{ms} in {b}"
            );
        }
    }

    #[test]
    fn pooled_p99_is_not_decided_by_a_few_slow_requests() {
        // 1,000 fast requests and 5 slow ones: the worst window's own p99 (a
        // window holding only the slow ones) is 900 ms; the pooled p99 is fast.
        let mut h = Histogram::default();
        for _ in 0..1_000 {
            h.record(3.0);
        }
        for _ in 0..5 {
            h.record(900.0);
        }
        let p99 = h.quantile(0.99).unwrap();
        assert!((2.5..=3.6).contains(&p99), "{p99}");
        // With 2 % slow requests the p99 is slow.
        for _ in 0..20 {
            h.record(900.0);
        }
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 > 700.0, "{p99}");
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn histograms_merge_and_refuse_a_wrong_shape() {
        let mut a = Histogram::default();
        a.record(1.0);
        let mut b = Histogram::default();
        b.record(1.0);
        b.record(100.0);
        a.merge(&b);
        assert_eq!(a.total(), 3);
        assert_eq!(Histogram::from_counts(vec![1; 3]), Err(HistogramError(3)));
        let mut full = Histogram::from_counts(vec![u64::MAX; BUCKETS]).unwrap();
        full.merge(&a);
        assert_eq!(full.total(), u64::MAX);
    }
}
