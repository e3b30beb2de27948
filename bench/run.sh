#!/usr/bin/env bash
# Benchmark `modelbus bench validate` / `modelbus bench train` against the
# Python anchors (Great Expectations 1.x, pandera, LightGBM, scikit-learn), or
# with --drift, `modelbus bench monitor` against Evidently 0.7 (DataDriftPreset)
# on two 500,000-row Telco-shaped files (the second one shifted).
#
#   bench/run.sh [--skip-anchors] [--skip-build] [--telco-only] [--drift]
#
# Environment: ANCHOR_RUNS (default 3; GE takes ~20 s per run on the 1M-row
# file), MODELBUS_RUNS (default 5), ROWS (default 1000000), SEED (default 42).
# Results go to bench/out/ (gitignored); the table is also in bench/out/compare.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SKIP_ANCHORS=0
SKIP_BUILD=0
TELCO_ONLY=0
DRIFT=0
for arg in "$@"; do
  case "$arg" in
    --skip-anchors) SKIP_ANCHORS=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --telco-only) TELCO_ONLY=1 ;;
    --drift) DRIFT=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

ANCHOR_RUNS="${ANCHOR_RUNS:-3}"
MODELBUS_RUNS="${MODELBUS_RUNS:-5}"
ROWS="${ROWS:-1000000}"
SEED="${SEED:-42}"

TELCO="data/telco-churn/telco_customer_churn.csv"
BASE_SPEC="config/datasets/telco-churn.toml"
SUITE="bench/telco_suite.json"
OUT="bench/out"
VENV="bench/.venv"
PY="$VENV/bin/python"
MB="target/release/modelbus"
DATA_1M="$OUT/telco-1m.csv"
BENCH_SPEC="$OUT/telco-bench.toml"

mkdir -p "$OUT"
log() { printf '\n==> %s\n' "$*" >&2; }

# --- drift: modelbus vs Evidently on the same two files ---------------------
if [[ "$DRIFT" == 1 ]]; then
  DVENV="bench/.venv-drift"
  DPY="$DVENV/bin/python"
  dreq="$(sha256sum bench/requirements-drift.txt | cut -d' ' -f1)"
  if [[ ! -x "$DPY" || ! -f "$DVENV/.requirements.sha256" || "$(cat "$DVENV/.requirements.sha256")" != "$dreq" ]]; then
    log "creating $DVENV from bench/requirements-drift.txt"
    python3 -m venv "$DVENV"
    "$DPY" -m pip install --quiet --upgrade pip
    "$DPY" -m pip install --quiet -r bench/requirements-drift.txt
    echo "$dreq" > "$DVENV/.requirements.sha256"
  fi
  if [[ "$SKIP_BUILD" == 0 ]]; then
    log "cargo build --release -p modelbus-cli"
    PATH="$ROOT/.tools/bin:$PATH" CARGO_BUILD_JOBS=2 cargo build --release -p modelbus-cli
  fi
  DROWS="${DRIFT_ROWS:-500000}"
  REF="$OUT/drift-reference-$DROWS.csv"
  CUR="$OUT/drift-current-$DROWS.csv"
  log "modelbus bench monitor ($DROWS vs $DROWS rows, $MODELBUS_RUNS runs)"
  "$MB" bench monitor --reference "$REF" --current "$CUR" --rows "$DROWS" --runs "$MODELBUS_RUNS" --json > "$OUT/modelbus-drift.json"
  : > "$OUT/evidently-drift.jsonl"
  if [[ "$SKIP_ANCHORS" == 0 ]]; then
    for i in $(seq "$ANCHOR_RUNS"); do
      log "Evidently DataDriftPreset, run $i of $ANCHOR_RUNS"
      "$DPY" bench/drift_anchor.py "$BASE_SPEC" "$REF" "$CUR" >> "$OUT/evidently-drift.jsonl"
    done
  fi
  # The median Evidently run (by total seconds) is the one compared.
  "$DPY" - "$OUT/evidently-drift.jsonl" > "$OUT/evidently-drift.json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs.sort(key=lambda r: r["seconds"])
