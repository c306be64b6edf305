#!/usr/bin/env bash
# Regenerates collector-config's objective files from the example bot's objectives
# (`examples/command_bot.rs`, `objectives()`): the Prometheus rules, their promtool tests and
# the Grafana dashboard. A test (tests/e2e) fails when the checked-in files differ.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --quiet --locked --example command_bot -- --write-objectives "$out" > /dev/null
cp "$out/spanmetrics-objectives.yml" collector-config/prometheus/rules/
sed 's|^  - "spanmetrics-objectives.yml"$|  - "../rules/spanmetrics-objectives.yml"|' \
    "$out/spanmetrics-objectives.test.yml" > collector-config/prometheus/tests/spanmetrics-objectives.test.yml
cp "$out/spanmetrics-objectives.json" collector-config/grafana/dashboards/
echo "collector-config: objective rules, tests and dashboard regenerated"
