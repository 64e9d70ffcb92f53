#!/usr/bin/env bash
# The admin console in a real browser: Debian's headless Chromium driven by Selenium
# (PyPI), against the local server as a real process and a real local receiver, both on
# loopback. Installs what a fresh machine lacks (a fast no-op when present).
#   scripts/browser-test.sh [--no-build]
# Screenshots go to docs/console/*.png (the committed ones: run this script alone to
# refresh them), or to $SCREENSHOTS_DIR (scripts/test.sh points it at a temp folder, so
# a test run leaves the tree clean). Prints `browser: N passed, N failed`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
SELENIUM_VERSION="4.50.0"
TOOLS_HOME="${POSTBACK_TOOLS_HOME:-$HOME/.cache/postback-tools}"
VENV="$TOOLS_HOME/venv"

die() { echo "browser-test.sh: $*" >&2; exit 1; }

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 ||
        die "needs Debian's chromium and chromium-driver (run as root to install them)"
    echo "browser-test.sh: installing chromium and chromium-driver (a few minutes, once)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >"${TMPDIR:-/tmp}/browser-test-apt.log" 2>&1 || die "apt-get install failed (${TMPDIR:-/tmp}/browser-test-apt.log)"
fi
if [[ ! -f "$VENV/.installed-selenium==$SELENIUM_VERSION" ]]; then
    mkdir -p "$TOOLS_HOME"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION" \
        >"$TOOLS_HOME/pip.log" 2>&1 || { tail -n 20 "$TOOLS_HOME/pip.log" >&2; die "pip install selenium failed"; }
    touch "$VENV/.installed-selenium==$SELENIUM_VERSION"
fi

[[ "${1:-}" == "--no-build" ]] || cargo build --locked --bin postback-server >/dev/null
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The receiver: per path, 200 with a body, 500, or an XSS payload as its body.
"$VENV/bin/python" tests/browser/receiver.py >"$work/receiver.out" 2>"$work/receiver.err" &
pids+=($!)
admin="browser-admin-$(date +%s%N)"
ingest="browser-ingest-$(date +%s%N)"
PORT=0 DATA_DIR="$work/data" ADMIN_API_KEY="$admin" INGEST_API_KEY="$ingest" ALLOW_PRIVATE_TARGETS=true PARTNER_PRIVATE_TARGETS=true \
    RETRY_BASE_DELAY_MS=200 RETRY_MAX_ATTEMPTS=2 RUST_LOG=warn \
    "$CARGO_TARGET_DIR/debug/postback-server" >"$work/server.out" 2>"$work/server.err" &
pids+=($!)
server_pid=$!
base="" receiver=""
for _ in $(seq 300); do
    base="$(sed -n 's/^listening on //p' "$work/server.out" 2>/dev/null)"
    receiver="$(sed -n 's/^receiver on //p' "$work/receiver.out" 2>/dev/null)"
    [[ -n "$base" && -n "$receiver" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; die "the server exited"; }
    sleep 0.1
done
[[ -n "$base" && -n "$receiver" ]] || die "the server or the receiver never printed its address"

status=0
BASE="$base" RECEIVER="$receiver" ADMIN_KEY="$admin" INGEST_KEY="$ingest" SHOTS="${SCREENSHOTS_DIR:-docs/console}" \
    "$VENV/bin/python" tests/browser/test_console.py 2>&1 | tee "$work/test.log" || status=$?
grep -q '^browser: ' "$work/test.log" || echo "browser: 0 passed, 1 failed"
exit "$status"