print(json.dumps(runs[len(runs) // 2] if runs else {"columns": {}}))
PY
  python3 bench/compare_drift.py "$OUT/modelbus-drift.json" "$OUT/evidently-drift.json" | tee "$OUT/compare-drift.txt"
  exit "${PIPESTATUS[0]}"
fi

# --- Python venv with the pinned anchors (idempotent) -----------------------
req_hash="$(sha256sum bench/requirements.txt | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [[ ! -x "$PY" || ! -f "$stamp" || "$(cat "$stamp")" != "$req_hash" ]]; then
  log "creating $VENV from bench/requirements.txt"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -r bench/requirements.txt
  echo "$req_hash" > "$stamp"
fi

# --- modelbus release build -------------------------------------------------
if [[ "$SKIP_BUILD" == 0 ]]; then
  log "cargo build --release -p modelbus-cli"
  PATH="$ROOT/.tools/bin:$PATH" CARGO_BUILD_JOBS=2 cargo build --release -p modelbus-cli
fi
have_mb=0
[[ -x "$MB" ]] && have_mb=1

# --- the 1M-row Telco-shaped file ------------------------------------------
if [[ "$TELCO_ONLY" == 0 && ! -s "$DATA_1M" ]]; then
  log "generating $DATA_1M ($ROWS rows, seed $SEED)"
  if [[ "$have_mb" == 1 ]] && "$MB" bench generate --rows "$ROWS" --seed "$SEED" --out "$DATA_1M"; then
    :
  else
    rm -f "$DATA_1M"
    DATA_1M="$OUT/telco-1m-py.csv"
    echo "WARNING: 'modelbus bench generate' failed; using the Python reference generator ($DATA_1M)" >&2
    [[ -s "$DATA_1M" ]] || "$PY" bench/anchors.py generate --data "$TELCO" --rows "$ROWS" --seed "$SEED" --out "$DATA_1M"
  fi
fi

# --- the modelbus spec for the GE suite -------------------------------------
rm -f "$BENCH_SPEC"
if [[ "$have_mb" == 1 ]]; then
  log "modelbus datasets import-ge $SUITE"
  "$MB" datasets import-ge "$SUITE" --dataset telco-churn --spec "$BASE_SPEC" --out "$BENCH_SPEC" \
    || echo "WARNING: import-ge failed; modelbus validate will be 'not measured'" >&2
fi

# --- runs -------------------------------------------------------------------
files=("telco:$TELCO")
[[ "$TELCO_ONLY" == 0 ]] && files+=("1m:$DATA_1M")

for entry in "${files[@]}"; do
  label="${entry%%:*}"
  data="${entry#*:}"
  if [[ "$SKIP_ANCHORS" == 0 ]]; then
    log "anchors validate on $data ($ANCHOR_RUNS runs each)"
    "$PY" bench/anchors.py validate --data "$data" --suite "$SUITE" --runs "$ANCHOR_RUNS" \
      > "$OUT/anchors-validate-$label.jsonl"
  fi
  : > "$OUT/modelbus-validate-$label.json"
  if [[ "$have_mb" == 1 && -s "$BENCH_SPEC" ]]; then
    log "modelbus bench validate on $data ($MODELBUS_RUNS runs)"
    "$MB" bench validate --data "$data" --spec "$BENCH_SPEC" --runs "$MODELBUS_RUNS" --json \
      > "$OUT/modelbus-validate-$label.json" \
      || { echo "WARNING: modelbus bench validate failed on $data" >&2; : > "$OUT/modelbus-validate-$label.json"; }
  fi
done

if [[ "$SKIP_ANCHORS" == 0 ]]; then
  log "anchors train on $TELCO (5-fold stratified CV)"
  "$PY" bench/anchors.py train --data "$TELCO" --folds 5 --seed "$SEED" > "$OUT/anchors-train.json"
fi
: > "$OUT/modelbus-train.json"
if [[ "$have_mb" == 1 ]]; then
  log "modelbus bench train on $TELCO (5-fold)"
  "$MB" bench train --data "$TELCO" --spec "$BASE_SPEC" --folds 5 --json \
    > "$OUT/modelbus-train.json" \
    || { echo "WARNING: modelbus bench train failed" >&2; : > "$OUT/modelbus-train.json"; }
fi

# --- table ------------------------------------------------------------------
compare_args=(--validate "Telco ($TELCO)" "$OUT/anchors-validate-telco.jsonl" "$OUT/modelbus-validate-telco.json")
[[ "$TELCO_ONLY" == 0 ]] && compare_args+=(--validate "generated ($DATA_1M)" "$OUT/anchors-validate-1m.jsonl" "$OUT/modelbus-validate-1m.json")
compare_args+=(--train "$OUT/anchors-train.json" "$OUT/modelbus-train.json")
echo
"$PY" bench/compare.py "${compare_args[@]}" | tee "$OUT/compare.txt"
