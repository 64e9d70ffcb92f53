#!/usr/bin/env bash
# The one test command: unit, property, port contract (embedded and AWS emulators),
# Lambda handlers and end-to-end tests. Installs what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Build outputs live outside the clone so repeated runs reuse them; correctness does not
# depend on it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"

scripts/emulators.sh install
scripts/emulators.sh lint-template
# The deploy path: `sam build` of template.yaml as shipped, three bootstraps under 10 MB
# (docs/aws.md). Seconds when nothing changed, about 4 minutes for a fresh clone in a new
# folder (the dependencies are reused), about 11 on a fresh machine.
scripts/sam-check.sh
# Build first, outside the emulators' lifetime, so they do not idle through a compile.
cargo build --workspace --all-targets --all-features --locked
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
scripts/emulators.sh run cargo test --workspace --all-features --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one result line per binary, the
# last being the doc-tests').
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
