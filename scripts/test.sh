#!/usr/bin/env bash
# The one test command: unit, property, port contract (memory, embedded and AWS
# emulators), Lambda handlers, end-to-end tests (on the local server, then on the AWS
# shape: scripts/aws-local.sh) and Schemathesis against openapi.json. Installs what a fresh machine lacks.
#   scripts/test.sh [FILTER...]    (extra arguments go to the test runner)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Build outputs live outside the clone so repeated runs reuse them; correctness does not
# depend on it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
# Most tests wait on sockets, child processes and emulators rather than on the CPU, so
# run many at once (the runners' default is one per core: 2 here).
threads="${TEST_THREADS:-16}"

scripts/emulators.sh install
scripts/emulators.sh lint-template
# The deploy path: `sam build` of template.yaml as shipped, three bootstraps under 10 MB
# (docs/aws.md). Seconds when nothing changed, about 4 minutes for a fresh clone in a new
# folder (the dependencies are reused), about 11 on a fresh machine.
scripts/sam-check.sh
work="$(mktemp -d)"
export EMULATOR_STATE_DIR="$work/emulators"
mkdir -p "$EMULATOR_STATE_DIR"
trap 'scripts/emulators.sh stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# The emulators boot (a JVM, a Python server) while the code builds.
scripts/emulators.sh start >"$work/emulators.env" 2>"$work/emulators.err" &
starter=$!
cargo build --workspace --all-targets --all-features --locked
wait "$starter" || { cat "$work/emulators.err" >&2; echo "test.sh: the emulators did not start" >&2; exit 1; }
eval "$(cat "$work/emulators.env")"

status=0
log="$work/test.log"
if cargo nextest --version >/dev/null 2>&1; then
    # One pool over every test binary of the workspace, so the end-to-end binary runs
    # beside the library's instead of after it.
    cargo nextest run --workspace --all-features --locked --no-fail-fast --test-threads="$threads" \
        --failure-output final "$@" 2>&1 | tee "$log" || status=$?
    # nextest's summary: "N tests run: P passed (S slow), F failed, K skipped" (the
    # parenthesised parts and the failed count appear only when they apply).
    summary="$(grep -E '[0-9]+ tests? run: ' "$log" | tail -n 1)"
    passed="$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)"
    failed="$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || true)"
    echo "tests: ${passed:-0} passed, ${failed:-0} failed"
else
    # No cargo-nextest on this machine: the same tests, one binary after the other.
    cargo test --workspace --all-features --locked "$@" -- --test-threads="$threads" 2>&1 | tee "$log" || status=$?
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
fi
# Schemathesis and the browser tests need only the debug server; they run beside the
# end-to-end tests on the AWS shape, which mostly wait on the emulators and the
# functions. The server is built first so that neither rebuilds it under the other.
cargo build --locked -p postback-manager --bin postback-server
echo "schemathesis: the local server against GET /openapi.json (in the background)"
scripts/schemathesis.sh >"$work/schemathesis.log" 2>&1 &
schemathesis=$!
echo "browser: the admin console in headless Chromium (in the background)"
SCREENSHOTS_DIR="$work/screenshots" scripts/browser-test.sh --no-build >"$work/browser.log" 2>&1 &
browser=$!
# The same end-to-end tests on the production shape (E2E_SHAPE=aws): each test drives
# its own scripts/aws-local.sh (the functions under `cargo lambda watch` behind the API
# Gateway front door, on the emulators started above, with its own tables and queues);
# the tests that only make sense on the local server return at once, saying why.
echo "end-to-end tests on the AWS shape (scripts/aws-local.sh)"
scripts/aws-local.sh build
aws_log="$work/test-aws.log"
aws_threads="${AWS_TEST_THREADS:-4}"
if cargo nextest --version >/dev/null 2>&1; then
    # --workspace and a filter rather than `-p postback-manager`: the features resolve as
    # in the run above, so the end-to-end binary is not compiled a second time.
    E2E_SHAPE=aws cargo nextest run --workspace --all-features --locked --no-fail-fast --no-tests=pass \
        -E 'package(postback-manager) & binary(it)' \
        --test-threads="$aws_threads" --failure-output final "$@" 2>&1 | tee "$aws_log" || status=$?
    summary="$(grep -E '[0-9]+ tests? run: ' "$aws_log" | tail -n 1)"
    passed="$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)"
    failed="$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || true)"
    echo "tests (AWS shape): ${passed:-0} passed, ${failed:-0} failed"
else
    E2E_SHAPE=aws cargo test -p postback-manager --all-features --locked --test it "$@" -- \
        --test-threads="$aws_threads" 2>&1 | tee "$aws_log" || status=$?
fi
# The API against its own OpenAPI document (Schemathesis, both keys at once).
wait "$schemathesis" || { cat "$work/schemathesis.log"; status=1; }
tail -n 1 "$work/schemathesis.log"
# The admin console in headless Chromium against the debug server built above.
browser_status=0
wait "$browser" || browser_status=$?
cat "$work/browser.log"
[[ "$status" -ne 0 ]] || status="$browser_status"
exit "$status"
