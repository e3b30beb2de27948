//! Gradient-boosted trees: training through LightGBM and prediction in pure Rust.
//!
//! Training (cargo feature `training`, which only the trainer and the CLI
//! enable, so other services build without LightGBM's C++ library) goes through
//! the `lightgbm3` bindings and yields LightGBM's own text model format, so an
//! artifact produced here opens unchanged in LightGBM's Python package.
//! Serving cannot use LightGBM's `Booster` for prediction because it is not `Send`
//! (and it is FFI); [`GbdtModel`] therefore parses the same text format and walks the
//! trees in plain Rust, reproducing LightGBM's decision rules (missing values, zero
//! handling, summation order and sigmoid) so that its probabilities agree with
//! LightGBM's to floating-point precision.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

#[cfg(feature = "training")]
use lightgbm3::{Booster, Dataset};

use crate::MlError;
pub use modelbus_dataset::spec::GbdtParams;

/// LightGBM's `kZeroThreshold` (declared as the float literal `1e-35f` in `meta.h`):
/// values whose magnitude is at most this are treated as zero.
const K_ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// Bit of `decision_type` marking a categorical split.
const CATEGORICAL_MASK: u8 = 1;
/// Bit of `decision_type` sending missing values to the left child.
const DEFAULT_LEFT_MASK: u8 = 2;

#[cfg(feature = "training")]
/// Trains a binary LightGBM model and returns it in LightGBM's own text format (which
/// loads in LightGBM's Python package and in [`GbdtModel::parse`]).
///
/// `x` is row-major with `n_features` columns (NaN means missing; infinities are
/// rejected), `y` holds one 0/1 label per row and `feature_names` has one name per column
/// (or is empty, in which case LightGBM names them `Column_0`, `Column_1`, ...).
/// `valid` is an optional `(x, y)` validation set of the same width; when given and
/// `params.early_stopping_rounds > 0`, training stops once the validation AUC has not
/// improved for that many rounds and the non-improving trees are dropped.
///
/// Training is deterministic: LightGBM runs single-threaded with `deterministic=true`,
/// `force_row_wise=true` and all its seeds derived from `seed`, so the same inputs and
/// seed give a byte-identical model string.
///
/// Shape and label problems are reported as [`MlError::InvalidData`], anything LightGBM
/// refuses as [`MlError::LightGbm`] with the library's message.
pub fn train_gbdt(
    x: &[f64],
    n_features: usize,
    y: &[f64],
    feature_names: &[String],
    valid: Option<(&[f64], &[f64])>,
    params: &GbdtParams,
    seed: u64,
) -> Result<String, MlError> {
    params.validate().map_err(MlError::InvalidData)?;
    let n_features_i32 = i32::try_from(n_features).map_err(|_| {
        MlError::InvalidData(format!("n_features={n_features} is too large for LightGBM"))
    })?;
    let labels = check_matrix("training", x, n_features, y)?;
    check_both_classes("training", y)?;
    check_feature_names(feature_names, n_features)?;
    let valid = match valid {
        Some((vx, vy)) => {
            let vlabels = check_matrix("validation", vx, n_features, vy)?;
            check_both_classes("validation", vy)?;
            Some((vx, vlabels))
        }
        None => None,
    };

    let mut train = Dataset::from_slice(x, &labels, n_features_i32, true).map_err(lgbm_err)?;
    if !feature_names.is_empty() {
        train.set_feature_names(feature_names).map_err(lgbm_err)?;
    }

    let early_stopping = valid.is_some() && params.early_stopping_rounds > 0;
    let config = lightgbm_config(params, seed, early_stopping);
    let booster = match valid {
        Some((vx, vlabels)) => {
            let vset = Dataset::from_slice_with_reference(
                vx,
                &vlabels,
                n_features_i32,
                true,
                Some(&train),
            )
            .map_err(lgbm_err)?;
            Booster::train_with_valid(train, Some(vset), &config)
        }
        None => Booster::train(train, &config),
    }
    .map_err(lgbm_err)?;
    booster.save_string().map_err(lgbm_err)
}

#[cfg(feature = "training")]
/// Builds the LightGBM parameter object; reproducibility settings are not negotiable.
fn lightgbm_config(params: &GbdtParams, seed: u64, early_stopping: bool) -> serde_json::Value {
    let mut config = serde_json::json!({
        "objective": "binary",
        "metric": "binary_logloss",
        "boosting": "gbdt",
        "num_iterations": params.num_iterations,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "deterministic": true,
        "force_row_wise": true,
        "num_threads": 1,
        "seed": derive_seed(seed, 0),
        "bagging_seed": derive_seed(seed, 1),
        "feature_fraction_seed": derive_seed(seed, 2),
        "data_random_seed": derive_seed(seed, 3),
        "verbosity": -1,
    });
    if early_stopping {
        // `lightgbm3` drives early stopping itself from exactly this key (with
        // metric=binary_logloss, lower is better; log loss keeps probabilities
        // calibrated where AUC would stop early) and rolls back the non-improving trees.
        config["early_stopping_rounds"] = serde_json::json!(params.early_stopping_rounds);
    }
    config
}

/// Derives one of LightGBM's (non-negative, 31-bit) seeds from the caller's seed with a
/// splitmix64 step, so that distinct streams get unrelated values.
#[cfg(feature = "training")]
fn derive_seed(seed: u64, stream: u64) -> i32 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 64 - 33 = 31 bits: always fits a non-negative i32.
    (z >> 33) as i32
}

#[cfg(feature = "training")]
/// Maps a `lightgbm3` error to [`MlError::LightGbm`], keeping LightGBM's own message.
fn lgbm_err(e: lightgbm3::Error) -> MlError {
    let msg = e.to_string();
    match msg.strip_prefix("LightGBM error: ") {
        Some(rest) => MlError::LightGbm(rest.to_owned()),
        None => MlError::LightGbm(msg),
    }
}

