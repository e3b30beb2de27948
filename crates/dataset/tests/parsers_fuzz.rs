//! Property tests over every parser of outside input in `modelbus-ml`: the
//! dataset spec (TOML) and its expressions, CSV batches, Great Expectations
//! suites and the raw records a model is asked to predict. Each must return
//! (never panic), and refuse bad input with a short error that names what is
//! wrong rather than echoing the input back.
//!
//! The suite runs a bounded number of cases (proptest's default 256 per
//! property); `PROPTEST_CASES=100000 cargo test -p modelbus-ml --test
//! parsers_fuzz` runs many more locally.

use std::sync::Arc;

use modelbus_dataset::expr::Expr;
use modelbus_dataset::spec::DatasetSpec;
use proptest::prelude::*;

const TELCO_SPEC: &str = include_str!("../../../config/datasets/telco-churn.toml");
const TELCO_CSV: &str = include_str!("../../../data/telco-churn/telco_customer_churn.csv");

/// Longest error message a parser may answer with: enough to name the place
/// and the reason, too short to echo a large input back.
const MAX_ERROR: usize = 4_096;

fn telco() -> Arc<DatasetSpec> {
    Arc::new(
        DatasetSpec::parse(TELCO_SPEC, "telco-churn.toml")
            .unwrap()
            .spec,
    )
}

/// Tokens expressions are made of, so generated text gets past the tokenizer.
fn expr_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("tenure".to_string()),
        Just("MonthlyCharges".to_string()),
        Just("`Total Charges`".to_string()),
        Just("'Yes'".to_string()),
        any::<f64>().prop_map(|x| format!("{x}")),
        "[a-z_]{1,8}",
    ];
    let op = prop_oneof![
        Just(" + "),
        Just(" - "),
        Just(" * "),
        Just(" / "),
        Just(" < "),
        Just(" == "),
        Just(" and "),
        Just(" or "),
        Just(", "),
        Just("("),
        Just(")"),
        Just("not "),
        Just("-"),
        Just("log1p("),
        Just("clip("),
        Just("bucketize("),
        Just("["),
        Just("]"),
        Just("coalesce("),
    ];
    prop::collection::vec(prop_oneof![atom, op.prop_map(str::to_string)], 0..60)
        .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn expressions_parse_or_fail_with_a_position(src in expr_text()) {
        if let Err(e) = Expr::parse(&src) {
            prop_assert!(e.position >= 1);
            prop_assert!(e.to_string().len() < MAX_ERROR);
        }
    }

    #[test]
    fn arbitrary_text_never_crashes_the_expression_parser(src in "\\PC{0,300}") {
        let _ = Expr::parse(&src);
    }

    #[test]
    fn nesting_at_any_depth_is_an_error_not_a_stack_overflow(
        depth in 0usize..20_000,
        opener in prop_oneof![Just("("), Just("-"), Just("not "), Just("abs(")],
    ) {
        let closer = if opener.ends_with('(') { ")" } else { "" };
        let src = format!("{}x{}", opener.repeat(depth), closer.repeat(depth));
        match Expr::parse(&src) {
            Ok(_) => prop_assert!(depth <= modelbus_dataset::expr::MAX_EXPR_DEPTH),
            Err(e) => prop_assert!(e.to_string().len() < MAX_ERROR),
        }
    }

    #[test]
    fn arbitrary_spec_text_is_refused_with_a_short_error(text in "\\PC{0,2000}") {
        if let Err(e) = DatasetSpec::parse(&text, "fuzz.toml") {
            prop_assert!(!e.to_string().is_empty());
            prop_assert!(e.to_string().len() < MAX_ERROR + text.len().min(200), "{}", e);
        }
    }

    #[test]
    fn a_mutated_spec_parses_or_names_what_is_wrong(
        at in 0usize..TELCO_SPEC.len(),
        cut in 0usize..64,
        insert in "\\PC{0,64}",
    ) {
        let mut text = TELCO_SPEC.to_string();
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (at..=(at + cut).min(text.len()))
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(at);
        text.replace_range(at..end, &insert);
        if let Err(e) = DatasetSpec::parse(&text, "telco-churn.toml") {
            let msg = e.to_string();
            prop_assert!(msg.contains("telco-churn.toml"), "{msg}");
            prop_assert!(msg.len() < MAX_ERROR, "{} bytes", msg.len());
        }
    }

    #[test]
    fn csv_batches_parse_or_name_the_line(
        rows in prop::collection::vec(
            prop::collection::vec(
                prop_oneof!["[ -~]{0,12}", "\\PC{0,12}", Just("\"a,b\"".to_string()), Just(String::new())],
                0..24,
            ),
            0..20,
        ),
        keep_header in any::<bool>(),
    ) {
        let header = TELCO_CSV.lines().next().unwrap();
        let mut text = String::new();
        if keep_header {
            text.push_str(header);
            text.push('\n');
        }
        for r in &rows {
            text.push_str(&r.join(","));
            text.push('\n');
        }
        if let Err(e) = modelbus_dataset::table::read_all(text.as_bytes(), telco(), 7) {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty() && msg.len() < MAX_ERROR, "{} bytes", msg.len());
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_csv_batch_are_an_error_or_rows(bytes in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let _ = modelbus_dataset::table::read_all(&bytes[..], telco(), 16);
    }

    #[test]
    fn arbitrary_ge_suites_are_refused_with_a_reason(json in "\\PC{0,500}") {
        let cols: Vec<String> = vec!["tenure".into(), "Contract".into()];
        if let Err(e) = modelbus_dataset::ge_import::import_ge_suite(&json, &cols) {
            prop_assert!(e.to_string().len() < MAX_ERROR);
        }
    }

    #[test]
    fn generated_ge_suites_map_or_say_why_not(
        ty in prop_oneof![
            prop::sample::select(vec![
                "expect_column_values_to_not_be_null",
                "expect_column_values_to_be_between",
                "expect_column_values_to_be_in_set",
                "expect_column_values_to_match_regex",
                "expect_column_mean_to_be_between",
                "expect_table_row_count_to_be_between",
                "expect_column_kl_divergence_to_be_less_than",
            ])
            .prop_map(str::to_string),
            "[a-z_]{1,40}",
        ],
        column in prop_oneof![Just("tenure"), Just("Contract"), Just("nope")],
        min in prop::option::of(any::<f64>()),
        mostly in prop::option::of(any::<f64>()),
        regex in "\\PC{0,40}",
        set in prop::collection::vec(any::<i64>(), 0..5),
    ) {
        let suite = serde_json::json!({
            "name": "fuzz",
            "expectations": [{
                "type": ty,
                "kwargs": { "column": column, "min_value": min, "mostly": mostly,
                            "regex": regex, "value_set": set },
            }],
        });
        let cols: Vec<String> = vec!["tenure".into(), "Contract".into()];
        let _ = modelbus_dataset::ge_import::import_ge_suite(&suite.to_string(), &cols);
    }
}
