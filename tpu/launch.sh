#!/usr/bin/env bash
# Launch the pipeline on every host at once; with distributed.enabled=true each host's
# jax.distributed.initialize() finds the others through the TPU metadata server, so the same
# command runs everywhere (a one-host VM is a job of one process). Each host runs it in the
# background (setsid nohup), its output in $LOG_DIR/run-<hostname>.log and its pid beside it
# (tpu/status.sh, tpu/stop.sh).
#   tpu/launch.sh configs/gemma3-4b-math.yaml [key=value overrides...]
# The run folder: runs_dir= among the overrides, else RUNS_DIR, else $MOUNT_DIR/runs when BUCKET
# is set, else the config's. On several hosts it must be one folder every host sees: under the
# bucket's mount (tpu/mount.sh), or SHARED_RUNS_DIR=1 for a shared file system of your own.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
: "${RUNS_DIR:=${BUCKET:+$MOUNT_DIR/runs}}"
: "${SHARED_RUNS_DIR:=0}"

if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG.yaml [key=value ...]" >&2
  exit 2
fi
config=$1
shift
slice_settings

args=(distributed.enabled=true)
runs_dir="" given=0
for o in "$@"; do
  case $o in runs_dir=*) runs_dir=${o#runs_dir=} given=1 ;; esac
done
if [ "$given" = 0 ] && [ -n "$RUNS_DIR" ]; then
  runs_dir=$RUNS_DIR
  args+=("runs_dir=$runs_dir")
fi
args+=("$@")

on_mount=0
case $runs_dir in
  "$MOUNT_DIR" | "$MOUNT_DIR"/*) on_mount=1 ;;
esac
if [ "$HOSTS" -gt 1 ] && [ "$on_mount" = 0 ] && [ "$SHARED_RUNS_DIR" != 1 ]; then
  case $runs_dir in
    *://*) die "runs_dir=$runs_dir: $TPU_TYPE has $HOSTS hosts, and jaxcot works on a URL through one host's" \
      "local copy, which the others cannot see; mount the bucket (BUCKET=... tpu/mount.sh) and pass" \
      "runs_dir=$MOUNT_DIR/..." ;;
    *) die "runs_dir=${runs_dir:-(from the config)}: $TPU_TYPE has $HOSTS hosts, each with its own disk; the run" \
      "folder must be one they all see: BUCKET=... (tpu/mount.sh mounts it at $MOUNT_DIR, and runs go to" \
      "$MOUNT_DIR/runs), or SHARED_RUNS_DIR=1 for a shared file system" ;;
  esac
fi

cmd="setsid nohup .venv/bin/jaxcot run --config $(printf %q "$config")"
for a in "${args[@]}"; do
  cmd+=" $(printf %q "$a")"
done
# shellcheck disable=SC2016
start='if '"$(alive)"'; then echo "$(hostname): a run is alive (pid $(cat "$pid")): tpu/stop.sh first" >&2; exit 1; fi
'"$cmd"' > "$log" 2>&1 < /dev/null &
echo $! > "$pid"; echo "$(hostname): started pid $(cat "$pid"), log $PWD/$log"'
if [ "$on_mount" = 1 ]; then
  mnt=$(printf %q "$MOUNT_DIR")
  start="mountpoint -q $mnt || { echo \"\$(hostname): $mnt is not mounted: tpu/mount.sh\" >&2; exit 1; }
$start"
fi
on_all_hosts "$(host_files)
$start"
