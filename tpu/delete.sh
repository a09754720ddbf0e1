#!/usr/bin/env bash
# Delete the TPU VM / slice (stops billing).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

tpu_args
run gcloud compute tpus tpu-vm delete "${TPU_ARGS[@]}" --quiet
