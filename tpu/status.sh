#!/usr/bin/env bash
# The slice's state (and its queued resource's, QUEUED=1), then per host whether the run is alive
# and the last TAIL_LINES lines of its log.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
: "${TAIL_LINES:=20}"

tpu_args
if [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources describe "$QR_NAME" "${TPU_ARGS[@]:1}" --format='value(state)'
fi
if ! run gcloud compute tpus tpu-vm describe "${TPU_ARGS[@]}" --format='value(state,acceleratorType,health)'; then
  echo "no TPU VM $TPU_NAME in $TPU_ZONE (yet)" >&2
  exit 1
fi
# shellcheck disable=SC2016
report='if '"$(alive)"'; then echo "== $(hostname): running, pid $(cat "$pid")";
else echo "== $(hostname): not running"; fi
tail -n '"$((TAIL_LINES))"' "$log" 2>/dev/null || echo "(no log at $PWD/$log)"'
on_all_hosts "$(host_files); $report"
