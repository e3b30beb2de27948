//! Validation end to end: the Telco file, small handmade files one expectation
//! at a time, and the accumulators' bounds.

use super::*;
use crate::expectations::{MatchRegex, NotNull};
use crate::spec::Expectation;

const TELCO_SPEC: &str = include_str!("../../../../config/datasets/telco-churn.toml");

fn telco_spec() -> Arc<DatasetSpec> {
    Arc::new(
        DatasetSpec::parse(TELCO_SPEC, "telco-churn.toml")
            .unwrap()
            .spec,
    )
}

/// The shipped spec plus every expectation added with severity and GE 1.x names,
/// with bounds the Telco file meets, and one warning it does not meet.
const TELCO_EXTRA: &str = r#"
[[expectations]]
expectation = "expect_column_values_to_match_regex"
column = "customerID"
regex = '^\d{4}-[A-Z]{5}$'

[[expectations]]
expectation = "expect_column_value_lengths_to_be_between"
column = "customerID"
min_value = 10
max_value = 10

[[expectations]]
expectation = "expect_column_values_to_be_of_type"
column = "tenure"
type_ = "int64"

[[expectations]]
expectation = "expect_column_distinct_values_to_be_in_set"
column = "Contract"
value_set = ["Month-to-month", "One year", "Two year"]

[[expectations]]
expectation = "expect_column_proportion_of_unique_values_to_be_between"
column = "customerID"
min_value = 1.0
max_value = 1.0

[[expectations]]
expectation = "expect_column_mean_to_be_between"
column = "MonthlyCharges"
min_value = 50
max_value = 80

[[expectations]]
expectation = "expect_column_median_to_be_between"
column = "tenure"
min_value = 20
max_value = 40

[[expectations]]
expectation = "expect_column_stdev_to_be_between"
column = "TotalCharges"
min_value = 1500
max_value = 3000

[[expectations]]
expectation = "expect_column_min_to_be_between"
column = "MonthlyCharges"
min_value = 0
max_value = 30

[[expectations]]
expectation = "expect_column_max_to_be_between"
column = "tenure"
min_value = 60
max_value = 72

[[expectations]]
expectation = "expect_column_pair_values_a_to_be_greater_than_b"
column_A = "TotalCharges"
column_B = "MonthlyCharges"
or_equal = true

[[expectations]]
expectation = "expect_compound_columns_to_be_unique"
column_list = ["customerID", "gender"]

[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "tenure"
threshold = 0.05
partition_object = { bins = [0, 12, 24, 36, 48, 60, 72], weights = [0.29, 0.15, 0.12, 0.11, 0.12, 0.21] }

[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "InternetService"
threshold = 0.05
partition_object = { values = ["DSL", "Fiber optic", "No"], weights = [0.34, 0.44, 0.22] }

[[expectations]]
expectation = "expect_column_mean_to_be_between"
column = "tenure"
min_value = 40
max_value = 50
severity = "warning"
"#;

fn telco_extended_spec() -> Arc<DatasetSpec> {
    let text = TELCO_SPEC.replace("\n[model]", &format!("{TELCO_EXTRA}\n[model]"));
    Arc::new(
        DatasetSpec::parse(&text, "telco-extended.toml")
            .unwrap()
            .spec,
    )
}

fn telco() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/telco-churn/telco_customer_churn.csv"
    ))
    .unwrap()
}

fn failed(r: &ValidationReport) -> Vec<&ExpectationResult> {
    r.results.iter().filter(|x| !x.success).collect()
}

/// The first explicit result of an expectation type.
fn find<'a>(r: &'a ValidationReport, name: &str) -> &'a ExpectationResult {
    r.results
        .iter()
        .find(|x| x.expectation == name && !x.implied)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

#[test]
fn telco_passes_every_expectation() {
    let r = validate_csv(telco().as_bytes(), telco_spec(), 1000);
    assert!(r.success, "{:#?}", r.reasons());
    assert!(r.warnings().is_empty());
    assert_eq!(r.rows, 7043);
    let nn = r
        .results
        .iter()
        .find(|x| {
            x.expectation == "expect_column_values_to_not_be_null"
                && x.kwargs["column"] == "TotalCharges"
        })
        .unwrap();
    assert_eq!(nn.result.unexpected_count, 11);
    assert!(nn.success, "mostly = 0.99 tolerates 11 nulls");
    let uniq = find(&r, "expect_column_values_to_be_unique");
    assert_eq!(uniq.result.unexpected_count, 0);
}

