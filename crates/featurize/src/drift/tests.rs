use super::*;

fn num(values: &[f64], nulls: u64) -> FeatureSample {
    FeatureSample::Numeric {
        values: values.to_vec(),
        nulls,
    }
}

fn cat(pairs: &[(&str, u64)], nulls: u64) -> FeatureSample {
    FeatureSample::Categorical {
        counts: pairs.iter().map(|(k, c)| (k.to_string(), *c)).collect(),
        nulls,
    }
}

fn reference(cols: Vec<(&str, FeatureSample)>) -> DriftReference {
    let rows = cols
        .first()
        .map(|(_, s)| s.non_null() + s.nulls())
        .unwrap_or(0);
    DriftReference::from_samples(
        rows,
        cols.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
    )
}

fn spread(n: usize, scale: f64, shift: f64) -> Vec<f64> {
    // A deterministic, well-mixed sample on [shift, shift + scale).
    (0..n)
        .map(|i| shift + scale * (((i * 7919 + 13) % n) as f64 + 0.5) / n as f64)
        .collect()
}

#[test]
fn the_default_rule_chooses_evidentlys_methods() {
    let small = reference(vec![
        ("x", num(&spread(500, 10.0, 0.0), 0)),
        ("flag", num(&[0.0, 1.0].repeat(250), 0)),
        ("three", num(&[0.0, 1.0, 2.0].repeat(200)[..500], 0)),
        ("c", cat(&[("a", 200), ("b", 200), ("c", 100)], 0)),
        ("yn", cat(&[("yes", 300), ("no", 200)], 0)),
    ]);
    let current = vec![
        ("x".to_string(), num(&spread(300, 10.0, 0.0), 0)),
        ("flag".to_string(), num(&[0.0, 1.0].repeat(150), 0)),
        ("three".to_string(), num(&[0.0, 1.0, 2.0].repeat(100), 0)),
        (
            "c".to_string(),
            cat(&[("a", 120), ("b", 120), ("c", 60)], 0),
        ),
        ("yn".to_string(), cat(&[("yes", 180), ("no", 120)], 0)),
    ];
    let d = compare(&small, 300, current.clone(), &DriftOptions::default()).unwrap();
    let methods: Vec<(&str, Method)> = d
        .columns
        .iter()
        .map(|c| (c.column.as_str(), c.method))
        .collect();
    assert_eq!(
        methods,
        vec![
            ("x", Method::Ks),
            ("flag", Method::Z),
            ("three", Method::Chisquare),
            ("c", Method::Chisquare),
            ("yn", Method::Z),
        ]
    );
    assert_eq!(d.drifted_columns, 0, "{d:#?}");
    assert!(!d.any_drift());

    let large = reference(vec![
        ("x", num(&spread(5000, 10.0, 0.0), 0)),
        ("flag", num(&[0.0, 1.0].repeat(2500), 0)),
        ("c", cat(&[("a", 2000), ("b", 2000), ("c", 1000)], 0)),
    ]);
    let d = compare(
        &large,
        300,
        current[..2]
            .iter()
            .cloned()
            .chain([current[3].clone()])
            .collect(),
        &DriftOptions::default(),
    )
    .unwrap();
    let methods: Vec<Method> = d.columns.iter().map(|c| c.method).collect();
    assert_eq!(
        methods,
        vec![
            Method::Wasserstein,
            Method::Jensenshannon,
            Method::Jensenshannon
        ]
    );
    for c in &d.columns {
        assert_eq!(c.threshold, 0.1);
        assert!(c.p_value.is_none());
    }
}

#[test]
fn a_shift_is_detected_and_the_share_rule_decides_the_dataset() {
    let r = reference(vec![
        ("a", num(&spread(5000, 30.0, 50.0), 0)),
        ("b", num(&spread(5000, 30.0, 50.0), 0)),
        ("c", cat(&[("x", 2500), ("y", 2500)], 0)),
    ]);
    let shifted: Vec<f64> = spread(1000, 30.0, 50.0)
        .iter()
        .map(|v| v * 1.1 + 5.0)
        .collect();
    let d = compare(
        &r,
        1000,
        vec![
            ("a".into(), num(&shifted, 0)),
            ("b".into(), num(&spread(1000, 30.0, 50.0), 0)),
            ("c".into(), cat(&[("x", 500), ("y", 500)], 0)),
        ],
        &DriftOptions::default(),
    )
    .unwrap();
    let a = &d.columns[0];
    assert!(a.drifted && a.score > 0.5, "{a:#?}");
    assert!(!d.columns[1].drifted && !d.columns[2].drifted);
    assert_eq!(d.drifted_columns, 1);
    assert!((d.share - 1.0 / 3.0).abs() < 1e-12);
    assert!(!d.drifted, "one of three is below the 0.5 share");
    assert!(d.any_drift());
    let strict = DriftOptions {
        drift_share: 0.3,
        ..DriftOptions::default()
    };
    let d2 = compare(&r, 1000, vec![("a".into(), num(&shifted, 0))], &strict).unwrap();
    assert!(d2.drifted);
    assert_eq!(d2.skipped.len(), 2, "b and c are not in the current data");
}

