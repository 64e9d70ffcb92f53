#!/usr/bin/env bash
# Load test of the local server on loopback: starts a release server in a temp folder,
# runs examples/loadgen.rs against it (bounded requests), prints a Markdown table, stops.
#   scripts/load.sh [--requests N] [--concurrency C] [--batches B]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
cargo build --release --locked --bin postback-server --example loadgen >/dev/null
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
admin="load-admin-$(date +%s%N)"
ingest="load-ingest-$(date +%s%N)"
PORT="$port" DATA_DIR="$data" ADMIN_API_KEY="$admin" INGEST_API_KEY="$ingest" ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn \
    "$CARGO_TARGET_DIR/release/postback-server" >/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done
"$CARGO_TARGET_DIR/release/examples/loadgen" --base "http://127.0.0.1:$port" --admin-key "$admin" --ingest-key "$ingest" "$@"
