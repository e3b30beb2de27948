"""Evidently's data drift on two CSV files, for `bench/run.sh --drift`.

    drift_anchor.py SPEC.toml REFERENCE.csv CURRENT.csv

Reads both files with pandas (the spec's null markers, no others), declares
every spec column but the entity id as numerical (int, float, bool) or
categorical (string), runs Evidently's `DataDriftPreset` with its defaults, and
prints one JSON object: seconds (read, drift, total), peak RSS, and per column
the method, score, threshold and whether it drifted.
"""
import json
import resource
import sys
import time
import tomllib

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

# Evidently's display names -> modelbus's method names.
METHODS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}
P_VALUES = {"ks", "chisquare", "z"}


def main(spec_path, ref_path, cur_path):
    with open(spec_path, "rb") as f:
        spec = tomllib.load(f)
    entity = spec.get("entity_column")
    nulls = spec.get("null_values", [""])
    numerical, categorical = [], []
    for c in spec["columns"]:
        if c["name"] == entity:
            continue
        (categorical if c["type"] == "string" else numerical).append(c["name"])
    started = time.perf_counter()
    read = lambda p: pd.read_csv(p, na_values=nulls, keep_default_na=False, usecols=numerical + categorical)
    ref, cur = read(ref_path), read(cur_path)
    read_s = time.perf_counter() - started
    dd = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    t = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    metrics = snap.dict()["metrics"]
    drift_s = time.perf_counter() - t
    columns = {}
    share = None
    for m in metrics:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            share = m["value"]["share"]
            continue
        if not cfg["type"].endswith("ValueDrift"):
            continue
        method = METHODS.get(cfg["method"], cfg["method"])
        score = float(m["value"])
        thr = float(cfg["threshold"])
        drifted = score < thr if method in P_VALUES else score >= thr
        columns[cfg["column"]] = {"method": method, "score": score, "threshold": thr, "drifted": drifted}
    print(json.dumps({
        "tool": "evidently",
        "read_seconds": read_s,
        "drift_seconds": drift_s,
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "share": share,
        "columns": columns,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
