#!/usr/bin/env bash
# The production (AWS) shape on this machine, with one command (docs/aws.md, "Local Lambda
# development"): the emulators, the resources, the three functions under `cargo lambda
# watch`, the SQS event source of `dispatch`, and one HTTP front door on 127.0.0.1:$PORT
# routed as template.yaml's API Gateway routes are. Any client drives it as it drives the
# local server: it prints the generated keys (when ADMIN_API_KEY / INGEST_API_KEY are not
# set) and `listening on http://127.0.0.1:PORT`.
#
#   scripts/aws-local.sh           run until Ctrl-C or SIGTERM, then stop everything it started
#   scripts/aws-local.sh build     only build what it runs
#
# Settings: the product's (RETRY_*, BREAKER_*, DELIVERY_TIMEOUT_MS, ALLOW_PRIVATE_TARGETS,
# LOG_RETENTION_DAYS, RUST_LOG, ...) reach the functions from this environment, as the
# template's parameters do on AWS. PORT (default 3000; 0 picks a free port). Its own:
#   AWS_LOCAL_CONCURRENCY   concurrent dispatch invocations (batches in flight), default 5
#   AWS_LOCAL_RELOAD=0      the watchers do not rebuild on code changes (tests)
#   AWS_LOCAL_PREFIX        resource name prefix (default postbacks-local, or a unique one
#                           when reusing running emulators)
#   AWS_LOCAL_EXIT_WITH_PARENT=1   stop when the process that started it is gone (tests)
# With AWS_ENDPOINT_URL_DYNAMODB/SQS/SCHEDULER set (eval "$(scripts/emulators.sh start)"),
# those emulators are used and left running; otherwise it starts and stops its own.
# Builds: debug, into CARGO_TARGET_DIR (default ~/.cache/postback-target, as the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
TOOLS="${POSTBACK_TOOLS:-$HOME/.cache/postback-tools}"
BOOTSTRAP="$CARGO_TARGET_DIR/debug/examples/aws_bootstrap"
start=$SECONDS

log() { echo "aws-local: $*" >&2; }

# Each function as its watcher's `cargo run -p <function>` builds it (Cargo resolves
# features per package: dispatch depends on lambda_http, unused, so that the three resolve
# alike and share one build; docs/aws.md). The example's development dependencies add only
# leaf crates, so it goes with dispatch.
build() {
    cargo build --locked -q -p config-api -p ingest
    cargo build --locked -q -p dispatch --bin dispatch --example aws_bootstrap
}

if [[ "${1:-}" == build ]]; then
    build
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [build]" >&2
    exit 2
fi

# cargo-lambda (with zig), from the same virtualenv scripts/sam-check.sh installs.
[[ -x "$TOOLS/venv/bin/cargo-lambda" ]] || scripts/sam-check.sh --install-tools
export PATH="$TOOLS/venv/bin:$PATH"

state="$(mktemp -d "${TMPDIR:-/tmp}/aws-local.XXXXXX")"
pids=()
own_emulators=0

# A process and all its descendants, parents first (the watchers start cargo, which
# starts the function instances; they are listed before any is signalled).
tree() {
    local child
    echo "$1"
    for child in $(pgrep -P "$1" 2>/dev/null); do tree "$child"; done
}

any_alive() {
    local pid
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
}

cleanup() {
    local rc=$? all=() pid
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && mapfile -t -O "${#all[@]}" all < <(tree "$pid")
    done
    if ((${#all[@]})); then
        # What it started first (the watchers then stop their own instances), then
        # whatever is left of the trees, then SIGKILL.
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 30); do
            any_alive "${all[@]}" || break
            sleep 0.1
        done
        kill -TERM "${all[@]}" 2>/dev/null || true
        for _ in $(seq 1 50); do
            any_alive "${all[@]}" || break
            sleep 0.1
        done
        kill -KILL "${all[@]}" 2>/dev/null || true
    fi
    ((own_emulators == 0)) || scripts/emulators.sh stop >/dev/null 2>&1 || true
    rm -rf "$state"
    log "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "${AWS_LOCAL_EXIT_WITH_PARENT:-0}" == 1 ]]; then
    parent=$PPID
    # (Its output closed: a `sleep` outliving the cleanup must not hold the caller's pipes.)
    (while kill -0 "$parent" 2>/dev/null; do sleep 1; done; kill -TERM $$ 2>/dev/null) </dev/null >/dev/null 2>&1 &
    pids+=($!)
fi

# The emulators boot (a JVM, a Python server) while the code builds.
if [[ -n "${AWS_ENDPOINT_URL_DYNAMODB:-}" && -n "${AWS_ENDPOINT_URL_SQS:-}" && -n "${AWS_ENDPOINT_URL_SCHEDULER:-}" ]]; then
    prefix="${AWS_LOCAL_PREFIX:-aws-local-$$-$RANDOM}"
    log "using the running emulators (DynamoDB $AWS_ENDPOINT_URL_DYNAMODB, SQS $AWS_ENDPOINT_URL_SQS)"
    build &
    pids+=($!)
    wait "$!"
else
    prefix="${AWS_LOCAL_PREFIX:-postbacks-local}"
    own_emulators=1
    export EMULATOR_STATE_DIR="$state/emulators"
    mkdir -p "$EMULATOR_STATE_DIR"
    scripts/emulators.sh start >"$state/emulators.env" 2>"$state/emulators.err" &
    starter=$!
    pids+=("$starter")
    build &
    pids+=($!)
    wait "$!"
    wait "$starter" || { cat "$state/emulators.err" >&2; log "the emulators did not start"; exit 1; }
    eval "$(cat "$state/emulators.env")"
fi
log "built in $((SECONDS - start)) s"

# Keys as the local server does: generated (and printed) when not set.
for name in ADMIN_API_KEY INGEST_API_KEY; do
    if [[ -z "${!name:-}" ]]; then
        printf -v "$name" '%s' "local-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
        export "${name?}"
        echo "$name=${!name}  (generated; set $name to keep it across restarts)"
    fi
done
# The product's default, as on the local server (the bootstrap's `env` would say true).
export ALLOW_PRIVATE_TARGETS="${ALLOW_PRIVATE_TARGETS:-false}"
eval "$("$BOOTSTRAP" env --prefix "$prefix")"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One watcher per function (the root package is the local server's, so `-p` it is); each
# runs its function's instances with this environment. Their output (cargo's and the
# functions' logs) goes to stderr.
concurrency="${AWS_LOCAL_CONCURRENCY:-5}"
reload=()
[[ "${AWS_LOCAL_RELOAD:-1}" != 0 ]] || reload=(--ignore-changes)
declare -A watcher
for function in config-api ingest dispatch; do
    port="$(free_port)"
    watcher[$function]="http://127.0.0.1:$port"
    instances=2
    [[ "$function" != dispatch ]] || instances="$concurrency"
    cargo lambda watch -q "${reload[@]}" -A 127.0.0.1 -P "$port" -p "$function" --concurrency "$instances" 1>&2 &
    pids+=($!)
done

# The front door and the event source; it invokes each function once, then prints
# `listening on http://127.0.0.1:PORT`.
"$BOOTSTRAP" serve --prefix "$prefix" --port "${PORT:-3000}" --concurrency "$concurrency" \
    --config-api "${watcher[config-api]}" --ingest "${watcher[ingest]}" --dispatch "${watcher[dispatch]}" &
serve=$!
pids=("$serve" "${pids[@]}")
wait "$serve"
