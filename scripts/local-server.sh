# Sourced by load.sh and profile.sh: start a release local server for a measurement.
#   start_local_server SERVER_BIN
# Starts it in a fresh temp DATA_DIR with fresh keys, private targets allowed (the load
# generator's sinks are on loopback), `PORT=0`; waits for its printed address and its
# health check. Sets `server` (pid), `base` (URL), `data` (its folder: stdout, stderr),
# `admin` and `ingest` (the keys), and an EXIT trap that stops it and removes the folder.
# The server gets the caller's environment (e.g. DESTINATION_CONCURRENCY).
start_local_server() {
    data="$(mktemp -d)"
    admin="local-admin-$(date +%s%N)"
    ingest="local-ingest-$(date +%s%N)"
    PORT=0 DATA_DIR="$data" ADMIN_API_KEY="$admin" INGEST_API_KEY="$ingest" ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn \
        "$1" >"$data/stdout" 2>"$data/stderr" &
    server=$!
    trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
    base=""
    for _ in $(seq 300); do
        base="$(sed -n 's/^listening on //p' "$data/stdout" 2>/dev/null)"
        [[ -n "$base" ]] && curl -fs "$base/health" >/dev/null 2>&1 && return 0
        kill -0 "$server" 2>/dev/null || { echo "the server exited:" >&2; cat "$data/stderr" >&2; return 1; }
        sleep 0.1
    done
    echo "the server never printed its address" >&2
    return 1
}
