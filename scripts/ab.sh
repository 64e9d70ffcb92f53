#!/usr/bin/env bash
# A/B load runs of two builds, alternating in one sitting (this machine is noisy, so
# figures are compared within pairs, never across sittings):
#   scripts/ab.sh DIR_A DIR_B PAIRS [loadgen args]      e.g. --requests 20000 --concurrency 32
# Each DIR holds a release `postback-server` and `loadgen` (copied from
# target/release/postback-server and target/release/examples/loadgen of each tree).
# Prints each run's table after a `=== A-1` / `=== B-1` header line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -ge 3 ]] || { echo "usage: scripts/ab.sh DIR_A DIR_B PAIRS [loadgen args]" >&2; exit 2; }
a="$1"; b="$2"; pairs="$3"; shift 3
for i in $(seq "$pairs"); do
    for dir in "$a" "$b"; do
        echo "=== $(basename "$dir")-$i ($(uptime | sed 's/.*load/load/'))"
        LOAD_BIN_DIR="$dir" scripts/load.sh "$@"
    done
done