#[test]
fn telco_meets_every_new_expectation_and_warns_once() {
    let r = validate_csv(telco().as_bytes(), telco_extended_spec(), 1000);
    assert!(r.success, "{:#?}", r.reasons());
    assert!(r.reasons().is_empty());
    let warnings = r.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("expect_column_mean_to_be_between on column \"tenure\""),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("observed 32.37114865824223, expected >= 40 and <= 50"),
        "{warnings:?}"
    );
    let failing: Vec<_> = failed(&r);
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].severity, Severity::Warning);
    assert_eq!(r.statistics.unsuccessful_expectations, 1);

    let mean = |col: &str| {
        r.results
            .iter()
            .find(|x| {
                x.expectation == "expect_column_mean_to_be_between" && x.kwargs["column"] == col
            })
            .unwrap()
            .result
            .observed_value
            .clone()
            .unwrap()
            .as_f64()
            .unwrap()
    };
    // Reference values computed with Python's statistics module.
    assert!((mean("MonthlyCharges") - 64.76169246059918).abs() < 1e-9);
    assert!((mean("tenure") - 32.37114865824223).abs() < 1e-9);
    let obs = |name: &str| find(&r, name).result.observed_value.clone().unwrap();
    assert_eq!(obs("expect_column_median_to_be_between"), 29.0);
    let sd = obs("expect_column_stdev_to_be_between").as_f64().unwrap();
    assert!((sd - 2266.771361883145).abs() < 1e-6, "{sd}");
    assert_eq!(obs("expect_column_min_to_be_between"), 18.25);
    assert_eq!(obs("expect_column_max_to_be_between"), 72.0);
    assert_eq!(
        obs("expect_column_distinct_values_to_be_in_set"),
        serde_json::json!(["Month-to-month", "One year", "Two year"])
    );
    assert_eq!(
        obs("expect_column_proportion_of_unique_values_to_be_between"),
        1.0
    );
    let pair = find(&r, "expect_column_pair_values_a_to_be_greater_than_b");
    assert_eq!(
        pair.result.missing_count, 11,
        "rows with a null are ignored"
    );
    let kl = obs("expect_column_kl_divergence_to_be_less_than")
        .as_f64()
        .unwrap();
    assert!(kl > 0.0 && kl < 0.01, "{kl}");
}

/// A Telco file with a few broken rows, to compare failing results too.
fn broken_telco() -> String {
    let mut lines: Vec<String> = telco().lines().map(str::to_string).collect();
    // Row 3: gender outside its set; row 5: text in a numeric column; row 6 duplicates row 1's id.
    lines[3] = lines[3]
        .replacen(",Male,", ",Mal,", 1)
        .replacen(",Female,", ",Femal,", 1);
    let mut f: Vec<String> = lines[5].split(',').map(str::to_string).collect();
    f[5] = "ten".into();
    lines[5] = f.join(",");
    let id1 = lines[1].split(',').next().unwrap().to_string();
    let mut g: Vec<String> = lines[6].split(',').map(str::to_string).collect();
    g[0] = id1;
    lines[6] = g.join(",");
    // Row 9: a contract outside the set, a lower-case id, monthly above total.
    let mut h: Vec<String> = lines[9].split(',').map(str::to_string).collect();
    h[0] = h[0].to_lowercase();
    h[15] = "Three year".into();
    h[18] = "9999".into();
    lines[9] = h.join(",");
    lines.join("\n")
}

#[test]
fn chunk_size_does_not_change_any_result() {
    for text in [telco(), broken_telco()] {
        let a = validate_csv(text.as_bytes(), telco_extended_spec(), 7);
        let b = validate_csv(text.as_bytes(), telco_extended_spec(), 100_000);
        assert_eq!(a.statistics, b.statistics);
        assert_eq!(a.results.len(), b.results.len());
        for (x, y) in a.results.iter().zip(&b.results) {
            assert_eq!(x, y, "{}", x.expectation);
        }
        assert_eq!(a, b);
    }
    let broken = validate_csv(broken_telco().as_bytes(), telco_extended_spec(), 7);
    let names: Vec<&str> = failed(&broken)
        .iter()
        .map(|r| r.expectation.as_str())
        .collect();
    for n in [
        "expect_column_values_to_match_regex",
        "expect_column_distinct_values_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_compound_columns_to_be_unique",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_values_to_be_of_type",
    ] {
        assert!(names.contains(&n), "{n} should fail: {names:?}");
    }
}

