//! The statistics of the drift methods, each computed between a reference
//! summary and a current sample, with the conventions Evidently 0.7 uses
//! (`evidently/legacy/calculations/stattests`), which in turn follow SciPy.

use super::reference::{Cdf, NumericReference};
use super::special::{chi2_sf, kolmogorov_sf, normal_sf};

/// Two samples of a discrete variable: per key, reference and current counts.
pub(crate) type Pairs = Vec<(f64, f64)>;

/// Kolmogorov–Smirnov: `(D, two-sided p)`, SciPy's `ks_2samp` with
/// `method="auto"` (exact for samples up to 10,000, asymptotic beyond).
pub(crate) fn ks(reference: &NumericReference, current: &[f64]) -> (f64, f64) {
    let n = reference.rows as usize;
    let m = current.len();
    let d = sup_distance(reference, current);
    let p = if n.max(m) <= 10_000 {
        1.0 - smirnov_inside(d, n, m)
    } else {
        let en = ((n * m) as f64 / (n + m) as f64).round();
        // Stephens' correction of the limiting distribution.
        let s = en.sqrt();
        kolmogorov_sf((s + 0.12 + 0.11 / s) * d)
    };
    (d, p.clamp(0.0, 1.0))
}

/// sup |F_ref - F_cur| over every point where either changes.
fn sup_distance(reference: &NumericReference, current: &[f64]) -> f64 {
    let m = current.len() as f64;
    let cdf = Cdf::new(reference);
    let mut d: f64 = 0.0;
    let mut check = |x: f64| {
        let fc = current.partition_point(|v| *v <= x) as f64 / m;
        let fcl = current.partition_point(|v| *v < x) as f64 / m;
        let fr = cdf.at(x);
        let frl = cdf.left(x);
        d = d.max((fr - fc).abs()).max((frl - fcl).abs());
    };
    for x in reference.support() {
        check(x);
    }
    let mut prev = f64::NAN;
    for &x in current {
        if x != prev {
            check(x);
            prev = x;
        }
    }
    d
}

/// P(D < d) for samples of sizes `n` and `m` under the null: the lattice-path
/// recursion of R's `psmirnov` (exact, normalised to stay in [0, 1]).
fn smirnov_inside(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let (small, large) = if n <= m { (n, m) } else { (m, n) };
    let (sd, ld) = (small as f64, large as f64);
    // D takes values k / (n m); paths reaching D >= d are outside.
    let q = (0.5 + (d * sd * ld - 1e-7).floor()) / (sd * ld);
    let mut u: Vec<f64> = (0..=large)
        .map(|j| if j as f64 / ld > q { 0.0 } else { 1.0 })
        .collect();
    for i in 1..=small {
        let w = i as f64 / (i + large) as f64;
        u[0] = if i as f64 / sd > q { 0.0 } else { w * u[0] };
        for j in 1..=large {
            u[j] = if (i as f64 / sd - j as f64 / ld).abs() > q {
                0.0
            } else {
                w * u[j] + u[j - 1]
            };
        }
    }
    u[large]
}

/// The distinct values of two ascending sequences, ascending: a merge, not a
/// sort of both (the current sample is sorted once by the caller, and a
/// reference's support is kept sorted). Either one out of order is sorted.
pub(crate) fn sorted_union(mut a: Vec<f64>, b: &[f64]) -> Vec<f64> {
    let ascending = |s: &[f64]| s.is_sorted_by(|x, y| x.total_cmp(y).is_le());
    if !ascending(&a) {
        a.sort_unstable_by(f64::total_cmp);
    }
    let sorted_b;
    let b = if ascending(b) {
        b
    } else {
        sorted_b = {
            let mut v = b.to_vec();
            v.sort_unstable_by(f64::total_cmp);
            v
        };
        &sorted_b
    };
    let mut out: Vec<f64> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let v = if j == b.len() || (i < a.len() && a[i].total_cmp(&b[j]).is_le()) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if out.last().is_none_or(|l| *l != v) {
            out.push(v);
        }
    }
    out
}

