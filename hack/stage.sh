#!/usr/bin/env bash
# Run one stage of set-up or testing and say how long it took:
#   hack/stage.sh NAME CMD [ARGS...]
# With FMS_STAGE_LOG set, also appends "NAME SECONDS EXIT" there (.ci/run prints the table).
set -uo pipefail
name=$1; shift
start=$(date +%s.%N)
printf '== stage %s\n' "$name"
"$@"
rc=$?
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
printf '== stage %s: %s s (exit %d)\n' "$name" "$secs" "$rc"
if [ -n "${FMS_STAGE_LOG:-}" ]; then echo "$name $secs $rc" >> "$FMS_STAGE_LOG"; fi
exit "$rc"