/// Checks the shape of one (x, y) pair and converts the 0/1 labels to LightGBM's `f32`.
#[cfg(feature = "training")]
fn check_matrix(what: &str, x: &[f64], n_features: usize, y: &[f64]) -> Result<Vec<f32>, MlError> {
    let bad = |msg: String| Err(MlError::InvalidData(format!("{what} set: {msg}")));
    if n_features == 0 {
        return bad("n_features must be at least 1".to_owned());
    }
    if !x.len().is_multiple_of(n_features) {
        return bad(format!(
            "x has {} values, which is not a multiple of n_features={n_features}",
            x.len()
        ));
    }
    let n_rows = x.len() / n_features;
    if n_rows == 0 {
        return bad("no rows".to_owned());
    }
    if i32::try_from(n_rows).is_err() {
        return bad(format!("{n_rows} rows is more than LightGBM supports"));
    }
    if y.len() != n_rows {
        return bad(format!("x has {n_rows} rows but y has {} labels", y.len()));
    }
    if let Some(i) = x.iter().position(|v| v.is_infinite()) {
        return bad(format!(
            "row {} column {} is infinite; use NaN for missing values",
            i / n_features,
            i % n_features
        ));
    }
    let mut labels = Vec::with_capacity(n_rows);
    for (i, &v) in y.iter().enumerate() {
        if v == 0.0 {
            labels.push(0.0_f32);
        } else if v == 1.0 {
            labels.push(1.0_f32);
        } else {
            return bad(format!(
                "label of row {i} is {v}; binary labels must be 0 or 1"
            ));
        }
    }
    Ok(labels)
}

/// Rejects label vectors holding a single class: AUC (and the model) would be meaningless.
#[cfg(feature = "training")]
fn check_both_classes(what: &str, y: &[f64]) -> Result<(), MlError> {
    let positives = y.iter().filter(|&&v| v == 1.0).count();
    if positives == 0 || positives == y.len() {
        return Err(MlError::InvalidData(format!(
            "{what} set has only one class ({positives} positives out of {} rows); both 0 and 1 are needed",
            y.len()
        )));
    }
    Ok(())
}

