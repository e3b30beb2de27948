#!/usr/bin/env bash
# The test command: installs what is missing (scripts/bootstrap.sh), starts the
# PostgreSQL server the tests need if it is not running, then runs the whole test
# suite. The tests start their own pinned nats-server per test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/bootstrap.sh"
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

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
cargo test --workspace --doc
