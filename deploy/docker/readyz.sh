#!/bin/bash
# Container health check without curl: exits 0 when http://127.0.0.1:PORT/PATH
# (default /readyz) answers 200 within 5 seconds, 1 otherwise.
#   modelbus-readyz 7070
#   modelbus-readyz 7070 /healthz
set -eu
port="${1:?usage: modelbus-readyz PORT [PATH]}"
path="${2:-/readyz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "${path}" >&3
IFS= read -r -t 5 status <&3
case "${status}" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "modelbus-readyz: ${path} on port ${port}: ${status:-no answer}" >&2; exit 1 ;;
esac
