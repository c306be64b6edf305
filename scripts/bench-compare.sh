#!/usr/bin/env bash
# Benchmarks this checkout against an earlier revision in one criterion run (benches/compare).
#   scripts/bench-compare.sh [REV [criterion options...]]
# REV defaults to 8482fbf, the last revision before overload stopped dropping records.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-8482fbf}"
shift || true
rm -rf target/baseline
mkdir -p target/baseline
git archive "$rev" | tar -x -C target/baseline
# Two packages of one name build side by side only with semver-incompatible versions.
sed -i '0,/^version = /s/^version = .*/version = "0.0.0"/' target/baseline/Cargo.toml
# Start from the crate's own lock file, so both builds use the same dependency versions.
cp Cargo.lock benches/compare/Cargo.lock
export CARGO_TARGET_DIR="$PWD/target/compare"
exec cargo bench --manifest-path benches/compare/Cargo.toml --bench compare -- "$@"
