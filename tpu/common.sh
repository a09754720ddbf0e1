#!/usr/bin/env bash
# Shared settings for the TPU scripts. Every variable can be set in the environment.
# DRY_RUN=1 prints each command instead of running it.

: "${TPU_NAME:=jaxcot}"
: "${TPU_ZONE:=us-central2-b}"        # a zone that has the generation (us-central2-b has v4)
: "${TPU_TYPE:=}"                     # gcloud type: v4-8, v4-32, v5litepod-8, v5p-16, v6e-8 ...
: "${TOPOLOGY:=}"                     # or `jaxcot plan`'s name: v5e:2x4, v4:2x2x2 ... (neither: v4-8)
: "${TPU_VERSION:=}"                  # runtime image; empty = the type's, from tpu_slices.tsv
: "${TPU_PROJECT:=}"                  # empty = gcloud's default project
: "${SPOT:=0}"                        # 1: Spot VMs (cheap, may be preempted at any time)
: "${QUEUED:=0}"                      # 1: create through a queued resource, which waits for capacity
: "${QR_NAME:=$TPU_NAME-qr}"          # the queued resource's name (QUEUED=1)
: "${HOSTS:=}"                        # hosts of the slice; empty = from the type
: "${JAXCOT_DIR:=jaxcot}"             # the checkout on each host, relative to the home folder
: "${LOG_DIR:=logs}"                  # each host's run log and pid file, relative to $JAXCOT_DIR
: "${BUCKET:=}"                       # a GCS bucket (name or gs://name) that tpu/mount.sh mounts on every host
: "${MOUNT_DIR:=/mnt/gcs}"            # where it is mounted, the same path on every host
: "${DRY_RUN:=0}"
: "${SLICES_TSV:=$(dirname "${BASH_SOURCE[0]}")/../jaxcot/assets/tpu_slices.tsv}"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# run CMD ARGS...: execute, or print shell-quoted when DRY_RUN=1.
run() {
  if [ "$DRY_RUN" = "1" ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# gcloud arguments naming the TPU, its zone and (optionally) its project.
tpu_args() {
  TPU_ARGS=("$TPU_NAME" "--zone=$TPU_ZONE")
  if [ -n "$TPU_PROJECT" ]; then
    TPU_ARGS+=("--project=$TPU_PROJECT")
  fi
}

# on_all_hosts 'shell command': run the same command on every host of the slice at once.
on_all_hosts() {
  tpu_args
  run gcloud compute tpus tpu-vm ssh "${TPU_ARGS[@]}" --worker=all --command="$1"
}

# slice_field KEY COLUMN: COLUMN (a header name of tpu_slices.tsv) of the row whose generation or
# gcloud prefix is KEY; fails when there is none.
slice_field() {
  awk -F'\t' -v k="$1" -v c="$2" '
    /^#/ || NF == 0 { next }
    !head { for (i = 1; i <= NF; i++) col[$i] = i; head = 1; next }
    ($1 == k || $2 == k) && (c in col) { print $col[c]; found = 1; exit }
    END { exit !found }' "$SLICES_TSV"
}

# slice_type_of TOPOLOGY: the gcloud type of a plan topology (v5e:2x4 -> v5litepod-8, v4:2x2x2 -> v4-16).
slice_type_of() {
  local gen=${1%%:*} shape=${1#*:} chips=1 d prefix cores dims
  gen=${gen,,} shape=${shape,,}
  prefix=$(slice_field "$gen" gcloud_prefix) || die "TOPOLOGY=$1: not a generation of $SLICES_TSV then ':' and a shape"
  cores=$(slice_field "$gen" cores_per_chip)
  IFS=x read -ra dims <<< "$shape"
  if [[ $1 != *:* || ! $shape =~ ^[1-9][0-9]*(x[1-9][0-9]*)*$ ]] || [ "${#dims[@]}" != "$(slice_field "$gen" dims)" ]; then
    die "TOPOLOGY=$1: a $gen shape has $(slice_field "$gen" dims) axes (v5e:2x4, v4:2x2x2)"
  fi
  for d in "${dims[@]}"; do
    chips=$((chips * d))
  done
  echo "$prefix-$((chips * cores))"
}

# slice_hosts TYPE: the hosts (TPU VMs) of a slice of gcloud type TYPE.
slice_hosts() {
  local t=${1,,} prefix n cores per single chips
  prefix=${t%-*} n=${t##*-}
  cores=$(slice_field "$prefix" cores_per_chip) || die "TPU_TYPE=$1: not a type of $SLICES_TSV; set HOSTS"
  per=$(slice_field "$prefix" chips_per_host)
  single=$(slice_field "$prefix" single_host_chips)
  if [[ ! $n =~ ^[0-9]+$ ]] || ((n % cores)); then
    die "TPU_TYPE=$1: $prefix-N counts $cores cores a chip"
  fi
  chips=$((n / cores))
  if ((chips <= single)); then echo 1; else echo $(((chips + per - 1) / per)); fi
}

# slice_settings: TPU_TYPE (from TOPOLOGY, else v4-8), then TPU_VERSION and HOSTS where unset.
slice_settings() {
  if [ -n "$TOPOLOGY" ]; then
    local t
    t=$(slice_type_of "$TOPOLOGY")
    if [ -n "$TPU_TYPE" ] && [ "$TPU_TYPE" != "$t" ]; then
      die "TOPOLOGY=$TOPOLOGY is $t, TPU_TYPE=$TPU_TYPE: set one of them"
    fi
    TPU_TYPE=$t
  fi
  : "${TPU_TYPE:=v4-8}"
  if [ -z "$TPU_VERSION" ]; then
    TPU_VERSION=$(slice_field "${TPU_TYPE%-*}" runtime) || die "TPU_TYPE=$TPU_TYPE: not in $SLICES_TSV; set TPU_VERSION"
  fi
  if [ -z "$HOSTS" ]; then
    HOSTS=$(slice_hosts "$TPU_TYPE")
  fi
}

# host_files: shell text for a host: stop at the first error, enter the checkout, and name this
# host's run log and pid file ($log, $pid; per host, as a shared folder could hold them all).
host_files() {
  # shellcheck disable=SC2016
  printf 'set -e; cd %q; mkdir -p %q; log=%q/run-$(hostname).log; pid=%q/run-$(hostname).pid' \
    "$JAXCOT_DIR" "$LOG_DIR" "$LOG_DIR" "$LOG_DIR"
}

# alive: shell text for a host, after host_files: true while this host's run is alive.
alive() {
  # shellcheck disable=SC2016
  printf '%s' '[ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null'
}
