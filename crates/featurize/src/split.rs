//! Stratified data splits for binary labels.
//!
//! Both splits keep the class ratio of every part close to the ratio of the
//! whole data set, which matters for imbalanced targets (a random 20 % holdout
//! of a 2 % positive rate can easily end up with almost no positives).
//!
//! The procedure is fixed so that the same labels and seed always give the same
//! split, on every platform and release:
//!
//! 1. Rows are grouped by class: class 0 holds every label that is not greater
//!    than 0.5 (0.0 in well-formed data), class 1 every label greater than 0.5.
//!    Within a class the row indices stay in ascending order.
//! 2. One `ChaCha8Rng::seed_from_u64(seed)` shuffles class 0 and then class 1
//!    with Fisher–Yates (`SliceRandom::shuffle`).
//! 3. The shuffled indices are dealt out (holdout: a prefix; k-fold: round-robin)
//!    and each part is sorted ascending.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Row indices of each class, in ascending order, each shuffled by one shared
/// rng seeded from `seed` (class 0 first, then class 1).
fn shuffled_classes(labels: &[f64], seed: u64) -> [Vec<usize>; 2] {
    let mut negatives = Vec::new();
    let mut positives = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        if label > 0.5 {
            positives.push(i);
        } else {
            negatives.push(i);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    negatives.shuffle(&mut rng);
    positives.shuffle(&mut rng);
    [negatives, positives]
}

/// How many of a class's `count` rows go to the holdout.
///
/// `round(fraction * count)`, but a class with at least two rows keeps at least
/// one row on each side whenever `0 < fraction < 1`, so neither part loses a
/// class entirely because of rounding.
fn holdout_count(count: usize, fraction: f64) -> usize {
    let mut take = (fraction * count as f64).round() as usize;
    if count >= 2 && fraction > 0.0 && fraction < 1.0 {
        take = take.clamp(1, count - 1);
    }
    take.min(count)
}

/// Stratified train/holdout split of binary `labels`.
///
/// Returns `(train_indices, holdout_indices)`, each sorted ascending, disjoint,
/// and together covering `0..labels.len()`. Per class, `round(holdout_fraction *
/// class_count)` shuffled rows go to the holdout (at least one, and at least one
/// left for training, when the class has two or more rows and the fraction is
/// strictly between 0 and 1). `holdout_fraction` is clamped to `[0, 1]`; NaN is
/// treated as 0 (everything trains). Deterministic for the same labels and seed.
pub fn stratified_holdout(
    labels: &[f64],
    holdout_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let fraction = if holdout_fraction.is_nan() {
        0.0
    } else {
        holdout_fraction.clamp(0.0, 1.0)
    };
    let mut train = Vec::with_capacity(labels.len());
    let mut holdout = Vec::new();
    for class in shuffled_classes(labels, seed) {
        let take = holdout_count(class.len(), fraction);
        holdout.extend_from_slice(&class[..take]);
        train.extend_from_slice(&class[take..]);
    }
    train.sort_unstable();
    holdout.sort_unstable();
    (train, holdout)
}

/// Stratified k-fold assignment of binary `labels`.
///
/// Returns `k` vectors of holdout indices, each sorted ascending; every index
/// in `0..labels.len()` is in exactly one fold. The shuffled class-0 rows are
/// dealt round-robin to folds 0, 1, ..., and the class-1 rows continue the
/// rotation where class 0 stopped, so fold sizes differ by at most one row
/// overall and by at most one row per class. Train indices for fold `i` are all
/// the other folds. `k == 0` returns no folds; `k` larger than the row count
/// leaves some folds empty. Deterministic for the same labels and seed, and uses
/// the same shuffle as [`stratified_holdout`].
pub fn stratified_kfold(labels: &[f64], k: usize, seed: u64) -> Vec<Vec<usize>> {
    if k == 0 {
        return Vec::new();
    }
    let mut folds: Vec<Vec<usize>> = (0..k)
        .map(|_| Vec::with_capacity(labels.len() / k + 1))
        .collect();
    let mut next = 0usize;
    for class in shuffled_classes(labels, seed) {
        for index in class {
            folds[next].push(index);
            next = (next + 1) % k;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    folds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 rows, about 20 % positive, positives spread irregularly.
    fn imbalanced_labels() -> Vec<f64> {
        (0..1000)
            .map(|i: usize| if (i * 37 + 11) % 100 < 20 { 1.0 } else { 0.0 })
            .collect()
    }

    fn count_positives(labels: &[f64], idx: &[usize]) -> usize {
        idx.iter().filter(|&&i| labels[i] == 1.0).count()
    }

    fn is_sorted_strictly(v: &[usize]) -> bool {
        v.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn holdout_is_deterministic() {
        let labels = imbalanced_labels();
        assert_eq!(
            stratified_holdout(&labels, 0.2, 42),
            stratified_holdout(&labels, 0.2, 42)
        );
    }

    #[test]
    fn holdout_different_seeds_differ() {
        let labels = imbalanced_labels();
        let (_, a) = stratified_holdout(&labels, 0.2, 1);
        let (_, b) = stratified_holdout(&labels, 0.2, 2);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[test]
    fn holdout_is_sorted_disjoint_and_covers_all_rows() {
        let labels = imbalanced_labels();
        let (train, holdout) = stratified_holdout(&labels, 0.2, 7);
        assert!(is_sorted_strictly(&train));
        assert!(is_sorted_strictly(&holdout));
        let mut seen = vec![0u8; labels.len()];
        for &i in train.iter().chain(&holdout) {
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&c| c == 1), "every row exactly once");
    }

    #[test]
    fn holdout_is_stratified() {
        let labels = imbalanced_labels();
        let positives = labels.iter().filter(|&&v| v == 1.0).count();
        let negatives = labels.len() - positives;
        assert_eq!(positives, 200);
        let (train, holdout) = stratified_holdout(&labels, 0.2, 42);
        // Exactly round(0.2 * class count) per class.
        assert_eq!(holdout.len(), 200);
        assert_eq!(count_positives(&labels, &holdout), 40);
        assert_eq!(count_positives(&labels, &train), 160);
        assert_eq!(holdout.len() - 40, negatives / 5);

        // An awkward size: class counts 7 and 13 with fraction 0.3 -> 2 + 4 rows.
        let odd: Vec<f64> = (0..20)
            .map(|i| if i % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        let pos = odd.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(pos, 7);
        let (train, holdout) = stratified_holdout(&odd, 0.3, 3);
        assert_eq!(count_positives(&odd, &holdout), 2);
        assert_eq!(holdout.len(), 2 + 4);
        assert_eq!(train.len(), 14);
        // Class ratio in the holdout within one row of the overall ratio.
        let expected_pos = holdout.len() as f64 * pos as f64 / odd.len() as f64;
        assert!((count_positives(&odd, &holdout) as f64 - expected_pos).abs() <= 1.0);
    }

    #[test]
    fn holdout_matches_documented_procedure() {
        let labels = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let mut neg: Vec<usize> = vec![1, 2, 4, 6, 7, 9];
        let mut pos: Vec<usize> = vec![0, 3, 5, 8];
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        neg.shuffle(&mut rng);
        pos.shuffle(&mut rng);
        // round(0.5 * 6) = 3 negatives, round(0.5 * 4) = 2 positives.
        let mut expected: Vec<usize> = neg[..3].iter().chain(&pos[..2]).copied().collect();
        expected.sort_unstable();
        let (_, holdout) = stratified_holdout(&labels, 0.5, 99);
        assert_eq!(holdout, expected);
    }

    #[test]
    fn holdout_small_classes_keep_one_row_each_side() {
        // Two positives among twenty rows: round(0.1 * 2) = 0, bumped to 1.
        let mut labels = vec![0.0; 20];
        labels[4] = 1.0;
        labels[15] = 1.0;
        let (train, holdout) = stratified_holdout(&labels, 0.1, 5);
        assert_eq!(count_positives(&labels, &holdout), 1);
        assert_eq!(count_positives(&labels, &train), 1);
        assert_eq!(holdout.len(), 1 + 2); // round(0.1 * 18) = 2 negatives

        // round(0.8 * 2) = 2 would empty the training side; capped at 1.
        let (train, holdout) = stratified_holdout(&labels, 0.8, 5);
        assert_eq!(count_positives(&labels, &holdout), 1);
        assert_eq!(count_positives(&labels, &train), 1);

        // A single-row class goes wherever rounding puts it.
        let single = [1.0, 0.0, 0.0, 0.0];
        let (train, _) = stratified_holdout(&single, 0.25, 5);
        assert!(train.contains(&0));
    }

    #[test]
    fn holdout_edge_fractions_and_empty_input() {
        let labels = imbalanced_labels();
        let all: Vec<usize> = (0..labels.len()).collect();
        assert_eq!(stratified_holdout(&labels, 0.0, 1), (all.clone(), vec![]));
        assert_eq!(stratified_holdout(&labels, 1.0, 1), (vec![], all.clone()));
        assert_eq!(stratified_holdout(&labels, -0.5, 1), (all.clone(), vec![]));
        assert_eq!(stratified_holdout(&labels, 3.0, 1), (vec![], all.clone()));
        assert_eq!(stratified_holdout(&labels, f64::NAN, 1), (all, vec![]));
        assert_eq!(stratified_holdout(&[], 0.2, 1), (vec![], vec![]));
    }

    #[test]
    fn kfold_partitions_every_row_once() {
        let labels = imbalanced_labels();
        let folds = stratified_kfold(&labels, 5, 42);
        assert_eq!(folds.len(), 5);
        let mut seen = vec![0u8; labels.len()];
        for fold in &folds {
            assert!(is_sorted_strictly(fold));
            for &i in fold {
                seen[i] += 1;
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "every row in exactly one fold"
        );
    }

    #[test]
    fn kfold_is_stratified_and_balanced() {
        // 9 positives, 14 negatives, 23 rows, 4 folds.
        let labels: Vec<f64> = (0..23)
            .map(|i| if i % 10 < 3 { 1.0 } else { 0.0 })
            .collect();
        let positives = labels.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(positives, 9);
        let folds = stratified_kfold(&labels, 4, 11);
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        let pos: Vec<usize> = folds.iter().map(|f| count_positives(&labels, f)).collect();
        let neg: Vec<usize> = sizes.iter().zip(&pos).map(|(s, p)| s - p).collect();
        for counts in [&sizes, &pos, &neg] {
            let max = counts.iter().max().copied().unwrap_or(0);
            let min = counts.iter().min().copied().unwrap_or(0);
            assert!(max - min <= 1, "unbalanced folds: {counts:?}");
        }
        assert_eq!(sizes.iter().sum::<usize>(), 23);
        assert_eq!(pos.iter().sum::<usize>(), 9);
        // Per-fold class ratio within one row of the overall ratio.
        for (size, p) in sizes.iter().zip(&pos) {
            let expected = *size as f64 * 9.0 / 23.0;
            assert!((*p as f64 - expected).abs() <= 1.0);
        }
    }

    #[test]
    fn kfold_deterministic_and_seed_dependent() {
        let labels = imbalanced_labels();
        assert_eq!(
            stratified_kfold(&labels, 5, 3),
            stratified_kfold(&labels, 5, 3)
        );
        assert_ne!(
            stratified_kfold(&labels, 5, 3),
            stratified_kfold(&labels, 5, 4)
        );
    }

    #[test]
    fn kfold_degenerate_k() {
        let labels = [0.0, 1.0, 0.0];
        assert!(stratified_kfold(&labels, 0, 1).is_empty());
        assert_eq!(stratified_kfold(&labels, 1, 1), vec![vec![0, 1, 2]]);
        let folds = stratified_kfold(&labels, 5, 1);
        assert_eq!(folds.len(), 5);
        assert_eq!(folds.iter().filter(|f| f.is_empty()).count(), 2);
        assert_eq!(folds.iter().map(Vec::len).sum::<usize>(), 3);
        assert_eq!(stratified_kfold(&[], 3, 1), vec![Vec::<usize>::new(); 3]);
    }
}