#[test]
fn bad_values_are_reported_with_rows() {
    let r = validate_csv(broken_telco().as_bytes(), telco_spec(), 1000);
    assert!(!r.success);
    let f = failed(&r);
    let gender = f.iter().find(|x| x.kwargs["column"] == "gender").unwrap();
    assert_eq!(gender.result.unexpected_count, 1);
    assert_eq!(gender.result.partial_unexpected_list[0].row, 3);
    let ty = f
        .iter()
        .find(|x| x.expectation == "expect_column_values_to_be_of_type")
        .unwrap();
    assert_eq!(ty.kwargs["column"], "tenure");
    assert_eq!(ty.result.partial_unexpected_list[0].value, "ten");
    assert_eq!(ty.result.partial_unexpected_list[0].row, 5);
    let uniq = f
        .iter()
        .find(|x| x.expectation == "expect_column_values_to_be_unique")
        .unwrap();
    assert_eq!(uniq.result.unexpected_count, 2);
    assert_eq!(uniq.result.partial_unexpected_list[0].row, 6);
    let reasons = r.reasons().join("\n");
    assert!(
        reasons.contains("gender") && reasons.contains("row 3"),
        "{reasons}"
    );
}

#[test]
fn structural_failures_reject_with_a_reason() {
    let r = validate_csv(&b""[..], telco_spec(), 10);
    assert!(!r.success);
    assert!(r.reasons()[0].contains("empty"), "{:?}", r.reasons());

    let header = telco().lines().next().unwrap().to_string();
    let r = validate_csv(format!("{header}\n").as_bytes(), telco_spec(), 10);
    assert!(!r.success);
    assert!(
        r.reasons().join(" ").contains("no data rows"),
        "{:?}",
        r.reasons()
    );

    let dropped = header.replace(",tenure", "");
    let r = validate_csv(format!("{dropped}\n").as_bytes(), telco_spec(), 10);
    assert!(
        r.reasons().join(" ").contains("tenure"),
        "{:?}",
        r.reasons()
    );

    let t = telco();
    let mut lines: Vec<&str> = t.lines().collect();
    lines[10] = "7590-VHVEG,Female,0";
    let r = validate_csv(lines.join("\n").as_bytes(), telco_spec(), 1000);
    assert!(r.reasons()[0].contains("line 11"), "{:?}", r.reasons());
}

#[test]
fn mostly_tolerates_a_share_of_failures() {
    let text = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "int"
[[columns]]
name = "y"
type = "int"
[[columns]]
name = "x"
type = "float"
[[expectations]]
expectation = "expect_column_values_to_be_between"
column = "x"
min_value = 0
max_value = 1
mostly = 0.75
"#;
    let spec = Arc::new(DatasetSpec::parse(text, "t").unwrap().spec);
    let ok = validate_csv(
        &b"id,y,x\n1,0,0.1\n2,1,0.2\n3,0,0.3\n4,1,5\n"[..],
        spec.clone(),
        2,
    );
    assert!(ok.success, "{:?}", ok.reasons());
    let bad = validate_csv(&b"id,y,x\n1,0,0.1\n2,1,7\n3,0,0.3\n4,1,5\n"[..], spec, 2);
    assert!(!bad.success);
    let r = find(&bad, "expect_column_values_to_be_between");
    assert_eq!(r.result.unexpected_count, 2);
    assert!((r.result.unexpected_percent - 50.0).abs() < 1e-9);
}

// --- Small handmade files, one expectation at a time -----------------------

const SMALL: &str = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "y"
type = "int"
[[columns]]
name = "s"
type = "string"
nullable = true
[[columns]]
name = "n"
type = "int"
nullable = true
[[columns]]
name = "m"
type = "int"
nullable = true
[[columns]]
name = "x"
type = "float"
nullable = true
"#;

/// s: 5 values (one non-ASCII: 5 characters, 6 bytes), one null.
/// n > m holds in rows 1 only; rows 4 and 5 have a null on one side.
const SMALL_CSV: &str = "id,y,s,n,m,x
a,1,AB-12,10,5,1.5
b,0,AB-345,20,25,2.5
c,1,XY-56,30,30,
d,0,,40,,4.0
e,1,ÉB-78,,1,5.0
f,0,AB-90,50,60,0.5
";

