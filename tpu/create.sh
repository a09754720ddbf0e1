#!/usr/bin/env bash
# Create a TPU VM (one host) or a pod slice (several hosts), named by its gcloud type or by the
# topology `jaxcot plan` sized it for; the runtime image follows the generation (tpu_slices.tsv).
#   TPU_NAME=cot TPU_TYPE=v4-32 TPU_ZONE=us-central2-b tpu/create.sh
#   TOPOLOGY=v5e:2x4 TPU_ZONE=us-west4-a SPOT=1 tpu/create.sh    # v5litepod-8, a Spot VM
#   TOPOLOGY=v5p:2x2x2 QUEUED=1 tpu/create.sh    # queued resource: waits for capacity (tpu/status.sh)
#   DRY_RUN=1 tpu/create.sh        # print the command only
# CREATE_FLAGS: more gcloud flags, e.g. '--reserved' or '--valid-until-duration=6h' (queued).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
: "${CREATE_FLAGS:=}"

slice_settings
flags=(--accelerator-type="$TPU_TYPE")
if [ "$SPOT" = 1 ]; then
  flags+=(--spot)
fi
read -ra extra <<< "$CREATE_FLAGS"
flags+=("${extra[@]}")
tpu_args
echo "# $TPU_TYPE: $HOSTS host(s), runtime $TPU_VERSION" >&2
if [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources create "$QR_NAME" "${TPU_ARGS[@]:1}" --node-id="$TPU_NAME" \
    --runtime-version="$TPU_VERSION" "${flags[@]}"
else
  run gcloud compute tpus tpu-vm create "${TPU_ARGS[@]}" --version="$TPU_VERSION" "${flags[@]}"
fi
