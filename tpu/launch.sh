#!/usr/bin/env bash
# Launch the pipeline on every host at once; with distributed.enabled=true each host's
# jax.distributed.initialize() finds the others through the TPU metadata server, so the same
# command runs everywhere (a one-host VM is a job of one process).
#   tpu/launch.sh configs/gemma3-4b-math.yaml [key=value overrides...]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG.yaml [key=value ...]" >&2
  exit 2
fi
config=$1
shift
overrides=""
for o in "$@"; do
  overrides+=" $(printf '%q' "$o")"
done
on_all_hosts "cd $JAXCOT_DIR && nohup .venv/bin/jaxcot run --config $(printf '%q' "$config") distributed.enabled=true$overrides > run.log 2>&1 &"
