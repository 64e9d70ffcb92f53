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
# Build first, outside the emulators' lifetime, so they do not idle through a compile.
cargo build --workspace --all-targets --all-features --locked
scripts/emulators.sh run cargo test --workspace --all-features --locked "$@"
