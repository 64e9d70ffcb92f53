#!/usr/bin/env bash
# Load test of the local server on loopback: starts a release server in a temp folder,
# runs examples/loadgen.rs against it (bounded requests), prints a Markdown table, stops.
#   scripts/load.sh [--requests N] [--concurrency C] [--batches B]
# The server gets this script's environment, e.g. DESTINATION_CONCURRENCY=256 scripts/load.sh
# to lift the per-destination bound (16 by default) that the delivery phases run into.
# LOAD_BIN_DIR=DIR runs prebuilt `postback-server` and `loadgen` from DIR instead of
# building this tree (for A/B runs of two builds: scripts/ab.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -n "${LOAD_BIN_DIR:-}" ]]; then
    server_bin="$LOAD_BIN_DIR/postback-server"
    loadgen_bin="$LOAD_BIN_DIR/loadgen"
else
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
    cargo build --release --locked --bin postback-server --example loadgen >/dev/null
    server_bin="$CARGO_TARGET_DIR/release/postback-server"
    loadgen_bin="$CARGO_TARGET_DIR/release/examples/loadgen"
fi
# shellcheck source=scripts/local-server.sh
source scripts/local-server.sh
start_local_server "$server_bin" || { echo "load.sh: cannot start the server" >&2; exit 1; }
"$loadgen_bin" --base "$base" --admin-key "$admin" --ingest-key "$ingest" \
    --server-pid "$server" --clk-tck "$(getconf CLK_TCK)" "$@" || {
    # The server's warnings (e.g. the breaker the fair-sending phase's hanging receiver
    # opens) stay out of the table; shown only when the run failed.
    echo "load.sh: loadgen failed; the server's log:" >&2; tail -n 50 "$data/stderr" >&2; exit 1; }
