#!/usr/bin/env bash
# Mount a GCS bucket with gcsfuse at the same path on every host, so that a multi-host run has one
# run folder (tpu/launch.sh then passes runs_dir=$MOUNT_DIR/runs). Installs gcsfuse where missing.
#   BUCKET=my-bucket tpu/mount.sh         # at /mnt/gcs (MOUNT_DIR)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
# No metadata cache: a host must see the part files another host has just written. Orbax renames
# its checkpoint folders, which gcsfuse does only with a rename-dir-limit.
: "${GCSFUSE_FLAGS:=--implicit-dirs --metadata-cache-ttl-secs=0 --rename-dir-limit=100000}"

[ -n "$BUCKET" ] || die "BUCKET=name (or gs://name): the bucket to mount"
bucket=${BUCKET#gs://}
bucket=${bucket%%/*}
mnt=$(printf %q "$MOUNT_DIR")
# shellcheck disable=SC2016
install='if ! command -v gcsfuse >/dev/null; then
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
fi'
on_all_hosts "set -e
$install
if ! mountpoint -q $mnt; then
  sudo mkdir -p $mnt && sudo chown \"\$(id -u):\$(id -g)\" $mnt
  gcsfuse $GCSFUSE_FLAGS $(printf %q "$bucket") $mnt
fi
echo \"\$(hostname): gs://$bucket at $MOUNT_DIR\""