/// Checks feature names up front, so they round-trip unchanged through the text model
/// (which separates names by spaces) instead of being rewritten or refused by LightGBM.
#[cfg(feature = "training")]
fn check_feature_names(names: &[String], n_features: usize) -> Result<(), MlError> {
    if names.is_empty() {
        return Ok(());
    }
    if names.len() != n_features {
        return Err(MlError::InvalidData(format!(
            "{} feature names given for {n_features} features",
            names.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(MlError::InvalidData(format!("feature name #{i} is empty")));
        }
        if let Some(c) = name
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "\",:[]{}".contains(*c))
        {
            return Err(MlError::InvalidData(format!(
                "feature name {name:?} contains {c:?}; LightGBM model files cannot hold whitespace or any of \",:[]{{}}"
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(MlError::InvalidData(format!(
                "feature name {name:?} appears more than once"
            )));
        }
    }
    Ok(())
}

/// How a numerical split treats missing values (bits 2-3 of LightGBM's `decision_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingType {
    /// No missing handling: NaN is read as 0.0 and compared with the threshold.
    None,
    /// Zero (|v| <= kZeroThreshold, and NaN read as 0.0) goes the default direction.
    Zero,
    /// NaN goes the default direction.
    NaN,
}

/// One internal node of a tree.
#[derive(Debug, Clone)]
struct Node {
    feature: usize,
    threshold: f64,
    default_left: bool,
    missing: MissingType,
    /// Child indices as LightGBM stores them: `>= 0` internal node, `< 0` leaf `!child`.
    left: i32,
    right: i32,
    gain: f32,
}

impl Node {
    /// LightGBM's `Tree::NumericalDecision`, step for step.
    #[inline]
    fn next(&self, value: f64) -> i32 {
        let mut fval = value;
        if fval.is_nan() && self.missing != MissingType::NaN {
            fval = 0.0;
        }
        let is_missing = match self.missing {
            MissingType::None => false,
            MissingType::Zero => is_zero(fval),
            MissingType::NaN => fval.is_nan(),
        };
        if is_missing {
            if self.default_left {
                self.left
            } else {
                self.right
            }
        } else if fval <= self.threshold {
            self.left
        } else {
            self.right
        }
    }
}

/// LightGBM's `Tree::IsZero`.
#[inline]
fn is_zero(v: f64) -> bool {
    (-K_ZERO_THRESHOLD..=K_ZERO_THRESHOLD).contains(&v)
}

/// One regression tree; `nodes` is empty for a single-leaf tree.
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    leaf_values: Vec<f64>,
}

impl Tree {
    /// The tree's output for one row (LightGBM's `Tree::Predict`).
    #[inline]
    fn output(&self, row: &[f64]) -> f64 {
        if self.nodes.is_empty() {
            return self.leaf_values[0];
        }
        let mut node = 0_i32;
        while node >= 0 {
            let n = &self.nodes[node as usize];
            node = n.next(feature_value(row, n.feature));
        }
        self.leaf_values[!node as usize]
    }
}

/// Reads one feature the way LightGBM's C API hands a dense row to the trees: absent
/// features and values with |v| <= kZeroThreshold become exactly 0.0, NaN stays NaN.
#[inline]
fn feature_value(row: &[f64], feature: usize) -> f64 {
    match row.get(feature) {
        Some(&v) if v.is_nan() || v.abs() > K_ZERO_THRESHOLD => v,
        _ => 0.0,
    }
}

/// A LightGBM binary model parsed from its text format, predicting in pure Rust.
///
/// It is `Send + Sync` and uses no FFI, so serving can share one instance across threads,
/// which LightGBM's own `Booster` does not allow. Predictions reproduce LightGBM's
/// (`predict` on a dense row) to floating-point precision. Only numerical splits of
/// `objective=binary` gbdt models are supported; categorical splits, linear trees,
/// multiclass and random-forest models are refused by [`GbdtModel::parse`].
#[derive(Debug, Clone)]
pub struct GbdtModel {
    trees: Vec<Tree>,
    sigmoid: f64,
    num_features: usize,
    feature_names: Vec<String>,
}

impl GbdtModel {
    /// Parses LightGBM's text model format (as written by `save_model` /
    /// `model_to_string`), validating every tree so that prediction cannot fail later.
    ///
    /// Errors are [`MlError::InvalidModel`] naming the tree and key that is missing or
    /// wrong; a truncated text is detected by the missing `end of trees` line or by a
    /// mismatch with the header's `tree_sizes`.
    pub fn parse(text: &str) -> Result<Self, MlError> {
        let lines: Vec<&str> = text.lines().collect();
        let mut pos = 0;
        while pos < lines.len() && lines[pos].trim().is_empty() {
            pos += 1;
        }
        match lines.get(pos) {
            None => return Err(invalid("model text is empty")),
            Some(line) if line.trim() == "tree" => pos += 1,
            Some(line) => {
                return Err(invalid(format!(
                    "line {}: expected `tree` (the first line of a LightGBM gbdt text model), found `{}`",
                    pos + 1,
                    snippet(line)
                )));
            }
        }

        // Header: key=value lines up to the first tree.
        let mut header: HashMap<&str, &str> = HashMap::new();
        while pos < lines.len() && !lines[pos].starts_with("Tree=") {
            let line = lines[pos];
            if line == "end of trees" {
                return Err(invalid("the model has no trees"));
            }
            if !line.trim().is_empty() {
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                if header.insert(key, value).is_some() {
                    return Err(invalid(format!(
                        "header: key `{key}` appears twice (line {})",
                        pos + 1
                    )));
                }
            }
            pos += 1;
        }
        let header_value = |key: &str| {
            header
                .get(key)
                .copied()
                .ok_or_else(|| invalid(format!("header: missing key `{key}`")))
        };

        let num_class: i64 = parse_header_scalar("num_class", header_value("num_class")?)?;
        if num_class != 1 {
            return Err(invalid(format!(
                "header: num_class={num_class}; only binary models (num_class=1) are supported"
            )));
        }
        if let Some(v) = header.get("num_tree_per_iteration") {
            let per_iter: i64 = parse_header_scalar("num_tree_per_iteration", v)?;
            if per_iter != 1 {
                return Err(invalid(format!(
                    "header: num_tree_per_iteration={per_iter}; only binary models (1 tree per iteration) are supported"
                )));
            }
        }
        if header.contains_key("average_output") {
            return Err(invalid(
                "header: `average_output` is set; random-forest models are not supported",
            ));
        }
        let max_feature_idx: usize =
            parse_header_scalar("max_feature_idx", header_value("max_feature_idx")?)?;
        let num_features = max_feature_idx
            .checked_add(1)
            .ok_or_else(|| invalid("header: max_feature_idx is too large"))?;
        let sigmoid = parse_objective(header_value("objective")?)?;
        let feature_names: Vec<String> = header_value("feature_names")?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if feature_names.len() != num_features {
            return Err(invalid(format!(
                "header: feature_names has {} names but max_feature_idx={max_feature_idx} implies {num_features}",
                feature_names.len()
            )));
        }
        let expected_trees = match header.get("tree_sizes") {
            None => None,
            Some(v) => Some(parse_list::<usize>(v, "header", "tree_sizes")?.len()),
        };

        // Trees: "Tree=i" followed by key=value lines up to a blank line.
        let mut trees = Vec::new();
        let mut saw_end = false;
        while pos < lines.len() {
            let line = lines[pos];
            if line.trim().is_empty() {
                pos += 1;
                continue;
            }
            if line == "end of trees" {
                saw_end = true;
                break;
            }
            let index = trees.len();
            let Some(id) = line.strip_prefix("Tree=") else {
                return Err(invalid(format!(
                    "line {}: expected `Tree={index}` or `end of trees`, found `{}`",
                    pos + 1,
                    snippet(line)
                )));
            };
            if id.trim().parse::<usize>().ok() != Some(index) {
                return Err(invalid(format!(
                    "line {}: expected `Tree={index}`, found `{}`",
                    pos + 1,
                    snippet(line)
                )));
            }
            pos += 1;
            let mut fields: HashMap<&str, &str> = HashMap::new();
            while pos < lines.len() {
                let l = lines[pos];
                if l.trim().is_empty() || l.starts_with("Tree=") || l == "end of trees" {
                    break;
                }
                let Some((key, value)) = l.split_once('=') else {
                    return Err(invalid(format!(
                        "tree {index}: line {} is not key=value: `{}`",
                        pos + 1,
                        snippet(l)
                    )));
                };
                if fields.insert(key, value).is_some() {
                    return Err(invalid(format!(
                        "tree {index}: key `{key}` appears twice (line {})",
                        pos + 1
                    )));
                }
                pos += 1;
            }
            trees.push(parse_tree(index, &fields, num_features)?);
        }
        if !saw_end {
            return Err(invalid(format!(
                "missing `end of trees` after tree {}: the model text is truncated",
                trees.len().saturating_sub(1)
            )));
        }
        if trees.is_empty() {
            return Err(invalid("the model has no trees"));
        }
        if let Some(expected) = expected_trees
            && expected != trees.len()
        {
            return Err(invalid(format!(
                "header: tree_sizes lists {expected} trees but {} were found",
                trees.len()
            )));
        }
        Ok(Self {
            trees,
            sigmoid,
            num_features,
            feature_names,
        })
    }

    /// Number of input features the model expects (LightGBM's `max_feature_idx + 1`).
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Feature names stored in the model, in column order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Number of trees (boosting rounds) in the model, e.g. to see where early stopping
    /// cut training.
    pub fn num_trees(&self) -> usize {
        self.trees.len()
    }

    /// Raw score (log-odds) for one row: the sum of the trees' leaf values in order.
    ///
    /// LightGBM folds the initial score (`boost_from_average`) into the first tree's
    /// leaves, so no separate offset is added. `row` should have [`Self::num_features`]
    /// values (NaN = missing); like LightGBM's sparse input, features beyond the end of a
    /// shorter row read as 0.0 and extra values are ignored, so callers should check the
    /// width at their boundary.
    pub fn predict_raw(&self, row: &[f64]) -> f64 {
        let mut sum = 0.0;
        for tree in &self.trees {
            sum += tree.output(row);
        }
        sum
    }

    /// Probability of class 1 for one row: `1 / (1 + exp(-sigmoid * raw))`, as LightGBM's
    /// binary objective converts raw scores.
    pub fn predict_proba(&self, row: &[f64]) -> f64 {
        1.0 / (1.0 + (-self.sigmoid * self.predict_raw(row)).exp())
    }

    /// Total split gain per feature (LightGBM's `feature_importance(importance_type=gain)`),
    /// for explaining which columns drive the model.
    pub fn feature_importance_gain(&self) -> Vec<f64> {
        let mut importance = vec![0.0; self.num_features];
        for node in self.trees.iter().flat_map(|t| &t.nodes) {
            if node.gain > 0.0 {
                importance[node.feature] += f64::from(node.gain);
            }
        }
        importance
    }
}

fn invalid(msg: impl Into<String>) -> MlError {
    MlError::InvalidModel(msg.into())
}

/// The start of a line, for error messages about garbled text.
fn snippet(line: &str) -> String {
    const MAX: usize = 60;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

fn parse_header_scalar<T: FromStr>(key: &str, value: &str) -> Result<T, MlError> {
    value.trim().parse().map_err(|_| {
        invalid(format!(
            "header: key `{key}` has value `{}`, expected a non-negative integer",
            snippet(value)
        ))
    })
}

/// Parses `objective=binary sigmoid:<s>` and returns the sigmoid parameter.
fn parse_objective(value: &str) -> Result<f64, MlError> {
    let mut tokens = value.split_whitespace();
    if tokens.next() != Some("binary") {
        return Err(invalid(format!(
            "header: objective=`{}`; only objective=binary is supported",
            snippet(value)
        )));
    }
    let sigmoid = tokens
        .find_map(|t| t.strip_prefix("sigmoid:"))
        .ok_or_else(|| invalid("header: objective=binary without `sigmoid:<value>`"))?;
    match sigmoid.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(invalid(format!(
            "header: objective sigmoid `{sigmoid}` must be a finite number > 0"
        ))),
    }
}

/// Parses a space-separated list; `place` is `header` or `tree N` for error messages.
fn parse_list<T: FromStr>(value: &str, place: &str, key: &str) -> Result<Vec<T>, MlError> {
    value
        .split(' ')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, tok)| {
            tok.parse().map_err(|_| {
                invalid(format!(
                    "{place}: key `{key}` value #{i} `{}` is not a valid {}",
                    snippet(tok),
                    std::any::type_name::<T>()
                ))
            })
        })
        .collect()
}

