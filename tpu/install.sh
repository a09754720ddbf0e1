#!/usr/bin/env bash
# Ship this checkout (its committed HEAD) to every host of the slice and install jaxcot there with
# TPU JAX (the `tpu` extra, at the tested versions of constraints.txt), in the same folder and venv
# on each host (Python 3.11 through uv); with BUCKET set, then mounts it on every host (tpu/mount.sh).
#   tpu/install.sh                 # uses TPU_NAME / TPU_ZONE from the environment
#   EXTRAS=tpu,gcs tpu/install.sh  # also gcsfs, for a gs:// runs_dir on a one-host VM
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
: "${EXTRAS:=tpu}"

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
archive=${TMPDIR:-/tmp}/jaxcot-src.tar.gz
run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
tpu_args
run gcloud compute tpus tpu-vm scp "$archive" "${TPU_ARGS[0]}:jaxcot-src.tar.gz" "${TPU_ARGS[@]:1}" --worker=all

setup="set -e
mkdir -p $JAXCOT_DIR && tar -xzf jaxcot-src.tar.gz -C $JAXCOT_DIR
cd $JAXCOT_DIR
# TPU VM images ship Python 3.10; jaxcot needs 3.11+, which uv fetches.
python3 -m pip install -q --user uv
~/.local/bin/uv venv -q --python 3.11 .venv
~/.local/bin/uv pip install -q --python .venv/bin/python -c constraints.txt -e '.[$EXTRAS]'
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].platform)'"
on_all_hosts "$setup"
if [ -n "$BUCKET" ]; then
  "$(dirname "$0")/mount.sh"
fi
