#!/usr/bin/env bash
# The project's one test command (README): installs what the tests need, then runs them all.
# Safe to run repeatedly; installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== unit, integration and doc tests"
cargo test --locked
