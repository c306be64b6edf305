#!/usr/bin/env bash
# The project's one test command (README): installs what the tests need, then runs them all.
# Safe to run repeatedly; installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test servers and browser (rotel collector, prometheus, promtool, chromium)"
# Exports ROTEL_AGENT, PROMETHEUS, PROMTOOL and CHROMIUM for the end-to-end tests.
eval "$(scripts/setup-test-deps.sh)"
# Installed above, so a test missing one of them fails rather than skips.
export SPANMETRICS_REQUIRE_TOOLS=1

echo "== collector-config: promtool, amtool, otelcol/dashboard/compose checks"
bash scripts/check-configs.sh

echo "== module layering: imports follow the data flow, no cycles"
python3 scripts/check-layers.py

echo "== cargo features: the lean build, and each feature on its own"
bash scripts/check-features.sh

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== unit, integration, end-to-end and doc tests"
cargo test --locked