#[test]
fn constant_and_empty_columns_score_zero_or_are_skipped_never_nan() {
    let r = reference(vec![
        ("k", num(&[3.0; 2000], 0)),
        ("empty", num(&[], 2000)),
        ("one", cat(&[("only", 2000)], 0)),
    ]);
    let d = compare(
        &r,
        100,
        vec![
            ("k".into(), num(&[3.0; 100], 0)),
            ("empty".into(), num(&[1.0; 100], 0)),
            ("one".into(), cat(&[("only", 100)], 0)),
        ],
        &DriftOptions::default(),
    )
    .unwrap();
    assert_eq!(d.columns.len(), 2);
    for c in &d.columns {
        assert_eq!(c.score, 0.0, "{c:#?}");
        assert!(!c.drifted);
        assert!(c.distribution.reference.iter().all(|v| v.is_finite()));
    }
    assert_eq!(d.skipped[0].column, "empty");
    assert!(d.skipped[0].reason.contains("no values"));
    let json = serde_json::to_string(&d).unwrap();
    assert!(
        !json.contains("NaN") && !json.contains("null,\"p_value\""),
        "{json}"
    );

    // An empty window: every column skipped, no decision.
    let e = compare(
        &r,
        0,
        vec![("k".into(), num(&[], 0)), ("one".into(), cat(&[], 0))],
        &DriftOptions::default(),
    )
    .unwrap();
    assert!(e.columns.is_empty() && !e.drifted && !e.any_drift() && e.share == 0.0);
    assert!(
        e.skipped
            .iter()
            .any(|s| s.reason.contains("fewer than the 30"))
    );
}

#[test]
fn unseen_categories_are_counted_and_drive_chi_square_to_zero() {
    let r = reference(vec![("c", cat(&[("a", 300), ("b", 300), ("c", 300)], 50))]);
    let d = compare(
        &r,
        100,
        vec![(
            "c".into(),
            cat(&[("a", 30), ("b", 30), ("c", 20), ("new", 20)], 10),
        )],
        &DriftOptions::default(),
    )
    .unwrap();
    let c = &d.columns[0];
    assert_eq!(c.method, Method::Chisquare);
    assert_eq!(c.p_value, Some(0.0));
    assert!(c.statistic.is_infinite());
    assert!(c.drifted);
    assert_eq!(c.unseen_rows, 20);
    assert_eq!(c.unseen.get("new"), Some(&20));
    assert!((c.reference_null_share - 50.0 / 950.0).abs() < 1e-12);
    assert!((c.current_null_share - 10.0 / 110.0).abs() < 1e-12);
    let json = serde_json::to_value(&d).unwrap();
    assert!(json["columns"][0]["statistic"].is_null());
}

#[test]
fn options_that_do_not_fit_are_refused_naming_the_key() {
    let r = reference(vec![("c", cat(&[("a", 10)], 0)), ("x", num(&[1.0; 10], 0))]);
    let mut o = DriftOptions::default();
    o.columns.insert(
        "c".into(),
        ColumnOptions {
            method: Some(Method::Ks),
            threshold: None,
        },
    );
    let e = compare(&r, 0, vec![], &o).unwrap_err();
    assert!(e.to_string().contains("columns.c.method"), "{e}");
    let o = DriftOptions {
        drift_share: 1.5,
        ..DriftOptions::default()
    };
    assert!(
        compare(&r, 0, vec![], &o)
            .unwrap_err()
            .to_string()
            .contains("drift_share")
    );
    let mut o = DriftOptions::default();
    o.columns.insert("nope".into(), ColumnOptions::default());
    assert!(
        compare(&r, 0, vec![], &o)
            .unwrap_err()
            .to_string()
            .contains("columns.nope")
    );
    // A global numeric-only method leaves categories to the default rule.
    let o = DriftOptions {
        method: Some(Method::Ks),
        min_rows: 1,
        ..DriftOptions::default()
    };
    let d = compare(
        &r,
        10,
        vec![
            ("c".into(), cat(&[("a", 10)], 0)),
            ("x".into(), num(&[1.0; 10], 0)),
        ],
        &o,
    )
    .unwrap();
    assert_eq!(d.columns[0].method, Method::Z);
    assert_eq!(d.columns[1].method, Method::Ks);
}

#[test]
fn a_corrupt_stored_reference_is_refused() {
    let mut r = reference(vec![("x", num(&spread(3000, 1.0, 0.0), 0))]);
    if let ColumnReference::Numeric(n) = &mut r.columns[0].1 {
        n.quantiles.truncate(10);
    }
    let e = compare(&r, 0, vec![], &DriftOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("column `x`") && e.to_string().contains("quantiles"),
        "{e}"
    );
}

#[test]
fn large_samples_are_compared_in_parallel_with_the_same_results_in_order() {
    let cols = ["a", "b", "c", "d"];
    let r = reference(
        cols.iter()
            .map(|c| (*c, num(&spread(5000, 10.0, 0.0), 0)))
            .collect(),
    );
    let current: Vec<(String, FeatureSample)> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), num(&spread(80_000, 10.0, i as f64), 0)))
        .collect();
    let all = compare(&r, 80_000, current.clone(), &DriftOptions::default()).unwrap();
    let names: Vec<&str> = all.columns.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(names, cols);
    for (i, c) in current.into_iter().enumerate() {
        let one = compare(&r, 80_000, vec![c], &DriftOptions::default()).unwrap();
        assert_eq!(one.columns[0], all.columns[i]);
    }
    assert!(all.columns[3].drifted && !all.columns[0].drifted);
}
