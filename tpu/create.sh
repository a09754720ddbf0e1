#!/usr/bin/env bash
# Create a TPU VM (one host) or a pod slice (several hosts).
#   TPU_NAME=cot TPU_TYPE=v4-32 TPU_ZONE=us-central2-b tpu/create.sh
#   DRY_RUN=1 tpu/create.sh        # print the command only
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

tpu_args
run gcloud compute tpus tpu-vm create "${TPU_ARGS[@]}" \
  --accelerator-type="$TPU_TYPE" --version="$TPU_VERSION"