/// First Wasserstein distance between the reference's distribution and the
/// current sample (SciPy's `wasserstein_distance`), integrated between every
/// breakpoint of either CDF.
pub(crate) fn wasserstein(reference: &NumericReference, current: &[f64]) -> f64 {
    let m = current.len() as f64;
    let cdf = Cdf::new(reference);
    let points = sorted_union(reference.support().collect(), current);
    let mut total = 0.0;
    // The points ascend: one cursor over the sorted current sample gives its CDF.
    let mut below = 0usize;
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        while below < current.len() && current[below] <= a {
            below += 1;
        }
        let fc = below as f64 / m;
        let da = cdf.at(a) - fc;
        let db = cdf.left(b) - fc;
        let width = b - a;
        total += if da * db >= 0.0 {
            (da.abs() + db.abs()) / 2.0 * width
        } else {
            (da * da + db * db) / (2.0 * (da.abs() + db.abs())) * width
        };
    }
    total
}

/// Pearson's chi-square of current counts against reference counts scaled to
/// the current total (Evidently's `chisquare`): `(statistic, p)`.
pub(crate) fn chisquare(pairs: &[(f64, f64)]) -> (f64, f64) {
    let n_ref: f64 = pairs.iter().map(|p| p.0).sum();
    let n_cur: f64 = pairs.iter().map(|p| p.1).sum();
    if pairs.len() < 2 || n_ref == 0.0 {
        return (0.0, 1.0);
    }
    let k = n_cur / n_ref;
    let mut stat = 0.0;
    for (r, c) in pairs {
        let e = r * k;
        if e == 0.0 {
            if *c > 0.0 {
                return (f64::INFINITY, 0.0);
            }
            continue;
        }
        stat += (c - e) * (c - e) / e;
    }
    (stat, chi2_sf(stat, (pairs.len() - 1) as f64))
}

/// Two-proportion z-test on the share of the first key (Evidently's `z`):
/// `(z, two-sided p)`; identical constant samples give `(0, 1)`.
pub(crate) fn z(pairs: &[(f64, f64)]) -> (f64, f64) {
    let n1: f64 = pairs.iter().map(|p| p.0).sum();
    let n2: f64 = pairs.iter().map(|p| p.1).sum();
    if pairs.len() < 2 || n1 == 0.0 || n2 == 0.0 {
        return (0.0, 1.0);
    }
    let p1 = (n1 - pairs[0].0) / n1;
    let p2 = (n2 - pairs[0].1) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let denom = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if denom == 0.0 {
        return (0.0, 1.0);
    }
    let z = (p1 - p2) / denom;
    (z, (2.0 * normal_sf(z.abs())).min(1.0))
}

/// Jensen–Shannon distance (natural log) between two share vectors, each
/// normalised to sum 1 (SciPy's `jensenshannon`).
pub(crate) fn jensenshannon(pairs: &[(f64, f64)]) -> f64 {
    let sr: f64 = pairs.iter().map(|p| p.0).sum();
    let sc: f64 = pairs.iter().map(|p| p.1).sum();
    if sr == 0.0 || sc == 0.0 {
        return 0.0;
    }
    let mut js = 0.0;
    for (r, c) in pairs {
        let (p, q) = (r / sr, c / sc);
        let mid = (p + q) / 2.0;
        if p > 0.0 {
            js += p * (p / mid).ln();
        }
        if q > 0.0 {
            js += q * (q / mid).ln();
        }
    }
    (js / 2.0).max(0.0).sqrt()
}

/// Population stability index between share vectors, empty buckets filled as
/// Evidently does (a millionth of the smallest non-zero share, or 0.0001).
pub(crate) fn psi(pairs: &[(f64, f64)]) -> f64 {
    let fill = |xs: &mut Vec<f64>| {
        let min = xs
            .iter()
            .copied()
            .filter(|v| *v != 0.0)
            .fold(f64::INFINITY, f64::min);
        if min.is_finite() {
            let f = if min <= 0.0001 { min / 1e6 } else { 0.0001 };
            for v in xs.iter_mut() {
                if *v == 0.0 {
                    *v = f;
                }
            }
        }
    };
    let mut r: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut c: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    fill(&mut r);
    fill(&mut c);
    r.iter()
        .zip(&c)
        .filter(|(a, b)| **a > 0.0 && **b > 0.0)
        .map(|(a, b)| (a - b) * (a / b).ln())
        .sum()
}

