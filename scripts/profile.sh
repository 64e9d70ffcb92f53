#!/usr/bin/env bash
# Profile the local server while it delivers firings:
# builds a release server with line tables and symbols (its own target dir), starts it,
# runs examples/loadgen.rs against it, and records the server with `perf record`
# (DWARF call graphs) from the first delivered firing until the generator ends: that
# window is the firing phase (20,000 clicks ingested in batches, one GET postback each
# to the generator's sink). Writes OUT.folded, OUT.svg (flame graph) and prints the
# shares table (scripts/profile_shares.py).
#   scripts/profile.sh [OUT]        (default: target-profile/delivery)
# Needs: perf (Debian linux-perf), inferno (`cargo install inferno`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-target-profile/delivery}"
mkdir -p "$(dirname "$out")"
target="${PROFILE_TARGET_DIR:-$HOME/.cache/postback-target-profile}"
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR="$target" \
    cargo build --release --locked --bin postback-server --example loadgen >/dev/null
# shellcheck source=scripts/local-server.sh
source scripts/local-server.sh
start_local_server "$target/release/postback-server" || { echo "profile.sh: cannot start the server" >&2; exit 1; }
"$target/release/examples/loadgen" --base "$base" --admin-key "$admin" --ingest-key "$ingest" --requests 20000 \
    >"$data/load.txt" &
gen=$!
until curl -fs -H "x-api-key: $admin" "$base/metrics" | grep -q '^postback_firings_total{outcome="delivered"} [1-9]'; do
    kill -0 "$gen" 2>/dev/null || { echo "profile.sh: the load generator ended before any delivery" >&2; exit 1; }
    sleep 0.05
done
perf record -F 1999 --call-graph dwarf,32768 -p "$server" -o "$data/perf.data" 2>"$data/perf-record.log" &
recorder=$!
wait "$gen"
kill -INT "$recorder"
wait "$recorder" || true
cat "$data/load.txt"
perf script -i "$data/perf.data" 2>"$data/perf-script.log" | inferno-collapse-perf --all >"$out.folded" || {
    echo "profile.sh: perf script or inferno failed:" >&2; tail -n 20 "$data/perf-record.log" "$data/perf-script.log" >&2; exit 1; }
[[ -s "$out.folded" ]] || { echo "profile.sh: no samples; perf record said:" >&2; cat "$data/perf-record.log" >&2; exit 1; }
inferno-flamegraph --title "local server delivering firings ($(git rev-parse --short HEAD))" --width 1600 \
    --minwidth 0.3 <"$out.folded" >"$out.svg"
python3 scripts/profile_shares.py "$out.folded"
echo "profile.sh: wrote $out.folded and $out.svg"