/// Looks up a tree key and parses it into exactly `expected` values.
fn tree_array<T: FromStr>(
    index: usize,
    fields: &HashMap<&str, &str>,
    key: &str,
    expected: usize,
) -> Result<Vec<T>, MlError> {
    let value = fields
        .get(key)
        .ok_or_else(|| invalid(format!("tree {index}: missing key `{key}`")))?;
    tree_array_from(index, value, key, expected)
}

/// Like [`tree_array`] for optional keys: a missing key gives `expected` default values.
fn tree_array_or_default<T: FromStr + Clone + Default>(
    index: usize,
    fields: &HashMap<&str, &str>,
    key: &str,
    expected: usize,
) -> Result<Vec<T>, MlError> {
    match fields.get(key) {
        Some(value) => tree_array_from(index, value, key, expected),
        None => Ok(vec![T::default(); expected]),
    }
}

fn tree_array_from<T: FromStr>(
    index: usize,
    value: &str,
    key: &str,
    expected: usize,
) -> Result<Vec<T>, MlError> {
    let values = parse_list(value, &format!("tree {index}"), key)?;
    if values.len() != expected {
        return Err(invalid(format!(
            "tree {index}: key `{key}` has {} values, expected {expected}",
            values.len()
        )));
    }
    Ok(values)
}

fn tree_scalar<T: FromStr + Display>(
    index: usize,
    fields: &HashMap<&str, &str>,
    key: &str,
) -> Result<T, MlError> {
    let value = fields
        .get(key)
        .ok_or_else(|| invalid(format!("tree {index}: missing key `{key}`")))?;
    value.trim().parse().map_err(|_| {
        invalid(format!(
            "tree {index}: key `{key}` has value `{}`, expected a non-negative integer",
            snippet(value)
        ))
    })
}

/// Builds and validates one tree from its key=value fields (LightGBM's `Tree::Tree(const
/// char*)`), guaranteeing that every walk from the root ends in a leaf.
fn parse_tree(
    index: usize,
    fields: &HashMap<&str, &str>,
    num_features: usize,
) -> Result<Tree, MlError> {
    let num_leaves: usize = tree_scalar(index, fields, "num_leaves")?;
    if num_leaves == 0 {
        return Err(invalid(format!(
            "tree {index}: key `num_leaves` is 0, expected at least 1"
        )));
    }
    let num_cat: usize = tree_scalar(index, fields, "num_cat")?;
    if num_cat > 0 {
        return Err(invalid(format!(
            "tree {index}: key `num_cat`={num_cat}: categorical splits are not supported by the pure-Rust predictor (modelbus trains numerical features only)"
        )));
    }
    if let Some(v) = fields.get("is_linear")
        && v.trim() != "0"
    {
        return Err(invalid(format!(
            "tree {index}: key `is_linear`={v}: linear trees are not supported"
        )));
    }
    let leaf_values: Vec<f64> = tree_array(index, fields, "leaf_value", num_leaves)?;
    if let Some(i) = leaf_values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "tree {index}: key `leaf_value` value #{i} is not a finite number"
        )));
    }
    if num_leaves == 1 {
        return Ok(Tree {
            nodes: Vec::new(),
            leaf_values,
        });
    }

    let n = num_leaves - 1;
    let split_feature: Vec<usize> = tree_array(index, fields, "split_feature", n)?;
    let threshold: Vec<f64> = tree_array(index, fields, "threshold", n)?;
    let decision_type: Vec<u8> = tree_array_or_default(index, fields, "decision_type", n)?;
    let left_child: Vec<i32> = tree_array(index, fields, "left_child", n)?;
    let right_child: Vec<i32> = tree_array(index, fields, "right_child", n)?;
    let split_gain: Vec<f32> = tree_array_or_default(index, fields, "split_gain", n)?;

    let check_child = |node: usize, key: &str, child: i32| -> Result<(), MlError> {
        let ok = if child >= 0 {
            // LightGBM numbers internal nodes in creation order, so a child always has a
            // larger index than its parent; requiring it rules out cycles.
            let c = child as usize;
            c > node && c < n
        } else {
            (!child as usize) < num_leaves
        };
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "tree {index}: key `{key}` of node {node} is {child}, which is not a later node (< {n}) or a leaf (~child < {num_leaves})"
            )))
        }
    };

    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let dt = decision_type[i];
        if dt & CATEGORICAL_MASK != 0 {
            return Err(invalid(format!(
                "tree {index}: key `decision_type` of node {i} is {dt}, a categorical split; categorical splits are not supported by the pure-Rust predictor (modelbus trains numerical features only)"
            )));
        }
        let missing = match (dt >> 2) & 3 {
            0 => MissingType::None,
            1 => MissingType::Zero,
            2 => MissingType::NaN,
            other => {
                return Err(invalid(format!(
                    "tree {index}: key `decision_type` of node {i} is {dt}, with unknown missing type {other}"
                )));
            }
        };
        let feature = split_feature[i];
        if feature >= num_features {
            return Err(invalid(format!(
                "tree {index}: key `split_feature` of node {i} is {feature}, but the model has {num_features} features"
            )));
        }
        if threshold[i].is_nan() {
            return Err(invalid(format!(
                "tree {index}: key `threshold` of node {i} is NaN"
            )));
        }
        check_child(i, "left_child", left_child[i])?;
        check_child(i, "right_child", right_child[i])?;
        nodes.push(Node {
            feature,
            threshold: threshold[i],
            default_left: dt & DEFAULT_LEFT_MASK != 0,
            missing,
            left: left_child[i],
            right: right_child[i],
            gain: split_gain[i],
        });
    }
    Ok(Tree { nodes, leaf_values })
}