/// Validates with chunks of 2 and of 1000, checks both reports are equal, and
/// returns one.
fn run(expectation: &str, csv: &str) -> ValidationReport {
    let text = format!("{SMALL}[[expectations]]\n{expectation}\n");
    let spec = Arc::new(
        DatasetSpec::parse(&text, "small.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .spec,
    );
    let a = validate_csv(csv.as_bytes(), spec.clone(), 2);
    let b = validate_csv(csv.as_bytes(), spec, 1000);
    assert_eq!(a, b, "chunk size changed the report");
    a
}

fn one(expectation: &str, csv: &str) -> ExpectationResult {
    let r = run(expectation, csv);
    let name = expectation
        .split('"')
        .nth(1)
        .expect("expectation = \"...\" first");
    let res = find(&r, name).clone();
    let others_ok = r.results.iter().filter(|x| x.implied).all(|x| x.success);
    assert!(others_ok, "{:?}", r.reasons());
    assert_eq!(r.success, res.success || res.severity == Severity::Warning);
    res
}

#[test]
fn regex_with_mostly() {
    let e = |extra: &str| {
        format!(
            "expectation = \"expect_column_values_to_match_regex\"\ncolumn = \"s\"\nregex = '^AB-\\d+$'\n{extra}"
        )
    };
    let r = one(&e(""), SMALL_CSV);
    assert!(!r.success);
    assert_eq!(r.result.unexpected_count, 2);
    assert_eq!(r.result.missing_count, 1);
    assert_eq!(r.result.element_count, 6);
    assert!((r.result.unexpected_percent - 40.0).abs() < 1e-9);
    assert_eq!(r.result.partial_unexpected_list[0].row, 3);
    assert_eq!(r.result.partial_unexpected_list[0].value, "XY-56");
    assert_eq!(r.result.partial_unexpected_list[1].value, "ÉB-78");
    assert!(one(&e("mostly = 0.6"), SMALL_CSV).success);
    assert!(!one(&e("mostly = 0.7"), SMALL_CSV).success);
    // Searched anywhere, like GE (re.search).
    let anywhere =
        "expectation = \"expect_column_values_to_match_regex\"\ncolumn = \"s\"\nregex = '\\d\\d'\n";
    assert!(one(anywhere, SMALL_CSV).success);
}

#[test]
fn value_lengths_count_characters_with_mostly() {
    let e = |extra: &str| {
        format!(
            "expectation = \"expect_column_value_lengths_to_be_between\"\ncolumn = \"s\"\nmin_value = 5\nmax_value = 5\n{extra}"
        )
    };
    let r = one(&e(""), SMALL_CSV);
    assert!(!r.success);
    // "ÉB-78" is 6 bytes but 5 characters: only "AB-345" fails.
    assert_eq!(r.result.unexpected_count, 1);
    assert_eq!(r.result.partial_unexpected_list[0].row, 2);
    assert_eq!(r.result.partial_unexpected_list[0].value, "AB-345");
    assert!(one(&e("mostly = 0.8"), SMALL_CSV).success);
    assert!(!one(&e("mostly = 0.81"), SMALL_CSV).success);
    let min_only = "expectation = \"expect_column_value_lengths_to_be_between\"\ncolumn = \"s\"\nmin_value = 6\n";
    let r = one(min_only, SMALL_CSV);
    assert_eq!(r.result.unexpected_count, 4);
}

#[test]
fn explicit_of_type_with_mostly() {
    let e = |extra: &str| {
        format!(
            "expectation = \"expect_column_values_to_be_of_type\"\ncolumn = \"n\"\ntype_ = \"int64\"\n{extra}"
        )
    };
    assert!(one(&e(""), SMALL_CSV).success);
    let bad = SMALL_CSV.replace("b,0,AB-345,20,", "b,0,AB-345,twenty,");
    let r = run(&e("severity = \"warning\""), &bad);
    let explicit = find(&r, "expect_column_values_to_be_of_type");
    assert!(!explicit.success);
    assert_eq!(explicit.result.unexpected_count, 1);
    assert_eq!(explicit.result.partial_unexpected_list[0].value, "twenty");
    assert_eq!(explicit.result.partial_unexpected_list[0].row, 2);
    // The implied check (severity error) still rejects the batch.
    assert!(!r.success);
    assert_eq!(r.warnings().len(), 1);
    let r = run(&e("mostly = 0.8"), &bad);
    assert!(find(&r, "expect_column_values_to_be_of_type").success);
}

#[test]
fn distinct_values_in_set() {
    let r = one(
        "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\", \"AB-345\", \"XY-56\", \"ÉB-78\", \"AB-90\", \"unused\"]",
        SMALL_CSV,
    );
    assert!(r.success);
    assert_eq!(
        r.result.observed_value,
        Some(serde_json::json!([
            "AB-12", "AB-345", "AB-90", "XY-56", "ÉB-78"
        ]))
    );
    let r = one(
        "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\", \"AB-345\", \"ÉB-78\", \"AB-90\"]",
        SMALL_CSV,
    );
    assert!(!r.success);
    assert_eq!(r.result.unexpected_count, 1);
    assert_eq!(r.result.partial_unexpected_list[0].row, 3);
    let observed = r.result.observed_value.unwrap();
    assert!(observed.as_array().unwrap().contains(&"XY-56".into()));
    let r = one(
        "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"n\"\nvalue_set = [10, 20, 30, 40]",
        SMALL_CSV,
    );
    assert!(!r.success);
    assert_eq!(
        r.result.observed_value,
        Some(serde_json::json!([10, 20, 30, 40, 50]))
    );
}

#[test]
fn distinct_values_outside_the_set_are_capped() {
    let mut csv = String::from("id,y,s,n,m,x\n");
    for i in 0..(DISTINCT_OUTSIDE_CAP + 500) {
        csv.push_str(&format!("r{i},0,v{i},{i},,\n"));
    }
    let r = one(
        "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"n\"\nvalue_set = [0]",
        &csv,
    );
    assert!(!r.success);
    assert_eq!(r.result.unexpected_count, DISTINCT_OUTSIDE_CAP as u64 + 499);
    let listed = r.result.observed_value.unwrap().as_array().unwrap().len();
    assert_eq!(listed, DISTINCT_OUTSIDE_CAP + 1);
    assert!(r.result.details.unwrap().contains("more than"));
}

#[test]
fn proportion_of_unique_values() {
    let e = |lo: f64, hi: f64| {
        format!(
            "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"y\"\nmin_value = {lo:?}\nmax_value = {hi:?}"
        )
    };
    let r = one(&e(0.3, 0.4), SMALL_CSV);
    assert!(r.success);
    assert_eq!(r.result.observed_value, Some((2.0 / 6.0).into()));
    assert!(!one(&e(0.5, 1.0), SMALL_CSV).success);
    // Nulls are left out: s has 5 distinct values among 5 non-null ones.
    let r = one(
        "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"s\"\nmin_value = 1.0",
        SMALL_CSV,
    );
    assert!(r.success);
    let strict = one(
        "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"s\"\nmax_value = 1.0\nstrict_max = true",
        SMALL_CSV,
    );
    assert!(!strict.success);
}

fn stat(name: &str, column: &str, bounds: &str) -> ExpectationResult {
    one(
        &format!("expectation = \"{name}\"\ncolumn = \"{column}\"\n{bounds}"),
        SMALL_CSV,
    )
}

#[test]
fn column_statistics() {
    // x: 1.5, 2.5, null, 4.0, 5.0, 0.5.
    let mean = stat(
        "expect_column_mean_to_be_between",
        "x",
        "min_value = 2.6\nmax_value = 2.8",
    );
    assert!(mean.success);
    assert!((mean.result.observed_value.unwrap().as_f64().unwrap() - 2.7).abs() < 1e-12);
    assert_eq!(mean.result.missing_count, 1);
    assert!(!stat("expect_column_mean_to_be_between", "x", "min_value = 2.8").success);

    let median = stat(
        "expect_column_median_to_be_between",
        "x",
        "min_value = 2.5\nmax_value = 2.5",
    );
    assert!(median.success);
    assert_eq!(median.result.observed_value, Some(2.5.into()));
    assert!(median.result.details.is_none(), "exact");
    assert!(
        !stat(
            "expect_column_median_to_be_between",
            "x",
            "min_value = 2.5\nstrict_min = true"
        )
        .success
    );
    // Even count: the mean of the two middle values, like pandas.
    let even = stat("expect_column_median_to_be_between", "y", "min_value = 0");
    assert_eq!(even.result.observed_value, Some(0.5.into()));

    let sd = stat(
        "expect_column_stdev_to_be_between",
        "x",
        "min_value = 1.8\nmax_value = 1.85",
    );
    assert!(sd.success);
    let expected = (13.3f64 / 4.0).sqrt();
    assert!((sd.result.observed_value.unwrap().as_f64().unwrap() - expected).abs() < 1e-12);
    assert!(!stat("expect_column_stdev_to_be_between", "x", "max_value = 1.5").success);

    let min = stat(
        "expect_column_min_to_be_between",
        "x",
        "min_value = 0.5\nmax_value = 1",
    );
    assert!(min.success);
    assert_eq!(min.result.observed_value, Some(0.5.into()));
    assert!(
        !stat(
            "expect_column_min_to_be_between",
            "x",
            "min_value = 0.5\nstrict_min = true"
        )
        .success
    );

    let max = stat("expect_column_max_to_be_between", "n", "max_value = 50");
    assert!(max.success);
    assert_eq!(max.result.observed_value, Some(50.0.into()));
    let strict = stat(
        "expect_column_max_to_be_between",
        "n",
        "max_value = 50\nstrict_max = true",
    );
    assert!(!strict.success);
    assert!(
        strict.reason().contains("observed 50, expected < 50"),
        "{}",
        strict.reason()
    );
}

#[test]
fn statistics_of_an_empty_column_fail_with_details() {
    let csv = "id,y,s,n,m,x\na,1,,,,\nb,0,,,,\n";
    for name in [
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_max_to_be_between",
    ] {
        let r = one(
            &format!("expectation = \"{name}\"\ncolumn = \"x\"\nmin_value = 0"),
            csv,
        );
        assert!(!r.success, "{name}");
        assert!(r.result.details.unwrap().contains("not computable"));
    }
}

#[test]
fn pair_a_greater_than_b() {
    // n > m: row 1 passes; rows 2, 3 (equal), 6 fail; rows 4 and 5 have a null.
    let e = |extra: &str| {
        format!(
            "expectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"n\"\ncolumn_B = \"m\"\n{extra}"
        )
    };
    let r = one(&e(""), SMALL_CSV);
    assert!(!r.success);
    assert_eq!(r.result.element_count, 6);
    assert_eq!(r.result.missing_count, 2);
    assert_eq!(r.result.unexpected_count, 3);
    assert_eq!(
        r.result
            .partial_unexpected_list
            .iter()
            .map(|u| u.row)
            .collect::<Vec<_>>(),
        vec![2, 3, 6]
    );
    assert_eq!(
        r.result.partial_unexpected_list[0].value,
        serde_json::json!([20, 25])
    );
    let r = one(&e("or_equal = true"), SMALL_CSV);
    assert_eq!(r.result.unexpected_count, 2);
    assert!(!r.success);
    assert!(one(&e("or_equal = true\nmostly = 0.5"), SMALL_CSV).success);
    assert!(!one(&e("mostly = 0.5"), SMALL_CSV).success);
    // Int against float.
    let r = one(
        "expectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"n\"\ncolumn_B = \"x\"",
        SMALL_CSV,
    );
    assert!(r.success);
    assert_eq!(r.result.missing_count, 2);
}

#[test]
fn compound_columns_unique() {
    let e = |extra: &str| {
        format!(
            "expectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\"y\", \"s\"]\n{extra}"
        )
    };
    assert!(one(&e(""), SMALL_CSV).success);
    // Rows 2 and 5 repeat rows 1 and 3's (y, s); rows 7 and 8 are both (0, null);
    // row 9 is all null and ignored.
    let csv = "id,y,s,n,m,x
a,1,AB,,,
b,0,CD,,,
c,1,AB,,,
d,1,CD,,,
e,0,CD,,,
f,0,EF,,,
g,0,,,,
h,0,,,,
";
    let r = one(&e(""), csv);
    assert!(!r.success);
    assert_eq!(r.result.unexpected_count, 6);
    assert_eq!(r.result.missing_count, 0);
    assert_eq!(
        r.result.observed_value,
        Some(serde_json::json!({ "distinct_values": 5 }))
    );
    assert_eq!(r.result.partial_unexpected_list[0].row, 3);
    assert_eq!(
        r.result.partial_unexpected_list[0].value,
        serde_json::json!([1, "AB"])
    );
    assert!(one(&e("mostly = 0.25"), csv).success);
    assert!(!one(&e("mostly = 0.3"), csv).success);
    let r = one(
        "expectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\"s\", \"n\"]",
        csv,
    );
    assert_eq!(r.result.missing_count, 2, "rows where every column is null");
}

#[test]
fn kl_divergence_numeric() {
    let e = |po: &str, threshold: f64| {
        format!(
            "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"x\"\nthreshold = {threshold:?}\npartition_object = {po}"
        )
    };
    // x: [0,2): 1.5, 0.5; [2,4): 2.5; [4,6]: 4.0, 5.0.
    let same = one(
        &e("{ bins = [0, 2, 4, 6], weights = [0.4, 0.2, 0.4] }", 0.001),
        SMALL_CSV,
    );
    assert!(same.success);
    // Identical distributions: only the ε of the two empty tails remains.
    let kl = same.result.observed_value.unwrap().as_f64().unwrap();
    assert!((kl - (1.0 + 2.0 * KL_EPSILON).ln()).abs() < 1e-12, "{kl}");
    let far = one(
        &e("{ bins = [0, 2, 4, 6], weights = [0.1, 0.8, 0.1] }", 0.1),
        SMALL_CSV,
    );
    assert!(!far.success);
    assert!(
        far.reason().contains(", expected at most 0.1"),
        "{}",
        far.reason()
    );
    let expected = 0.4 * (4.0f64).ln() + 0.2 * (0.25f64).ln() + 0.4 * (4.0f64).ln();
    let kl = far.result.observed_value.unwrap().as_f64().unwrap();
    assert!((kl - expected).abs() < 1e-4, "{kl} vs {expected}");
    // 5.0 falls above the last edge, where the reference has no weight: ε.
    let tail = one(
        &e("{ bins = [0, 2, 4], weights = [0.5, 0.5] }", 100.0),
        SMALL_CSV,
    );
    let eps = KL_EPSILON;
    let z = 1.0 + 2.0 * eps;
    let q = [eps / z, 0.5 / z, 0.5 / z, eps / z];
    let p = [0.0, 0.4, 0.4, 0.2];
    let expected: f64 = p
        .iter()
        .zip(q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| p * (p / q).ln())
        .sum();
    let kl = tail.result.observed_value.unwrap().as_f64().unwrap();
    assert!((kl - expected).abs() < 1e-12, "{kl} vs {expected}");
    assert!(tail.result.details.unwrap().contains("1 of 5 values"));
    assert!(tail.success);
    // Tail weights make the same observation likely.
    let with_tails = one(
        &e(
            "{ bins = [0, 2, 4], weights = [0.4, 0.4], tail_weights = [0.0, 0.2] }",
            0.001,
        ),
        SMALL_CSV,
    );
    assert!(with_tails.success, "{:?}", with_tails.result);
}

#[test]
fn kl_divergence_categorical() {
    let e = |weights: &str, threshold: f64| {
        format!(
            "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"s\"\nthreshold = {threshold:?}\npartition_object = {{ values = [\"AB-12\", \"AB-345\", \"XY-56\", \"ÉB-78\", \"AB-90\"], weights = {weights} }}"
        )
    };
    let r = one(&e("[1, 1, 1, 1, 1]", 1e-5), SMALL_CSV);
    assert!(r.success, "{:?}", r.result);
    // Identical distributions: only the ε of the empty "other" bucket remains.
    let kl = r.result.observed_value.unwrap().as_f64().unwrap();
    assert!((kl - (1.0 + KL_EPSILON).ln()).abs() < 1e-12, "{kl}");
    let r = one(&e("[0.6, 0.1, 0.1, 0.1, 0.1]", 0.1), SMALL_CSV);
    assert!(!r.success);
    let expected = 0.2 * (0.2f64 / 0.6).ln() + 0.8 * (0.2f64 / 0.1).ln();
    let kl = r.result.observed_value.unwrap().as_f64().unwrap();
    assert!((kl - expected).abs() < 1e-4, "{kl} vs {expected}");
    // A value that is not a category of the reference goes to "other" (ε).
    let r = one(
        "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"s\"\nthreshold = 1.0\npartition_object = { values = [\"AB-12\", \"AB-345\", \"ÉB-78\", \"AB-90\"], weights = [1, 1, 1, 1] }",
        SMALL_CSV,
    );
    assert!(!r.success, "{:?}", r.result);
    assert!(
        r.result
            .details
            .unwrap()
            .contains("outside the reference values")
    );
}

#[test]
fn warning_severity_reports_without_failing_the_batch() {
    let e = |severity: &str| {
        format!(
            "expectation = \"expect_column_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\"]\n{severity}"
        )
    };
    let warn = run(&e("severity = \"warning\""), SMALL_CSV);
    assert!(warn.success);
    assert!(warn.reasons().is_empty(), "{:?}", warn.reasons());
    let w = warn.warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("expect_column_values_to_be_in_set on column \"s\" failed: 4 of 5"),
        "{w:?}"
    );
    let r = find(&warn, "expect_column_values_to_be_in_set");
    assert_eq!(r.severity, Severity::Warning);
    assert!(!r.success);
    assert_eq!(warn.statistics.unsuccessful_expectations, 1);
    let json = serde_json::to_value(&warn).unwrap();
    assert_eq!(
        json["results"].as_array().unwrap().last().unwrap()["severity"],
        "warning"
    );

    let err = run(&e(""), SMALL_CSV);
    assert!(!err.success);
    assert_eq!(err.reasons().len(), 1);
    assert!(err.warnings().is_empty());
    let err = run(&e("severity = \"error\""), SMALL_CSV);
    assert!(!err.success);
}

