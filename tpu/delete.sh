#!/usr/bin/env bash
# Delete the TPU VM / slice (stops billing); QUEUED=1 deletes its queued resource and the slice with it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

tpu_args
if [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources delete "$QR_NAME" "${TPU_ARGS[@]:1}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "${TPU_ARGS[@]}" --quiet
fi