#[cfg(all(test, feature = "training"))]
mod tests {
    use super::*;
    use lightgbm3::ImportanceType;
    use std::error::Error;
    use std::time::Instant;

    type TestResult = Result<(), Box<dyn Error>>;

    const CHURN_CSV: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/bank-churn/churn_modelling.csv"
    );
    /// CreditScore, Age, Tenure, Balance, NumOfProducts, HasCrCard, IsActiveMember,
    /// EstimatedSalary (0-based CSV columns).
    const NUMERIC_COLUMNS: [usize; 8] = [3, 6, 7, 8, 9, 10, 11, 12];
    const TARGET_COLUMN: usize = 13;
    const N_FEATURES: usize = 9;

    /// The churn data: 8 numeric columns plus a synthetic column holding NaN, exact
    /// zeros and an age-derived signal, so that missing-value splits appear in the model.
    struct Churn {
        x: Vec<f64>,
        y: Vec<f64>,
        names: Vec<String>,
    }

    impl Churn {
        fn n_rows(&self) -> usize {
            self.y.len()
        }

        /// Rows `[from, to)` as (x, y).
        fn rows(&self, from: usize, to: usize) -> (&[f64], &[f64]) {
            (
                &self.x[from * N_FEATURES..to * N_FEATURES],
                &self.y[from..to],
            )
        }
    }

    fn load_churn() -> Result<Churn, Box<dyn Error>> {
        let text = std::fs::read_to_string(CHURN_CSV)?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
        let mut names: Vec<String> = NUMERIC_COLUMNS
            .iter()
            .map(|&c| header[c].to_owned())
            .collect();
        names.push("Synthetic".to_owned());
        assert_eq!(header[TARGET_COLUMN], "Exited");

        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (i, line) in lines.enumerate() {
            let fields: Vec<&str> = line.trim_end().split(',').collect();
            if fields.len() != header.len() {
                return Err(format!("row {i}: {} fields", fields.len()).into());
            }
            for &c in &NUMERIC_COLUMNS {
                x.push(fields[c].parse::<f64>()?);
            }
            let age: f64 = fields[6].parse()?;
            let products: f64 = fields[9].parse()?;
            x.push(match i % 7 {
                0 => f64::NAN,
                1 => 0.0,
                _ => age * 0.5 + products * 3.0 + ((i * 7919) % 13) as f64,
            });
            y.push(fields[TARGET_COLUMN].parse::<f64>()?);
        }
        Ok(Churn { x, y, names })
    }

    /// ROC AUC by the rank-sum (Mann-Whitney) formula, averaging ranks over ties.
    fn roc_auc(scores: &[f64], labels: &[f64]) -> f64 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let mut rank_sum_pos = 0.0;
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
                j += 1;
            }
            let avg_rank = (i + j) as f64 / 2.0 + 1.0;
            for &k in &order[i..=j] {
                if labels[k] == 1.0 {
                    rank_sum_pos += avg_rank;
                }
            }
            i = j + 1;
        }
        let n_pos = labels.iter().filter(|&&l| l == 1.0).count() as f64;
        let n_neg = labels.len() as f64 - n_pos;
        (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    }

    /// Rows with NaN, exact zeros and sub-kZeroThreshold values sprinkled over every
    /// column, so that NaN-as-zero (missing type None) paths are exercised too.
    fn perturbed(x: &[f64]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| match i % 23 {
                0 => f64::NAN,
                5 => 0.0,
                11 => 1e-36,
                17 => -0.0,
                _ => v,
            })
            .collect()
    }

    /// Compares the pure-Rust predictor with LightGBM on every row of `x`; returns the
    /// largest absolute difference of probabilities and of raw scores.
    fn max_abs_diff(text: &str, x: &[f64]) -> Result<(f64, f64), Box<dyn Error>> {
        let model = GbdtModel::parse(text)?;
        let booster = Booster::from_string(text)?;
        let nf = model.num_features();
        let n = i32::try_from(nf)?;
        let proba = booster.predict_with_params(x, n, true, "num_threads=1")?;
        let raw = booster.raw_scores_with_params(x, n, true, "num_threads=1")?;
        assert_eq!(proba.len(), x.len() / nf);
        let (mut max_p, mut max_r) = (0.0_f64, 0.0_f64);
        for (i, row) in x.chunks_exact(nf).enumerate() {
            max_p = max_p.max((model.predict_proba(row) - proba[i]).abs());
            max_r = max_r.max((model.predict_raw(row) - raw[i]).abs());
        }
        Ok((max_p, max_r))
    }

    #[test]
    fn gbdt_model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GbdtModel>();
    }

    #[test]
    fn gbdt_matches_lightgbm_on_churn() -> TestResult {
        let data = load_churn()?;
        let params = GbdtParams::default();
        let start = Instant::now();
        let text = train_gbdt(&data.x, N_FEATURES, &data.y, &data.names, None, &params, 7)?;
        println!(
            "trained {} rows x {N_FEATURES} features, {} iterations in {:.2?}",
            data.n_rows(),
            params.num_iterations,
            start.elapsed()
        );

        let model = GbdtModel::parse(&text)?;
        assert_eq!(model.num_features(), N_FEATURES);
        assert_eq!(model.feature_names(), data.names.as_slice());
        assert_eq!(model.num_trees(), params.num_iterations as usize);
        // The synthetic column must be split on with NaN-aware splits, and Balance (with
        // its many exact zeros) must be used, or the missing-value paths went untested.
        let nodes: Vec<&Node> = model.trees.iter().flat_map(|t| &t.nodes).collect();
        assert!(
            nodes
                .iter()
                .any(|n| n.feature == 8 && n.missing == MissingType::NaN)
        );
        assert!(nodes.iter().any(|n| n.feature == 3));

        let (p, r) = max_abs_diff(&text, &data.x)?;
        println!("max |proba diff| = {p:e}, max |raw diff| = {r:e} on the training rows");
        assert!(p < 1e-12 && r < 1e-12, "proba diff {p}, raw diff {r}");
        let (p, r) = max_abs_diff(&text, &perturbed(&data.x))?;
        println!("max |proba diff| = {p:e}, max |raw diff| = {r:e} on perturbed rows");
        assert!(p < 1e-12 && r < 1e-12, "proba diff {p}, raw diff {r}");

        // Gain importance agrees with LightGBM's own.
        let ours = model.feature_importance_gain();
        let theirs = Booster::from_string(&text)?.feature_importance(ImportanceType::Gain)?;
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{ours:?} vs {theirs:?}"
            );
        }
        assert!(ours.iter().all(|&g| g >= 0.0) && ours.iter().any(|&g| g > 0.0));
        Ok(())
    }

    #[test]
    fn gbdt_early_stopping_matches_lightgbm() -> TestResult {
        let data = load_churn()?;
        let (tx, ty) = data.rows(0, 8000);
        let (vx, vy) = data.rows(8000, data.n_rows());
        let params = GbdtParams {
            num_iterations: 1000,
            learning_rate: 0.1,
            ..GbdtParams::default()
        };
        let text = train_gbdt(tx, N_FEATURES, ty, &data.names, Some((vx, vy)), &params, 3)?;
        let model = GbdtModel::parse(&text)?;
        println!(
            "early stopping kept {} of {} trees",
            model.num_trees(),
            params.num_iterations
        );
        assert!(model.num_trees() < params.num_iterations as usize);
        assert!(model.num_trees() > 1);
        let (p, r) = max_abs_diff(&text, &data.x)?;
        println!("early-stopped model: max |proba diff| = {p:e}, max |raw diff| = {r:e}");
        assert!(p < 1e-12 && r < 1e-12, "proba diff {p}, raw diff {r}");
        Ok(())
    }

    #[test]
    fn gbdt_training_is_deterministic() -> TestResult {
        let data = load_churn()?;
        let (x, y) = data.rows(0, 4000);
        let params = GbdtParams {
            num_iterations: 40,
            ..GbdtParams::default()
        };
        let a = train_gbdt(x, N_FEATURES, y, &data.names, None, &params, 11)?;
        let b = train_gbdt(x, N_FEATURES, y, &data.names, None, &params, 11)?;
        assert!(a == b, "same seed gave different model text");
        let c = train_gbdt(x, N_FEATURES, y, &data.names, None, &params, 12)?;
        // The parameters section records the seeds, so compare the trees themselves:
        // bagging and feature sampling must actually follow the seed.
        let trees = |t: &str| t.split("end of trees").next().map(str::to_owned);
        assert_ne!(trees(&a), trees(&c), "a different seed gave the same trees");
        Ok(())
    }

    #[test]
    fn gbdt_holdout_auc_is_good() -> TestResult {
        let data = load_churn()?;
        let split = data.n_rows() - 2000;
        let (tx, ty) = data.rows(0, split);
        let (hx, hy) = data.rows(split, data.n_rows());
        let text = train_gbdt(
            tx,
            N_FEATURES,
            ty,
            &data.names,
            None,
            &GbdtParams::default(),
            5,
        )?;
        let model = GbdtModel::parse(&text)?;
        let scores: Vec<f64> = hx
            .chunks_exact(N_FEATURES)
            .map(|row| model.predict_proba(row))
            .collect();
        let auc = roc_auc(&scores, hy);
        println!("holdout ROC AUC (last 2000 rows) = {auc:.4}");
        assert!(auc > 0.80, "holdout AUC {auc}");
        Ok(())
    }

    #[test]
    fn gbdt_params_reach_lightgbm() -> TestResult {
        let data = load_churn()?;
        let (x, y) = data.rows(0, 3000);
        let params = GbdtParams {
            num_iterations: 7,
            num_leaves: 4,
            min_data_in_leaf: 5,
            bagging_freq: 0,
            ..GbdtParams::default()
        };
        let text = train_gbdt(x, N_FEATURES, y, &data.names, None, &params, 1)?;
        let model = GbdtModel::parse(&text)?;
        assert_eq!(model.num_trees(), 7);
        assert!(model.trees.iter().all(|t| t.leaf_values.len() <= 4));
        for setting in [
            "[num_leaves: 4]",
            "[min_data_in_leaf: 5]",
            "[bagging_freq: 0]",
            "[objective: binary]",
            "[deterministic: 1]",
            "[force_row_wise: 1]",
            "[num_threads: 1]",
        ] {
            assert!(text.contains(setting), "model parameters lack {setting}");
        }
        Ok(())
    }

    #[test]
    fn gbdt_constant_features_give_a_single_leaf_model() -> TestResult {
        // Nothing to split on: LightGBM stops after one constant tree holding the
        // initial score log(p / (1 - p)).
        let x = vec![1.0; 200];
        let y: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
        let text = train_gbdt(&x, 1, &y, &[], None, &GbdtParams::default(), 9)?;
        let model = GbdtModel::parse(&text)?;
        assert_eq!(model.num_trees(), 1);
        assert!(model.trees[0].nodes.is_empty());
        assert_eq!(model.feature_names(), ["Column_0"]);
        let p = model.predict_proba(&[1.0]);
        assert!((p - 0.3).abs() < 1e-9, "constant prediction {p}");
        let (dp, dr) = max_abs_diff(&text, &[1.0, f64::NAN, 0.0])?;
        assert!(dp < 1e-12 && dr < 1e-12);
        Ok(())
    }

    #[test]
    fn lightgbm_errors_keep_the_library_message() {
        let err = match Booster::from_string("not a model") {
            Ok(_) => panic!("LightGBM accepted garbage"),
            Err(e) => lgbm_err(e),
        };
        match err {
            MlError::LightGbm(msg) => {
                assert!(
                    !msg.is_empty() && !msg.starts_with("LightGBM error"),
                    "{msg}"
                );
            }
            other => panic!("expected MlError::LightGbm, got {other:?}"),
        }
    }

    #[test]
    fn roc_auc_helper_is_correct() {
        assert!((roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]) - 0.75).abs() < 1e-12);
        assert!((roc_auc(&[0.5, 0.5], &[0.0, 1.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn gbdt_rejects_bad_training_input() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let x = [0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.2, 0.9];
        let p = GbdtParams::default();
        let cases: Vec<(Result<String, MlError>, &str)> = vec![
            (
                train_gbdt(&x[..7], 2, &[0.0; 4], &names, None, &p, 1),
                "multiple",
            ),
            (
                train_gbdt(&x, 2, &[0.0, 1.0, 1.0], &names, None, &p, 1),
                "labels",
            ),
            (
                train_gbdt(&x, 2, &[0.0, 2.0, 1.0, 0.0], &names, None, &p, 1),
                "0 or 1",
            ),
            (
                train_gbdt(&x, 2, &[1.0; 4], &names, None, &p, 1),
                "one class",
            ),
            (
                train_gbdt(&x, 2, &[0.0, 1.0, 1.0, 0.0], &names[..1], None, &p, 1),
                "feature names",
            ),
            (
                train_gbdt(
                    &x,
                    2,
                    &[0.0, 1.0, 1.0, 0.0],
                    &["a b".into(), "c".into()],
                    None,
                    &p,
                    1,
                ),
                "whitespace",
            ),
            (
                train_gbdt(
                    &x,
                    2,
                    &[0.0, 1.0, 1.0, 0.0],
                    &names,
                    Some((&x[..3], &[0.0][..])),
                    &p,
                    1,
                ),
                "validation",
            ),
            (
                train_gbdt(
                    &x,
                    2,
                    &[0.0, 1.0, 1.0, 0.0],
                    &names,
                    None,
                    &GbdtParams {
                        learning_rate: 0.0,
                        ..p.clone()
                    },
                    1,
                ),
                "learning_rate",
            ),
        ];
        for (result, needle) in cases {
            match result {
                Err(MlError::InvalidData(msg)) => {
                    assert!(msg.contains(needle), "`{msg}` does not mention `{needle}`");
                }
                other => panic!("expected InvalidData mentioning `{needle}`, got {other:?}"),
            }
        }
    }

    #[test]
    fn gbdt_params_serde_defaults_and_unknown_fields() -> TestResult {
        let p: GbdtParams = serde_json::from_str(r#"{"num_leaves": 31}"#)?;
        assert_eq!(
            p,
            GbdtParams {
                num_leaves: 31,
                ..GbdtParams::default()
            }
        );
        assert!(serde_json::from_str::<GbdtParams>(r#"{"num_leafs": 31}"#).is_err());
        p.validate().map_err(MlError::InvalidData)?;
        Ok(())
    }

    /// Writes a model text the way `GBDT::SaveModelToString` does (with correct
    /// `tree_sizes`), so LightGBM itself can load it.
    fn model_text(trees: &[&str], sigmoid: &str) -> String {
        let blocks: Vec<String> = trees
            .iter()
            .enumerate()
            .map(|(i, body)| format!("Tree={i}\n{body}\n\n"))
            .collect();
        let sizes: Vec<String> = blocks.iter().map(|b| b.len().to_string()).collect();
        format!(
            "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n\
             max_feature_idx=2\nobjective=binary sigmoid:{sigmoid}\nfeature_names=a b c\n\
             feature_infos=[-10:10] [-10:10] [-10:10]\ntree_sizes={}\n\n{}end of trees\n\n\
             feature_importances:\n\nparameters:\nend of parameters\n",
            sizes.join(" "),
            blocks.concat()
        )
    }

    /// A single-leaf tree (what LightGBM writes when no split is possible).
    const SINGLE_LEAF: &str = "num_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\n\
        threshold=\ndecision_type=\nleft_child=\nright_child=\nleaf_value=0.25\n\
        leaf_weight=0\nleaf_count=0\ninternal_value=\ninternal_weight=\ninternal_count=\n\
        is_linear=0\nshrinkage=1";
    /// Node 0: a <= 1.5 with NaN missing, default left -> node 1, else leaf 1.
    /// Node 1: b <= 0.5 with zero missing, default right -> leaf 0, else leaf 2.
    const MISSING_TREE: &str = "num_leaves=3\nnum_cat=0\nsplit_feature=0 1\n\
        split_gain=10.5 2.25\nthreshold=1.5 0.5\ndecision_type=10 4\nleft_child=1 -1\n\
        right_child=-2 -3\nleaf_value=0.125 -0.5 0.75\nleaf_weight=1 1 1\nleaf_count=1 1 1\n\
        internal_value=0 0\ninternal_weight=1 1\ninternal_count=2 2\nis_linear=0\nshrinkage=0.1";
    /// c <= 0 with no missing handling (the default-left bit must be ignored):
    /// NaN reads as 0.0 and goes left.
    const PLAIN_TREE: &str = "num_leaves=2\nnum_cat=0\nsplit_feature=2\nsplit_gain=1\n\
        threshold=0\ndecision_type=2\nleft_child=-1\nright_child=-2\nleaf_value=-1 1\n\
        leaf_weight=1 1\nleaf_count=1 1\ninternal_value=0\ninternal_weight=1\n\
        internal_count=2\nis_linear=0\nshrinkage=0.1";

    #[test]
    fn gbdt_handcrafted_single_leaf_and_missing_values() -> TestResult {
        let nan = f64::NAN;
        // (row, expected raw = 0.25 + tree 1 + tree 2)
        let cases: [([f64; 3], f64); 10] = [
            ([1.0, 1.0, 1.0], 0.25 + 0.75 + 1.0),
            ([2.0, 0.2, -1.0], 0.25 - 0.5 - 1.0),
            ([nan, 0.2, 1.0], 0.25 + 0.125 + 1.0), // NaN missing: default left
            ([1.0, 0.2, nan], 0.25 + 0.125 - 1.0), // missing None: NaN -> 0.0 <= 0
            ([1.0, 0.0, 0.0], 0.25 + 0.75 - 1.0),  // zero missing: 0 goes default right
            ([1.0, nan, 0.0], 0.25 + 0.75 - 1.0),  // zero missing: NaN -> 0 -> right
            ([1.0, 1e-36, 1.0], 0.25 + 0.75 + 1.0), // |v| <= kZeroThreshold is zero
            ([1.0, -0.0, 1.0], 0.25 + 0.75 + 1.0),
            ([0.0, 0.5, 1e-36], 0.25 + 0.125 - 1.0), // 1e-36 reads as 0.0 <= 0
            ([1.5, 0.5, 1e-30], 0.25 + 0.125 + 1.0), // threshold is inclusive
        ];

        let text = model_text(&[SINGLE_LEAF, MISSING_TREE, PLAIN_TREE], "1.5");
        let model = GbdtModel::parse(&text)?;
        assert_eq!(model.num_features(), 3);
        assert_eq!(model.feature_names(), ["a", "b", "c"]);
        assert_eq!(model.num_trees(), 3);
        assert_eq!(model.feature_importance_gain(), vec![10.5, 2.25, 1.0]);
        let booster = Booster::from_string(&text)?;
        for (row, raw) in cases {
            assert_eq!(model.predict_raw(&row), raw, "row {row:?}");
            let proba = 1.0 / (1.0 + (-1.5 * raw).exp());
            assert!((model.predict_proba(&row) - proba).abs() < 1e-15);
            let lgbm = booster.predict_with_params(&row, 3, true, "num_threads=1")?;
            assert!(
                (model.predict_proba(&row) - lgbm[0]).abs() < 1e-15,
                "row {row:?}"
            );
        }
        // A short row reads the absent features as 0.0.
        assert_eq!(model.predict_raw(&[1.0]), 0.25 + 0.75 - 1.0);

        // A model made of one single-leaf tree predicts a constant.
        let constant = GbdtModel::parse(&model_text(&[SINGLE_LEAF], "1"))?;
        assert_eq!(constant.predict_raw(&[nan, 3.0, -3.0]), 0.25);
        assert_eq!(constant.feature_importance_gain(), vec![0.0; 3]);
        Ok(())
    }

    fn expect_invalid(text: &str, needles: &[&str]) {
        match GbdtModel::parse(text) {
            Err(MlError::InvalidModel(msg)) => {
                for needle in needles {
                    assert!(msg.contains(needle), "`{msg}` does not mention `{needle}`");
                }
            }
            other => panic!("expected InvalidModel mentioning {needles:?}, got {other:?}"),
        }
    }

    #[test]
    fn gbdt_parse_errors_are_clear() {
        let good = model_text(&[SINGLE_LEAF, MISSING_TREE, PLAIN_TREE], "1");
        assert!(GbdtModel::parse(&good).is_ok());

        expect_invalid("", &["empty"]);
        expect_invalid("hello world\n", &["line 1", "tree"]);
        // Truncations: in the header, inside tree 1, right after tree 1.
        let cut = |marker: &str| good.find(marker).map(|i| &good[..i]).unwrap_or(&good);
        expect_invalid(cut("max_feature_idx"), &["max_feature_idx"]);
        expect_invalid(cut("right_child=-2"), &["tree 1", "missing key"]);
        let mid_line = good
            .find("leaf_value=0.125 -0.5")
            .map(|i| &good[..i + "leaf_value=0.125 -0.".len()])
            .unwrap_or(&good);
        expect_invalid(mid_line, &["tree 1", "leaf_value", "2 values, expected 3"]);
        expect_invalid(&good[..good.len() / 2], &["tree"]);
        expect_invalid(cut("Tree=2"), &["end of trees", "truncated"]);
        expect_invalid(&good.replace("end of trees\n", ""), &["end of trees"]);
        expect_invalid(
            &good
                .replace("end of trees\n", "")
                .replace("Tree=2", "end of trees\nTree=2"),
            &["tree_sizes", "3 trees", "2 were found"],
        );
        // Garbled values.
        expect_invalid(
            &good.replace("threshold=1.5 0.5", "threshold=1.5 zero"),
            &["tree 1", "threshold", "zero"],
        );
        expect_invalid(
            &good.replace("threshold=1.5 0.5", "threshold=1.5"),
            &["tree 1", "threshold", "1 values, expected 2"],
        );
        expect_invalid(
            &good.replace("num_leaves=3\n", ""),
            &["tree 1", "num_leaves"],
        );
        expect_invalid(
            &good.replace("leaf_value=-1 1", "leaf_value=-1 nan"),
            &["tree 2", "leaf_value"],
        );
        expect_invalid(
            &good.replace("left_child=1 -1", "left_child=0 -1"),
            &["tree 1", "left_child"],
        );
        expect_invalid(
            &good.replace("right_child=-2 -3", "right_child=-2 -4"),
            &["tree 1", "right_child"],
        );
        expect_invalid(
            &good.replace("split_feature=0 1", "split_feature=0 3"),
            &["tree 1", "split_feature"],
        );
        expect_invalid(
            &good.replace("decision_type=10 4", "decision_type=10 5"),
            &["tree 1", "categorical"],
        );
        expect_invalid(
            &good.replace("decision_type=10 4", "decision_type=10 12"),
            &["tree 1", "missing type"],
        );
        expect_invalid(
            &good.replace(
                "Tree=1\nnum_leaves=3\nnum_cat=0",
                "Tree=1\nnum_leaves=3\nnum_cat=1",
            ),
            &["tree 1", "categorical"],
        );
        expect_invalid(&good.replace("Tree=2", "Tree=5"), &["Tree=2"]);
        expect_invalid(
            &good.replace("Tree=1\n", "Tree=1\ngarbage\n"),
            &["tree 1", "garbage"],
        );
        expect_invalid(&good.replace("num_class=1", "num_class=3"), &["num_class"]);
        expect_invalid(
            &good.replace("objective=binary sigmoid:1", "objective=regression"),
            &["objective"],
        );
        expect_invalid(&good.replace(" sigmoid:1", ""), &["sigmoid"]);
        expect_invalid(
            &good.replace("feature_names=a b c", "feature_names=a b"),
            &["feature_names"],
        );
        expect_invalid(
            &good.replace("version=v4", "version=v4\naverage_output"),
            &["average_output"],
        );
    }
}
