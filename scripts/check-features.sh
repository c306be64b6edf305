#!/usr/bin/env bash
# Builds the library with no default features (the layer alone) and with each feature on its
# own, and checks that the lean build pulls in none of the export stack.
set -euo pipefail
cd "$(dirname "$0")/.."

for features in "" init otlp-grpc otlp-http tls prometheus http "otlp-http,prometheus" "otlp-grpc,tls" "otlp-http,tls"; do
    echo "features: ${features:-(none)}"
    # Warnings fail too: code a feature leaves unused must be gated with it.
    out=$(cargo check --locked --lib --no-default-features ${features:+--features "$features"} --message-format short 2>&1) || { echo "$out" >&2; exit 1; }
    if echo "$out" | grep -q '^warning\|: warning'; then
        echo "$out" >&2
        exit 1
    fi
done

# The unit tests of a build without gRPC, TLS and the endpoint (what those builds refuse, and
# their defaults), of one with TLS over HTTP only, and of the lean build.
cargo test --locked --quiet --lib --no-default-features --features otlp-http
cargo test --locked --quiet --lib --no-default-features --features otlp-http,tls
cargo test --locked --quiet --lib --no-default-features

# The lean build: no async runtime, HTTP stack or OTLP exporter among its dependencies.
heavy=$(cargo tree --locked -e normal --no-default-features --prefix none \
    | awk '{print $1}' | sort -u | grep -xE 'tokio|hyper|hyper-util|tonic|reqwest|opentelemetry-otlp|h2|tower|rustls|ring' || true)
if [ -n "$heavy" ]; then
    echo "the build without default features depends on: $heavy" >&2
    exit 1
fi
echo "lean build: $(cargo tree --locked -e normal --no-default-features --prefix none | awk '{print $1}' | sort -u | wc -l) crates, none of tokio/hyper/tonic/reqwest/opentelemetry-otlp/rustls"
