#!/usr/bin/env python3
"""Python anchors for `modelbus bench`: Great Expectations 1.x, pandera, and
scikit-learn / LightGBM cross-validation on the Telco churn file.

    anchors.py validate --data FILE --suite bench/telco_suite.json --runs N [--tools ge,pandera]
    anchors.py train    --data FILE --folds 5 --seed 42
    anchors.py generate --data TELCO.csv --rows N --seed S --out FILE   (reference generator)

`validate` runs every measurement in a fresh Python process (this script,
re-executed with the hidden `_validate-once` subcommand) so that the peak RSS
of one run is not inflated by an earlier one. Each child reports:

  read_seconds      pandas.read_csv (na_values=[" "], keep_default_na=True)
  setup_seconds     tool-side setup that does not touch the data (GE: ephemeral
                    context, pandas data source, dataframe asset, batch
                    definition, suite built from the JSON; pandera: schema)
  validate_seconds  the validation itself (GE: get_batch + batch.validate(suite);
                    pandera: schema.validate(df, lazy=True))
  total_seconds     read + setup + validate (imports excluded)
  peak_rss_mib      resource.getrusage(RUSAGE_SELF).ru_maxrss of the child,
                    which includes the interpreter and the imported libraries
                    (import_rss_mib reports the RSS right after the imports)

The parent prints one JSON object per tool and line (medians over the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

NA_VALUES = [" "]


def _rss_now_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def _load_suite(path: str) -> dict:
    with open(path) as f:
        suite = json.load(f)
    if not isinstance(suite.get("expectations"), list):
        raise SystemExit(f"{path}: not a GX 1.x suite export (no 'expectations' list)")
    return suite


def _read_csv(path: str):
    import pandas as pd

    return pd.read_csv(path, na_values=NA_VALUES, keep_default_na=True)


# --------------------------------------------------------------------------
# Great Expectations 1.x
# --------------------------------------------------------------------------


def build_gx_suite(gx, suite_json: dict):
    """Build a GX 1.x ExpectationSuite from a suite export.

    `ExpectationSuite(name=..., expectations=[...])` would also accept the dicts,
    but it only *logs* invalid configurations and drops them, so each one is
    converted explicitly and the count is checked.
    """
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    suite = gx.ExpectationSuite(name=suite_json.get("name") or "bench-suite")
    for exp in suite_json["expectations"]:
        config = ExpectationConfiguration(
            type=exp["type"], kwargs=dict(exp.get("kwargs", {})), meta=exp.get("meta") or {}
        )
        suite.add_expectation(config.to_domain_obj())
    if len(suite.expectations) != len(suite_json["expectations"]):
        raise SystemExit(
            f"GX kept {len(suite.expectations)} of {len(suite_json['expectations'])} expectations"
        )
    return suite


def run_ge_once(data: str, suite_path: str, result_format: str) -> dict:
    import great_expectations as gx

    import_rss = _rss_now_mib()
    suite_json = _load_suite(suite_path)

    t0 = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    datasource = context.data_sources.add_pandas(name="bench")
    asset = datasource.add_dataframe_asset(name="telco")
    batch_definition = asset.add_batch_definition_whole_dataframe(name="whole")
    suite = context.suites.add(build_gx_suite(gx, suite_json))
    t1 = time.perf_counter()
    df = _read_csv(data)
    t2 = time.perf_counter()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format=result_format)
    t3 = time.perf_counter()

    failed = [
        r.expectation_config.type
        + ("(" + str(r.expectation_config.kwargs.get("column")) + ")"
           if r.expectation_config.kwargs.get("column") else "")
        for r in result.results
        if not r.success
    ]
    return {
        "tool": "great_expectations",
        "version": gx.__version__,
        "rows": int(len(df)),
        "expectations": len(suite.expectations),
        "evaluated": len(result.results),
        "read_seconds": t2 - t1,
        "setup_seconds": t1 - t0,
        "validate_seconds": t3 - t2,
        "total_seconds": t3 - t0,
        "import_rss_mib": import_rss,
        "peak_rss_mib": _peak_rss_mib(),
        "success": bool(result.success),
        "failed": failed,
    }


# --------------------------------------------------------------------------
# pandera
# --------------------------------------------------------------------------


def build_pandera_schema(pa, suite_json: dict):
    """Translate the GX suite into an equivalent pandera DataFrameSchema.

    Returns (schema, translated, skipped). Columns without a not-null
    expectation are nullable, as in GX where value checks ignore nulls.
    """
    columns: dict[str, dict] = {}
    frame_checks = []
    translated, skipped = 0, []

    def col(name: str) -> dict:
        return columns.setdefault(name, {"nullable": True, "unique": False, "checks": []})

    def between(lo, hi):
        def ok(x) -> bool:
            return (lo is None or x >= lo) and (hi is None or x <= hi)

        return ok

    for exp in suite_json["expectations"]:
        t, kw = exp["type"], exp.get("kwargs", {})
        c = kw.get("column")
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if t == "expect_table_row_count_to_be_between":
            rng = between(lo, hi)
            frame_checks.append(pa.Check(lambda df, rng=rng: rng(len(df)), name="row_count"))
        elif t == "expect_column_values_to_not_be_null":
            mostly = kw.get("mostly")
            if mostly is None or mostly >= 1:
                col(c)["nullable"] = False
            else:
                col(c)
                frame_checks.append(
                    pa.Check(
                        lambda df, c=c, m=mostly: bool(df[c].notna().mean() >= m),
                        name=f"not_null_mostly[{c}]",
                    )
                )
        elif t == "expect_column_values_to_be_unique":
            col(c)["unique"] = True
        elif t == "expect_column_values_to_be_in_set":
            col(c)["checks"].append(pa.Check.isin(kw["value_set"]))
        elif t == "expect_column_values_to_be_between":
            col(c)["checks"].append(
                pa.Check.in_range(
                    lo if lo is not None else float("-inf"), hi if hi is not None else float("inf")
                )
            )
        elif t == "expect_column_values_to_match_regex":
            col(c)["checks"].append(pa.Check.str_matches(kw["regex"]))
        elif t in (
            "expect_column_mean_to_be_between",
            "expect_column_min_to_be_between",
            "expect_column_max_to_be_between",
        ):
            stat = t.split("_")[2]  # mean / min / max
            rng = between(lo, hi)
            col(c)["checks"].append(
                pa.Check(lambda s, stat=stat, rng=rng: bool(rng(getattr(s, stat)())),
                         name=f"{stat}_between")
            )
        else:
            skipped.append(t)
            continue
        translated += 1

    schema = pa.DataFrameSchema(
        {name: pa.Column(**spec) for name, spec in columns.items()},
        checks=frame_checks,
        coerce=False,
        strict=False,
    )
    return schema, translated, skipped


def run_pandera_once(data: str, suite_path: str, result_format: str) -> dict:
    del result_format
    import pandera
    import pandera.pandas as pa

    import_rss = _rss_now_mib()
    suite_json = _load_suite(suite_path)

    t0 = time.perf_counter()
    schema, translated, skipped = build_pandera_schema(pa, suite_json)
    t1 = time.perf_counter()
    df = _read_csv(data)
    t2 = time.perf_counter()
    failed: list[str] = []
    try:
        schema.validate(df, lazy=True)
        success = True
    except pandera.errors.SchemaErrors as e:
        success = False
        failed = sorted({str(x) for x in e.failure_cases["check"].unique()})[:20]
    t3 = time.perf_counter()
    return {
        "tool": "pandera",
        "version": pandera.__version__,
        "rows": int(len(df)),
        "expectations": translated,
        "skipped": skipped,
        "read_seconds": t2 - t1,
        "setup_seconds": t1 - t0,
        "validate_seconds": t3 - t2,
        "total_seconds": t3 - t0,
        "import_rss_mib": import_rss,
        "peak_rss_mib": _peak_rss_mib(),
        "success": success,
        "failed": failed,
    }


RUNNERS = {"ge": run_ge_once, "great_expectations": run_ge_once, "pandera": run_pandera_once}


def cmd_validate_once(args) -> None:
    out = RUNNERS[args.tool](args.data, args.suite, args.result_format)
    print(json.dumps(out))


def cmd_validate(args) -> None:
    import pandas as pd

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for tool in tools:
        if tool not in RUNNERS:
            raise SystemExit(f"unknown tool {tool!r}; choose from ge, pandera")
    for tool in tools:
        runs = []
        for i in range(args.runs):
            cmd = [
                sys.executable, os.path.abspath(__file__), "_validate-once",
                "--tool", tool, "--data", args.data, "--suite", args.suite,
                "--result-format", args.result_format,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"{tool} run {i + 1} failed (exit {proc.returncode})")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"[anchors] {tool} run {i + 1}/{args.runs}: read {run['read_seconds']:.2f}s "
                f"validate {run['validate_seconds']:.2f}s total {run['total_seconds']:.2f}s "
                f"peak {run['peak_rss_mib']:.0f} MiB success={run['success']}",
                file=sys.stderr,
            )

        def med(key: str) -> float:
            return round(statistics.median(r[key] for r in runs), 4)

        first = runs[0]
        summary = {
            "tool": first["tool"],
            "version": first["version"],
            "pandas_version": pd.__version__,
            "file": args.data,
            "rows": first["rows"],
            "expectations": first["expectations"],
            "runs": args.runs,
            "median_read_seconds": med("read_seconds"),
            "median_setup_seconds": med("setup_seconds"),
            "median_validate_seconds": med("validate_seconds"),
            "median_total_seconds": med("total_seconds"),
            "median_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
            "median_import_rss_mib": round(statistics.median(r["import_rss_mib"] for r in runs), 1),
            "success": all(r["success"] for r in runs),
            "failed": first["failed"],
        }
        if tool == "pandera":
            summary["skipped_expectations"] = first["skipped"]
        else:
            summary["result_format"] = args.result_format
        print(json.dumps(summary), flush=True)


# --------------------------------------------------------------------------
# Cross-validated training anchors
# --------------------------------------------------------------------------


def cmd_train(args) -> None:
    import numpy as np
    import pandas as pd
    import sklearn
    import lightgbm
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    df = _read_csv(args.data)
    y = (df[args.target] == args.positive).astype(int).to_numpy()
    X = df.drop(columns=[args.target, args.id_column])
    string_cols = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    # One-hot on the whole frame (the categories are fixed and known, so this
    # leaks nothing but the list of levels; acceptable for an anchor).
    X = pd.get_dummies(X, columns=string_cols, dtype=float).astype(float)
    feature_names = list(X.columns)
    X = X.to_numpy()
    nan_cols = np.where(np.isnan(X).any(axis=0))[0]

    models = {
        "logistic_regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000)
        ),
        "lightgbm": lambda: LGBMClassifier(verbose=-1, n_jobs=args.threads, random_state=args.seed),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=args.seed),
    }
    only = [m.strip() for m in args.models.split(",")] if args.models else list(models)

    skf = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    folds = list(skf.split(X, y))
    results = []
    for name in only:
        aucs, fit_s = [], []
        for train_idx, test_idx in folds:
            Xtr, Xte = X[train_idx].copy(), X[test_idx].copy()
            # Median imputation (TotalCharges), with the median of the training fold.
            for j in nan_cols:
                m = np.nanmedian(Xtr[:, j])
                Xtr[np.isnan(Xtr[:, j]), j] = m
                Xte[np.isnan(Xte[:, j]), j] = m
            model = models[name]()
            # OpenMP / BLAS pools capped like LightGBM's n_jobs: on 2 shared cores
            # HistGradientBoosting's default pool oversubscribes (about 10x slower).
            with threadpool_limits(limits=args.threads):
                t0 = time.perf_counter()
                model.fit(Xtr, y[train_idx])
                fit_s.append(time.perf_counter() - t0)
                proba = model.predict_proba(Xte)[:, 1]
            aucs.append(float(roc_auc_score(y[test_idx], proba)))
        results.append({
            "name": name,
            "mean_roc_auc": round(float(np.mean(aucs)), 5),
            "fold_roc_auc": [round(a, 5) for a in aucs],
            "total_fit_seconds": round(sum(fit_s), 4),
            "median_fit_seconds": round(statistics.median(fit_s), 4),
        })
        print(
            f"[anchors] {name}: mean ROC AUC {np.mean(aucs):.4f}, fit total {sum(fit_s):.2f}s",
            file=sys.stderr,
        )
    print(json.dumps({
        "tool": "anchors",
        "file": args.data,
        "rows": int(len(df)),
        "features": len(feature_names),
        "folds": args.folds,
        "seed": args.seed,
        "threads": args.threads,
        "versions": {
            "scikit-learn": sklearn.__version__,
            "lightgbm": lightgbm.__version__,
            "pandas": pd.__version__,
        },
        "models": results,
    }), flush=True)


# --------------------------------------------------------------------------
# Reference generator (the shipped one is `modelbus bench generate`)
# --------------------------------------------------------------------------


def cmd_generate(args) -> None:
    """Telco-shaped rows: rows sampled with replacement from the Telco file,
    categorical values kept, MonthlyCharges jittered by U(-3, 3) and clipped to
    [18, 120], TotalCharges = tenure * MonthlyCharges * U(0.95, 1.05) (" " when
    tenure is 0), customerID = f"{i:07}-{suffix}". Only for measuring the
    anchors before `modelbus bench generate` exists; its output is not
    byte-identical to modelbus's generator."""
    import numpy as np
    import pandas as pd

    src = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(src), size=args.rows)
    out = src.iloc[idx].reset_index(drop=True)
    suffix = out["customerID"].str.split("-").str[1]
    out["customerID"] = [f"{i:07}-{s}" for i, s in zip(range(args.rows), suffix)]
    mc = out["MonthlyCharges"].astype(float).to_numpy()
    mc = np.clip(mc + rng.uniform(-3, 3, args.rows), 18, 120).round(2)
    tenure = out["tenure"].astype(int).to_numpy()
    tc = (tenure * mc * rng.uniform(0.95, 1.05, args.rows)).round(2)
    out["MonthlyCharges"] = [f"{v:.2f}" for v in mc]
    out["TotalCharges"] = [" " if t == 0 else f"{v:.2f}" for t, v in zip(tenure, tc)]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out.to_csv(args.out, index=False)
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="GE 1.x and pandera on a CSV file, medians over runs")
    v.add_argument("--data", required=True)
    v.add_argument("--suite", default="bench/telco_suite.json")
    v.add_argument("--runs", type=int, default=3)
    v.add_argument("--tools", default="ge,pandera", help="comma list: ge, pandera")
    v.add_argument("--result-format", default="SUMMARY",
                   help="GX result_format (default SUMMARY, GX's own default)")
    v.set_defaults(func=cmd_validate)

    o = sub.add_parser("_validate-once")
    o.add_argument("--tool", required=True)
    o.add_argument("--data", required=True)
    o.add_argument("--suite", required=True)
    o.add_argument("--result-format", default="SUMMARY")
    o.set_defaults(func=cmd_validate_once)

    t = sub.add_parser("train", help="stratified k-fold CV of LR, LightGBM, HistGradientBoosting")
    t.add_argument("--data", required=True)
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--target", default="Churn")
    t.add_argument("--positive", default="Yes")
    t.add_argument("--id-column", default="customerID")
    t.add_argument("--threads", type=int, default=1,
                   help="threads per fit (LightGBM n_jobs, OpenMP/BLAS limits); default 1")
    t.add_argument("--models", default="",
                   help="comma list of logistic_regression, lightgbm, hist_gradient_boosting")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="reference Python generator of a Telco-shaped file")
    g.add_argument("--data", required=True, help="the Telco CSV to sample from")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--out", required=True)
    g.set_defaults(func=cmd_generate)

    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
