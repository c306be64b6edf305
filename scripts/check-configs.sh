#!/usr/bin/env bash
# Checks everything under collector-config/ with the real tools (promtool, amtool) and small
# static checkers. Idempotent: installs Debian's prometheus / prometheus-alertmanager packages
# and PyYAML (into .venv) only when missing. Writes test-artifacts/dashboard-queries.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
CFG=collector-config
ART=test-artifacts

if ! command -v promtool > /dev/null || ! command -v amtool > /dev/null; then
    echo "-- installing prometheus and prometheus-alertmanager (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager > /dev/null
fi

PY=python3
if ! "$PY" -c 'import yaml' 2> /dev/null; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv 2> /dev/null || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv > /dev/null
            python3 -m venv .venv
        }
    fi
    .venv/bin/python -c 'import yaml' 2> /dev/null || .venv/bin/pip install -q pyyaml
    PY=.venv/bin/python
fi

echo "-- every YAML file parses"
"$PY" - "$CFG" << 'PYEOF'
import pathlib, sys, yaml
files = sorted(p for p in pathlib.Path(sys.argv[1]).rglob("*") if p.suffix in (".yml", ".yaml"))
for p in files:
    yaml.safe_load(p.read_text(encoding="utf-8"))
print(f"{len(files)} YAML files parse")
PYEOF

echo "-- otelcol pipelines name only components defined in the same file"
"$PY" scripts/check_otelcol.py --self-test
"$PY" scripts/check_otelcol.py "$CFG/otelcol.yaml" "$CFG/otelcol-gateway.yaml"
# ...and the checker rejects our own file with one definition renamed away.
broken="$(mktemp --suffix=.yaml)"
trap 'rm -f "$broken"' EXIT
sed 's/^  batch:$/  batch\/renamed:/' "$CFG/otelcol.yaml" > "$broken"
if cmp -s "$broken" "$CFG/otelcol.yaml" || "$PY" scripts/check_otelcol.py "$broken" 2> /dev/null; then
    echo "check_otelcol.py accepted otelcol.yaml without its batch processor" >&2
    exit 1
fi

echo "-- promtool check config / check rules / test rules"
promtool check config "$CFG/prometheus/prometheus.yml"
promtool check rules "$CFG"/prometheus/rules/*.yml
promtool test rules "$CFG"/prometheus/tests/*.yml

echo "-- alertmanager config and routing"
amtool check-config "$CFG/alertmanager/alertmanager.yml"
route() { amtool config routes test --config.file="$CFG/alertmanager/alertmanager.yml" "$@" 2> /dev/null; }
[ "$(route severity=critical alertname=CommandErrorRateHigh service=command_bot)" = page ]
[ "$(route severity=warning alertname=CommandErrorRateHigh service=command_bot)" = ticket ]
[ "$(route severity=info alertname=Other)" = default ]
[ "$(route severity=page alertname=ObjectiveBudgetBurn objective=commands-succeed service=command_bot)" = page ]
[ "$(route severity=ticket alertname=ObjectiveBudgetBurn objective=commands-succeed service=command_bot)" = ticket ]
echo "critical and page -> page, warning and ticket -> ticket, other -> default"

echo "-- Grafana dashboard queries use only our metric names"
"$PY" scripts/check_dashboard.py --self-test
"$PY" scripts/check_dashboard.py "$CFG/grafana/dashboards/spanmetrics.json" "$CFG/prometheus/rules" "$ART"
promtool check rules "$ART/dashboard-queries.rules.yml"

echo "-- docker-compose.yaml is wired to the files above"
"$PY" scripts/check_compose.py --self-test "$CFG"
"$PY" scripts/check_compose.py "$CFG"
