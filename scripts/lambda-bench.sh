#!/usr/bin/env bash
# Sizes, init (cold start) and invocation times of the three Lambda bootstraps, against
# a local Lambda Runtime API (scripts/lambda-bench.py) and the local AWS emulators.
# Results go to docs/PERFORMANCE.md ("AWS functions"). A benchmark, not a test.
#
#   scripts/lambda-bench.sh            # RUNS=10 INVOKES=11 by default
#
# Baseline: `runtime_baseline`, a lambda_runtime bootstrap that echoes its event and
# builds nothing, built with the same profile, measured in the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
PROFILE="${PROFILE:-lambda}"
RUNS="${RUNS:-10}"
INVOKES="${INVOKES:-11}"
# The bootstraps build in a target folder of their own: `sam build` (cargo lambda) writes
# `$CARGO_TARGET_DIR/lambda/<function>/bootstrap`, the very paths Cargo's `lambda` profile
# puts its binaries at, so the two cannot share one.
BENCH_TARGET="$CARGO_TARGET_DIR/lambda-bench"
BIN="$BENCH_TARGET/$PROFILE"

if [[ "${1:-}" != "--inner" ]]; then
    echo "building the bootstraps (profile $PROFILE)..." >&2
    CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --locked --profile "$PROFILE" -p config-api -p ingest -p dispatch
    CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --locked --profile "$PROFILE" -p dispatch --example runtime_baseline
    cargo build --locked -p dispatch --example aws_bootstrap
    echo >&2
    echo "| bootstrap | size (bytes) | size (MiB) |" >&2
    echo "|---|---|---|" >&2
    for f in config-api ingest dispatch examples/runtime_baseline; do
        size="$(stat -c %s "$BIN/$f")"
        printf '| %s | %s | %s |\n' "$(basename "$f")" "$size" "$(awk "BEGIN{printf \"%.2f\", $size/1048576}")" >&2
    done
    exec scripts/emulators.sh run "$0" --inner
fi

# Inside `emulators.sh run`: the emulators' endpoints are exported.
eval "$("$CARGO_TARGET_DIR/debug/examples/aws_bootstrap" env --prefix "bench-$$")"
export DELIVERY_TIMEOUT_MS=2000 RUST_LOG=warn
python3 scripts/lambda-bench.py --runs "$RUNS" --invokes "$INVOKES" \
    "runtime_baseline=$BIN/examples/runtime_baseline=-" \
    "config-api=$BIN/config-api=functions/config-api/fixtures/list-logs.json" \
    "ingest=$BIN/ingest=functions/ingest/fixtures/post-click.json" \
    "dispatch=$BIN/dispatch=functions/dispatch/fixtures/sqs-event.json"
