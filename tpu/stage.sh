#!/usr/bin/env bash
# Put a model folder at the same path on every host (a run reads `model=` from local disk).
#   tpu/stage.sh gs://my-bucket/models/gemma-3-4b-it     # gcloud storage rsync from a bucket
#   tpu/stage.sh google/gemma-3-4b-it[@revision]         # hf download from the Hub, on each host
#   tpu/stage.sh SRC DEST                                # DEST: default $MODELS_DIR/<name>
# DEST is relative to $JAXCOT_DIR, where tpu/launch.sh runs: pass model=DEST to it. A gated Hub
# model needs `hf auth login` on the hosts; staging it once into a bucket is faster for many hosts.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
: "${MODELS_DIR:=models}"
: "${HF_FLAGS:=}"   # more `hf download` flags, e.g. --exclude 'original/*'

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 gs://bucket/path/MODEL | org/MODEL[@revision] [DEST]" >&2
  exit 2
fi
src=${1%/}
name=${src%@*}
name=${name##*/}
dest=${2:-$MODELS_DIR/$name}
case $src in
  gs://*/*)
    fetch="gcloud storage rsync --recursive $(printf %q "$src") $(printf %q "$dest")" ;;
  *://*)
    die "$src: a gs:// folder or a Hub id (org/name[@revision])" ;;
  */*)
    repo=${src%%@*}
    fetch=".venv/bin/hf download $(printf %q "$repo") --local-dir $(printf %q "$dest")${HF_FLAGS:+ $HF_FLAGS}"
    if [ "$repo" != "$src" ]; then
      fetch+=" --revision $(printf %q "${src#*@}")"
    fi ;;
  *)
    die "$src: a gs:// folder or a Hub id (org/name[@revision])" ;;
esac
on_all_hosts "set -e; cd $(printf %q "$JAXCOT_DIR"); mkdir -p $(printf %q "$dest"); $fetch; echo \"\$(hostname): $dest\""
echo "staged: pass model=$dest to tpu/launch.sh" >&2
