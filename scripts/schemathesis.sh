#!/usr/bin/env bash
# Schemathesis (PyPI, installed by scripts/emulators.sh) against the local server with
# its own GET /openapi.json: every operation, once with the admin key and once with the
# ingest key; checks: no 5xx, responses conform to the document's schemas and statuses.
#   scripts/schemathesis.sh            (uses the server binary in $CARGO_TARGET_DIR,
#                                       building it if absent)
#   ST_MAX_EXAMPLES=20 ST_MAX_TIME=25  (per run; the two runs go at once)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
max_examples="${ST_MAX_EXAMPLES:-20}"
max_time="${ST_MAX_TIME:-25}"

scripts/emulators.sh install
SCHEMATHESIS="${EMULATOR_HOME:-$HOME/.cache/postback-emulators}/venv/bin/st"
[[ -x "$SCHEMATHESIS" ]] || { echo "schemathesis.sh: no schemathesis in the venv" >&2; exit 1; }

# The debug binary of this tree (a no-op build after scripts/test.sh's); never a release
# binary left over from another tree or commit.
cargo build --locked -p postback-manager --bin postback-server
bin="$CARGO_TARGET_DIR/debug/postback-server"

work="$(mktemp -d)"
admin="admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ingest="ingest-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# PORT=0: the OS picks a free port and the server prints `listening on http://ADDR`.
PORT=0 DATA_DIR="$work/data" ADMIN_API_KEY="$admin" INGEST_API_KEY="$ingest" ALLOW_PRIVATE_TARGETS=true \
    DELIVERY_TIMEOUT_MS=2000 RUST_LOG=warn "$bin" >"$work/stdout" 2>"$work/stderr" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
base=""
for _ in $(seq 1 100); do
    base="$(sed -n 's/^listening on //p' "$work/stdout" 2>/dev/null)"
    [[ -n "$base" ]] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr" >&2; echo "schemathesis.sh: the server exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$base" ]] || { echo "schemathesis.sh: the server did not start" >&2; exit 1; }

status=0
started=$SECONDS
# One run per key, both at once against the one server. One worker thread each: with two,
# Hypothesis parses sources in both threads at once and Python 3.11's ast module can fail
# with "AST constructor recursion depth mismatch" (CPython gh-106905), a tool error that
# has nothing to do with the server.
pids=()
for key in "$admin" "$ingest"; do
    # From the temp folder: Schemathesis keeps a cache in its working directory.
    (cd "$work" && "$SCHEMATHESIS" run "$base/openapi.json" --header "x-api-key: $key" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance \
        --max-examples "$max_examples" --max-time "$max_time" --seed 1 --request-timeout 10 \
        --workers 1 --no-color) >"$work/st-${#pids[@]}.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=$?
    cat "$work/st-$i.log"
done
echo "schemathesis.sh: 2 runs in $((SECONDS - started)) s, exit $status"
if grep -q 'panicked' "$work/stderr"; then
    echo "schemathesis.sh: the server panicked" >&2
    status=1
fi
exit "$status"
