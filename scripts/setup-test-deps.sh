#!/usr/bin/env bash
# Installs the real servers the end-to-end tests run against. Idempotent: every step is
# skipped when its result is already there. Prints `export` lines for the test variables.
#   ROTEL_AGENT  the OTLP collector (PyPI package `rotel`, in a venv at .venv)
#   PROMETHEUS   the Prometheus server (Debian package `prometheus`)
#   PROMTOOL     its linting tool
#   CHROMIUM     headless browser for the dashboard test (Debian package `chromium`)
#   STUNNEL      TLS terminator in front of the collector (Debian package `stunnel4`)
set -euo pipefail
cd "$(dirname "$0")/.."

rotel_agent() {
    .venv/bin/python -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null
}
if ! [ -x .venv/bin/python ] || ! [ -x "$(rotel_agent)" ]; then
    echo "setup: installing rotel into .venv" >&2
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check rotel >&2
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing prometheus (apt)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prometheus >&2
fi

if ! [ -x /usr/bin/stunnel4 ]; then
    echo "setup: installing stunnel4 (apt)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update >&2
    # The packaged service must not start: the tests run their own instances on free ports.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends stunnel4 >&2
    $SUDO rm -f /usr/sbin/policy-rc.d
fi

if ! [ -x /usr/bin/chromium ]; then
    echo "setup: installing chromium (apt)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium >&2
fi

echo "export ROTEL_AGENT=$(rotel_agent)"
echo "export PROMETHEUS=$(command -v prometheus)"
echo "export PROMTOOL=$(command -v promtool)"
echo "export CHROMIUM=/usr/bin/chromium"
echo "export STUNNEL=/usr/bin/stunnel4"
