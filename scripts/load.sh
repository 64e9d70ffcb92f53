#!/usr/bin/env bash
# Load test of the local server on loopback: starts a release server in a temp folder,
# runs examples/loadgen.rs against it (bounded requests), prints a Markdown table, stops.
#   scripts/load.sh [--requests N] [--concurrency C] [--batches B]
# The server gets this script's environment, e.g. DESTINATION_CONCURRENCY=256 scripts/load.sh
# to lift the per-destination bound (16 by default) that the delivery phases run into.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
cargo build --release --locked --bin postback-server --example loadgen >/dev/null
data="$(mktemp -d)"
admin="load-admin-$(date +%s%N)"
ingest="load-ingest-$(date +%s%N)"
# PORT=0: the OS picks a free port and the server prints `listening on http://ADDR`.
PORT=0 DATA_DIR="$data" ADMIN_API_KEY="$admin" INGEST_API_KEY="$ingest" ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn \
    "$CARGO_TARGET_DIR/release/postback-server" >"$data/stdout" 2>"$data/stderr" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
base=""
for _ in $(seq 300); do
    base="$(sed -n 's/^listening on //p' "$data/stdout" 2>/dev/null)"
    [[ -n "$base" ]] && curl -fs "$base/health" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "load.sh: the server exited" >&2; cat "$data/stderr" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$base" ]] || { echo "load.sh: the server never printed its address" >&2; exit 1; }
"$CARGO_TARGET_DIR/release/examples/loadgen" --base "$base" --admin-key "$admin" --ingest-key "$ingest" \
    --server-pid "$server" --clk-tck "$(getconf CLK_TCK)" "$@" || {
    # The server's warnings (e.g. the breaker the fair-sending phase's hanging receiver
    # opens) stay out of the table; shown only when the run failed.
    echo "load.sh: loadgen failed; the server's log:" >&2; tail -n 50 "$data/stderr" >&2; exit 1; }
