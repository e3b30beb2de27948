"""Side by side: modelbus's and Evidently's drift on the same files.

    compare_drift.py MODELBUS.json EVIDENTLY.json

MODELBUS.json is `modelbus bench monitor --json` or `modelbus drift --json`;
EVIDENTLY.json is bench/drift_anchor.py's output. Prints a table per column
(method, both scores, decision) and the agreement; exits 1 when any decision
or method differs on a column both tested.
"""
import json
import sys


def columns_of(doc):
    cols = doc["columns"]
    if isinstance(cols, list):  # `modelbus drift --json`
        return {c["column"]: c for c in cols}
    return cols


def main(mb_path, ev_path):
    mb = json.load(open(mb_path))
    ev = json.load(open(ev_path))
    m, e = columns_of(mb), columns_of(ev)
    both = [c for c in e if c in m]
    disagree = 0
    print(f"{'column':<20} {'method':<14} {'modelbus':>10} {'evidently':>10} {'|diff|':>9}  decision")
    for c in both:
        a, b = m[c], e[c]
        same = a["method"] == b["method"] and a["drifted"] == b["drifted"]
        disagree += not same
        print(f"{c:<20} {a['method']:<14} {a['score']:>10.5f} {b['score']:>10.5f} {abs(a['score'] - b['score']):>9.2e}  "
              f"{'drift' if a['drifted'] else 'ok':<5} / {'drift' if b['drifted'] else 'ok':<5}{'' if same else '  <-- DIFFERS'}")
    print(f"{len(both) - disagree}/{len(both)} columns agree on method and decision"
          f" (only in modelbus: {sorted(set(m) - set(e))}; only in Evidently: {sorted(set(e) - set(m))})")
    if "median_seconds" in mb and "seconds" in ev:
        print(f"modelbus median {mb['median_seconds']:.3f}s, peak RSS {mb['peak_rss_mib']:.0f} MiB; "
              f"Evidently {ev['seconds']:.2f}s (read {ev['read_seconds']:.2f}s + drift {ev['drift_seconds']:.2f}s), "
              f"peak RSS {ev['peak_rss_mib']:.0f} MiB; ratio {ev['seconds'] / mb['median_seconds']:.0f}x")
    sys.exit(1 if disagree else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
