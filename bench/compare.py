#!/usr/bin/env python3
"""Print the anchors (bench/anchors.py) side by side with `modelbus bench`.

    compare.py [--validate LABEL ANCHORS_JSONL MODELBUS_JSON]... [--train ANCHORS_JSON MODELBUS_JSON]

Any file may be missing or unreadable (the figure is then "not measured").
Only the standard library is used, so this runs with any python3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Targets from the issue.
TARGET_VALIDATE_SECONDS = 1.0  # 1M-row Telco-shaped file, 43 expectations, CSV parsing included
TARGET_PEAK_MIB = 256.0  # whatever the file size
TARGET_AUC_GAP = 0.005  # picked model within 0.005 of the best anchor
NM = "not measured"


def load_json_objects(path: str | None) -> list[dict]:
    """All JSON objects in a file: a single document, an array, or one per line."""
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
        if isinstance(doc, list):
            return [d for d in doc if isinstance(d, dict)]
        return [doc] if isinstance(doc, dict) else []
    except json.JSONDecodeError:
        pass
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def fmt(x, spec: str = ".3f", suffix: str = "") -> str:
    v = num(x)
    return NM if v is None else f"{v:{spec}}{suffix}"


def ratio(a, b) -> str:
    a, b = num(a), num(b)
    if a is None or b is None:
        return NM
    if b == 0:
        return "inf"
    return f"{a / b:.1f}x"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def verdict(ok: bool | None) -> str:
    return NM if ok is None else ("PASS" if ok else "FAIL")


def validate_section(label: str, anchors_path: str, modelbus_path: str) -> str:
    anchors = {d.get("tool"): d for d in load_json_objects(anchors_path)}
    mb_list = [d for d in load_json_objects(modelbus_path) if d.get("tool") == "modelbus"]
    mb = mb_list[-1] if mb_list else {}
    ge = anchors.get("great_expectations", {})
    pa = anchors.get("pandera", {})
    rows_n = next((d.get("rows") for d in (mb, ge, pa) if d.get("rows") is not None), None)

    body = []
    for name, d, total_key, peak_key in (
        ("great_expectations " + str(ge.get("version", "")), ge,
         "median_total_seconds", "median_peak_rss_mib"),
        ("pandera " + str(pa.get("version", "")), pa, "median_total_seconds", "median_peak_rss_mib"),
        ("modelbus", mb, "median_seconds", "peak_rss_mib"),
    ):
        body.append([
            name.strip(),
            str(d.get("expectations", NM)) if d else NM,
            str(d.get("runs", NM)) if d else NM,
            fmt(d.get("median_read_seconds")) if name != "modelbus" else "(in total)",
            fmt(d.get("median_validate_seconds")) if name != "modelbus" else "(in total)",
            fmt(d.get(total_key)),
            fmt(d.get(peak_key), ".0f"),
            str(d["success"]).lower() if isinstance(d.get("success"), bool) else NM,
        ])
    out = [f"## validate: {label} ({rows_n if rows_n is not None else '?'} rows)", ""]
    out.append(table(
        ["tool", "expectations", "runs", "read s", "validate s", "total s", "peak MiB", "success"],
        body,
    ))
    mb_total, mb_peak = mb.get("median_seconds"), mb.get("peak_rss_mib")
    out += [
        "",
        f"- GE total / modelbus total:      {ratio(ge.get('median_total_seconds'), mb_total)}",
        f"- pandera total / modelbus total: {ratio(pa.get('median_total_seconds'), mb_total)}",
        f"- GE peak / modelbus peak:        {ratio(ge.get('median_peak_rss_mib'), mb_peak)}",
        f"- pandera peak / modelbus peak:   {ratio(pa.get('median_peak_rss_mib'), mb_peak)}",
    ]
    if num(rows_n) is not None and rows_n >= 1_000_000:
        ok = None if num(mb_total) is None else mb_total <= TARGET_VALIDATE_SECONDS
        out.append(f"- target modelbus total <= {TARGET_VALIDATE_SECONDS:g} s: {verdict(ok)}")
    ok = None if num(mb_peak) is None else mb_peak <= TARGET_PEAK_MIB
    out.append(f"- target modelbus peak <= {TARGET_PEAK_MIB:g} MiB: {verdict(ok)}")
    if mb and ge and mb.get("expectations") != ge.get("expectations"):
        out.append(f"- note: modelbus checked {mb.get('expectations')} expectations, "
                   f"GE {ge.get('expectations')}")
    return "\n".join(out)


def train_section(anchors_path: str, modelbus_path: str) -> str:
    an = next((d for d in load_json_objects(anchors_path) if d.get("tool") == "anchors"), {})
    mb = next((d for d in load_json_objects(modelbus_path) if d.get("tool") == "modelbus"), {})
    models = an.get("models") or []
    cands = mb.get("candidates") or []
    picked = mb.get("picked") or {}

    body = []
    for m in models:
        body.append(["anchor", m.get("name", "?"), fmt(m.get("mean_roc_auc"), ".4f"),
                     fmt(m.get("total_fit_seconds")), fmt(m.get("median_fit_seconds"))])
    if not models:
        body.append(["anchor", NM, NM, NM, NM])
    for c in cands:
        name = str(c.get("algorithm", "?"))
        if picked and c.get("algorithm") == picked.get("algorithm"):
            name += " (picked)"
        body.append(["modelbus", name, fmt(c.get("mean_roc_auc"), ".4f"),
                     fmt(c.get("total_fit_seconds")), fmt(c.get("median_fit_seconds"))])
    if not cands:
        body.append(["modelbus", NM, NM, NM, NM])

    folds = an.get("folds") or mb.get("folds")
    out = [f"## train: {folds or '?'}-fold stratified CV on {an.get('file') or 'Telco'}", ""]
    out.append(table(["side", "model", "mean ROC AUC", "total fit s", "median fit s"], body))

    best = max(models, key=lambda m: num(m.get("mean_roc_auc")) or -1, default={})
    best_auc = num(best.get("mean_roc_auc"))
    picked_auc = num(picked.get("mean_roc_auc"))
    picked_cand = next((c for c in cands if c.get("algorithm") == picked.get("algorithm")), {})
    lgbm = next((m for m in models if m.get("name") == "lightgbm"), {})

    out.append("")
    out.append(f"- best anchor: {best.get('name', '?') + ' ' + fmt(best_auc, '.4f') if best else NM}; "
               f"modelbus picked: "
               f"{picked.get('algorithm', '?') + ' ' + fmt(picked_auc, '.4f') if picked else NM}")
    if best_auc is not None and picked_auc is not None:
        gap = picked_auc - best_auc
        out.append(f"- picked - best anchor AUC: {gap:+.4f}")
        out.append(f"- target picked >= best anchor - {TARGET_AUC_GAP}: "
                   f"{verdict(gap >= -TARGET_AUC_GAP)}")
    else:
        out.append(f"- picked - best anchor AUC: {NM}")
    lg_total, mb_total = lgbm.get("total_fit_seconds"), picked_cand.get("total_fit_seconds")
    out.append(f"- LightGBM fit / modelbus picked fit (total over folds): {ratio(lg_total, mb_total)}"
               f"  [median per fold: {ratio(lgbm.get('median_fit_seconds'), picked_cand.get('median_fit_seconds'))}]")
    mb_gbdt = next((c for c in cands if c.get("algorithm") == "gbdt"), {})
    out.append(f"- LightGBM fit / modelbus gbdt fit (total over folds):   "
               f"{ratio(lg_total, mb_gbdt.get('total_fit_seconds'))}")
    ok = None if num(lg_total) is None or num(mb_total) is None else mb_total <= lg_total
    out.append(f"- target modelbus picked fit <= LightGBM fit: {verdict(ok)}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--validate", nargs=3, action="append", default=[],
                   metavar=("LABEL", "ANCHORS_JSONL", "MODELBUS_JSON"))
    p.add_argument("--train", nargs=2, metavar=("ANCHORS_JSON", "MODELBUS_JSON"))
    args = p.parse_args()
    if not args.validate and not args.train:
        p.error("nothing to compare: give --validate and/or --train")
    sections = [validate_section(*v) for v in args.validate]
    if args.train:
        sections.append(train_section(*args.train))
    sys.stdout.write("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
