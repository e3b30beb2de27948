#!/usr/bin/env bash
# The test command, and what CI runs (.ci/run): everything a change must pass
# before it lands.
#   1. installs what is missing (scripts/bootstrap.sh) and starts the
#      PostgreSQL server the tests need if it is not running (the tests start
#      their own pinned nats-server per test);
#   2. formatting (`cargo fmt --check`) and the deployment files
#      (scripts/validate-deploy.sh: Dockerfile, compose, Prometheus rules, k8s,
#      workflows), both cheap, so a slip shows in seconds;
#   3. the whole test suite (nextest, then the doc tests);
#   4. clippy with warnings as errors, after the tests so it reuses the
#      dependencies' build scripts (LightGBM's C++ build among them) and only
#      type-checks.
# Every step runs even when an earlier one failed; the command lists the
# failed steps at the end and exits 1 if any failed. Arguments are passed to
# the test runner (e.g. a nextest filter) and then the other steps are skipped:
# `./scripts/test.sh -E 'package(modelbus-dataset)'` runs only those tests.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/bootstrap.sh" || exit 1
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

pg_host="${MODELBUS_TEST_PG_HOST:-127.0.0.1}"
if ! pg_isready -q -h "$pg_host" -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "test: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h "$pg_host" -p 5432 && break
    sleep 1
  done
  pg_isready -h "$pg_host" -p 5432 || { echo "test: PostgreSQL is not reachable at $pg_host:5432" >&2; exit 1; }
fi

failed=()
step() { # $1 = name, rest = command
  local name="$1"
  shift
  local started
  started=$(date +%s)
  echo "==> test: $name" >&2
  if "$@"; then
    echo "==> test: $name passed ($(( $(date +%s) - started )) s)" >&2
  else
    echo "==> test: $name FAILED ($(( $(date +%s) - started )) s)" >&2
    failed+=("$name")
  fi
}

full=1
[ "$#" -gt 0 ] && full=0

if [ "$full" = 1 ]; then
  step "cargo fmt --check" cargo fmt --all --check
  step "deployment files" "$root/scripts/validate-deploy.sh"
fi
if cargo nextest --version >/dev/null 2>&1; then
  step "test suite" cargo nextest run --workspace --no-fail-fast "$@"
else
  step "test suite" cargo test --workspace --no-fail-fast "$@"
fi
if [ "$full" = 1 ]; then
  step "doc tests" cargo test --workspace --doc
  step "clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'test: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test: all steps passed" >&2