#[test]
fn old_reports_still_deserialize() {
    let r = run(
        "expectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"s\"",
        SMALL_CSV,
    );
    let mut json = serde_json::to_value(&r).unwrap();
    let o = json.as_object_mut().unwrap();
    o.remove("batch_sha256");
    o.remove("spec_digest");
    for res in o["results"].as_array_mut().unwrap() {
        res.as_object_mut().unwrap().remove("severity");
    }
    let back: ValidationReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_spec_that_skipped_the_parser_fails_instead_of_passing() {
    let mut spec = DatasetSpec::parse(SMALL, "t").unwrap().spec;
    spec.expectations.push(Expectation::MatchRegex(MatchRegex {
        column: "s".into(),
        regex: "(".into(),
        mostly: None,
        severity: Severity::Error,
    }));
    spec.expectations.push(Expectation::NotNull(NotNull {
        column: "ghost".into(),
        mostly: None,
        severity: Severity::Error,
    }));
    let r = validate_csv(SMALL_CSV.as_bytes(), Arc::new(spec), 10);
    assert!(!r.success);
    let reasons = r.reasons().join("\n");
    assert!(reasons.contains("does not compile"), "{reasons}");
    assert!(reasons.contains("ghost"), "{reasons}");
}

#[test]
fn median_switches_to_the_sketch_past_the_exact_limit() {
    let text = format!(
        "{SMALL}[[expectations]]\nexpectation = \"expect_column_median_to_be_between\"\ncolumn = \"n\"\nmin_value = 0\n"
    );
    let spec = Arc::new(DatasetSpec::parse(&text, "t").unwrap().spec);
    let mut csv = String::from("id,y,s,n,m,x\n");
    for i in 0..1001 {
        csv.push_str(&format!("r{i},0,,{},,\n", (i * 37) % 1001));
    }
    let report = |limit: usize, chunk: usize| {
        let mut v = Validator::with_median_limit(spec.clone(), limit);
        let mut reader = CsvChunks::new(csv.as_bytes(), spec.clone(), chunk).unwrap();
        while let Some(c) = reader.next_chunk().unwrap() {
            v.push(&c);
        }
        v.finish(reader.header().to_vec(), None)
    };
    let exact = report(EXACT_MEDIAN_LIMIT, 100);
    let r = find(&exact, "expect_column_median_to_be_between");
    assert_eq!(r.result.observed_value, Some(500.0.into()));
    assert!(r.result.details.is_none());
    let approx = report(100, 100);
    assert_eq!(approx, report(100, 7));
    let r = find(&approx, "expect_column_median_to_be_between");
    assert!(r.success);
    assert!(
        r.result
            .details
            .as_deref()
            .unwrap()
            .contains("approximate median"),
        "{:?}",
        r.result
    );
    // With 1001 values and buffers of 32768 nothing was compacted yet: exact.
    assert_eq!(r.result.observed_value, Some(500.0.into()));
}
