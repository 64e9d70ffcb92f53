#!/usr/bin/env bash
# Fuzz every target for SECONDS (default 180) each, one after another, on the stable
# toolchain (no sanitizer: see docs/FUZZING.md). Logs go to LOG_DIR (default
# /tmp/postback-fuzz-logs); the last libFuzzer line of each (`DONE cov: … ft: …`) is printed.
# Stops at the first target that finds a crash and prints where the input was written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-180}"
log_dir="${LOG_DIR:-/tmp/postback-fuzz-logs}"
mkdir -p "$log_dir"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pm-target-fuzz}"

targets=(
  "template_parse_render template"
  "postback_validate postback"
  "event_json event"
  "event_query event"
  "log_filter_query log"
)
cargo fuzz build -s none --codegen-units 16
for entry in "${targets[@]}"; do
  read -r target dict <<<"$entry"
  # With -jobs, libFuzzer runs the target in a child whose output goes to fuzz-0.log.
  status=0
  cargo fuzz run -s none --codegen-units 16 "$target" -- \
    -max_total_time="$seconds" -jobs=1 -workers=1 -dict="dict/$dict.dict" -print_final_stats=1 \
    >"$log_dir/$target.cargo.log" 2>&1 || status=$?
  mv fuzz-0.log "$log_dir/$target.log"
  echo "$target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log_dir/$target.log" | tail -1 || echo 'no DONE line')"
  if [[ $status -ne 0 ]] || grep -q 'Test unit written' "$log_dir/$target.log"; then
    grep -E 'panicked|Test unit written' "$log_dir/$target.log" >&2 || true
    exit 1
  fi
done