/// NumPy's `histogram_bin_edges(combined, bins="sturges")` for the union of the
/// reference (`rows`, `min`, `max`) and the current sample.
pub(crate) fn sturges_edges(reference: &NumericReference, current: &[f64]) -> Vec<f64> {
    let n = reference.rows as usize + current.len();
    let mut lo = reference.min;
    let mut hi = reference.max;
    if let (Some(a), Some(b)) = (current.first(), current.last()) {
        if reference.rows == 0 {
            (lo, hi) = (*a, *b);
        } else {
            lo = lo.min(*a);
            hi = hi.max(*b);
        }
    }
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let bins = if n == 0 {
        1
    } else {
        ((n as f64).log2() + 1.0).ceil().max(1.0) as usize
    };
    (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect()
}

/// Shares of the reference and of the current sample per bucket of `edges`
/// (NumPy's `histogram`: half-open buckets, the last one closed), each
/// divided by its sample's size.
pub(crate) fn binned(reference: &NumericReference, current: &[f64], edges: &[f64]) -> Pairs {
    let buckets = edges.len() - 1;
    let last = edges[buckets];
    let cdf = Cdf::new(reference);
    let share_ref = |i: usize| {
        let hi = if i + 1 == buckets {
            cdf.at(last)
        } else {
            cdf.left(edges[i + 1])
        };
        (hi - cdf.left(edges[i])).max(0.0)
    };
    let m = current.len() as f64;
    let count_cur = |i: usize| {
        let lo = current.partition_point(|v| *v < edges[i]);
        let hi = if i + 1 == buckets {
            current.partition_point(|v| *v <= last)
        } else {
            current.partition_point(|v| *v < edges[i + 1])
        };
        (hi - lo) as f64
    };
    (0..buckets)
        .map(|i| (share_ref(i), if m > 0.0 { count_cur(i) / m } else { 0.0 }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> NumericReference {
        NumericReference::from_values(values.to_vec(), 0)
    }

    #[test]
    fn ks_matches_scipy_exact_and_asymptotic() {
        // scipy.stats.ks_2samp(np.arange(1, 11.), np.arange(12) + 3.5)
        // -> D = 0.4166666666666667, p = 0.23373839782508513 (exact method)
        let a: Vec<f64> = (1..=10).map(f64::from).collect();
        let b: Vec<f64> = (0..12).map(|i| 3.5 + i as f64).collect();
        let (d, p) = ks(&exact(&a), &b);
        assert!((d - 5.0 / 12.0).abs() < 1e-12, "{d}");
        assert!((p - 0.233_738_397_825_085_13).abs() < 1e-9, "{p}");
        // Identical samples: D = 0, p = 1.
        let (d, p) = ks(&exact(&a), &a);
        assert_eq!((d, p), (0.0, 1.0));
    }

    #[test]
    fn wasserstein_matches_scipy() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
        assert!((wasserstein(&exact(&[0.0, 1.0, 3.0]), &[5.0, 6.0, 8.0]) - 5.0).abs() < 1e-12);
        // scipy.stats.wasserstein_distance([3.4, 3.9, 7.5, 7.8], [4.5, 1.4]) == 2.7
        let w = wasserstein(&exact(&[3.4, 3.9, 7.5, 7.8]), &[1.4, 4.5]);
        assert!((w - 2.7).abs() < 1e-12, "{w}");
        assert_eq!(wasserstein(&exact(&[2.0, 2.0]), &[2.0]), 0.0);
    }

    #[test]
    fn a_quantile_reference_stays_within_its_stated_bound() {
        // 20,000 distinct values: the reference keeps quantiles, not values.
        let values: Vec<f64> = (0..20_000)
            .map(|i| ((i * 7919) % 20_000) as f64 / 7.0)
            .collect();
        let approx = NumericReference::from_values(values.clone(), 0);
        assert!(!approx.is_exact());
        let current: Vec<f64> = (0..3_000).map(|i| i as f64 * 0.9 + 40.0).collect();
        // Exact distance by the sorted-sample formula on the full rows.
        let mut all = values.clone();
        all.sort_by(f64::total_cmp);
        let exact_w = {
            let mut pts = all.clone();
            pts.extend_from_slice(&current);
            pts.sort_by(f64::total_cmp);
            pts.dedup();
            let mut t = 0.0;
            for w in pts.windows(2) {
                let fr = all.partition_point(|v| *v <= w[0]) as f64 / all.len() as f64;
                let fc = current.partition_point(|v| *v <= w[0]) as f64 / current.len() as f64;
                t += (fr - fc).abs() * (w[1] - w[0]);
            }
            t
        };
        let got = wasserstein(&approx, &current);
        let bound = (approx.max - approx.min) / super::super::reference::QUANTILES as f64;
        assert!(
            (got - exact_w).abs() <= bound,
            "{got} vs {exact_w} (bound {bound})"
        );
        for x in [0.0, 100.0, 1234.5, 2857.0] {
            let f = all.partition_point(|v| *v <= x) as f64 / all.len() as f64;
            assert!((approx.cdf(x) - f).abs() <= 0.001 + 1e-9, "cdf at {x}");
        }
    }

    #[test]
    fn chisquare_z_js_and_psi_match_scipy_and_evidently() {
        // scipy.stats.chisquare([30, 50, 20], [40*1.0, 40, 20]) -> 5.0, 0.0820849986238988
        let pairs = vec![(40.0, 30.0), (40.0, 50.0), (20.0, 20.0)];
        let (s, p) = chisquare(&pairs);
        assert!((s - 5.0).abs() < 1e-12);
        assert!((p - 0.082_084_998_623_898_8).abs() < 1e-9, "{p}");
        // An unseen category: infinite statistic, p = 0 (as SciPy).
        assert_eq!(chisquare(&[(10.0, 5.0), (0.0, 5.0)]).1, 0.0);
        // Evidently's formula, proportions 0.3 of 100 vs 0.5 of 200:
        // z = -3.2954102182865386, p = 0.0009827810160825123
        let (zs, p) = z(&[(70.0, 100.0), (30.0, 100.0)]);
        assert!((zs + 3.295_410_218_286_538_6).abs() < 1e-9, "{zs}");
        assert!((p - 0.000_982_781_016_082_512_3).abs() < 1e-9, "{p}");
        assert_eq!(z(&[(10.0, 4.0)]), (0.0, 1.0));
        // scipy.spatial.distance.jensenshannon([0.5, 0.5, 0], [0, 0.1, 0.9]) = 0.7469797975180145
        let js = jensenshannon(&[(0.5, 0.0), (0.5, 0.1), (0.0, 0.9)]);
        assert!((js - 0.746_979_797_518_014_5).abs() < 1e-9, "{js}");
        // PSI of [0.25, 0.75] vs [0.5, 0.5]: 0.25 ln 0.5 + -0.25 ln 1.5 ... = 0.2746530721670274
        let v = psi(&[(0.25, 0.5), (0.75, 0.5)]);
        assert!((v - 0.274_653_072_167_027_4).abs() < 1e-12, "{v}");
    }

    #[test]
    fn sturges_edges_match_numpy() {
        // np.histogram_bin_edges(np.arange(10.0), bins="sturges") -> [0, 1.8, 3.6, 5.4, 7.2, 9]
        let r = exact(&[0.0, 1.0, 2.0, 3.0, 4.0]);
        let e = sturges_edges(&r, &[5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(e.len(), 6);
        for (a, b) in e.iter().zip([0.0, 1.8, 3.6, 5.4, 7.2, 9.0]) {
            assert!((a - b).abs() < 1e-12, "{e:?}");
        }
        let b = binned(&r, &[5.0, 6.0, 7.0, 8.0, 9.0], &e);
        let (rs, cs): (f64, f64) = b.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        assert!((rs - 1.0).abs() < 1e-12 && (cs - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_union_of_two_sorted_samples_is_what_sorting_both_gives() {
        let a = vec![-1.0, 0.0, 2.5, 2.5, 7.0];
        let b = [-3.0, 0.0, 1.0, 2.5, 9.0, 9.0];
        let mut want: Vec<f64> = a.iter().chain(&b).copied().collect();
        want.sort_by(f64::total_cmp);
        want.dedup();
        assert_eq!(sorted_union(a.clone(), &b), want);
        // Out of order on either side: still the sorted union.
        let shuffled = [9.0, -3.0, 2.5, 0.0, 1.0, 9.0];
        assert_eq!(sorted_union(vec![7.0, -1.0, 2.5, 0.0], &shuffled), want);
        assert_eq!(sorted_union(Vec::new(), &[]), Vec::<f64>::new());
        assert_eq!(sorted_union(vec![1.0], &[]), vec![1.0]);
    }
}
