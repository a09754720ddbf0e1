#!/usr/bin/env bash
# Shared settings for the TPU scripts. Every variable can be set in the environment.
# DRY_RUN=1 prints each command instead of running it.

: "${TPU_NAME:=jaxcot}"
: "${TPU_ZONE:=us-central2-b}"
: "${TPU_TYPE:=v4-8}"                 # v4-8 = one host; v4-32 = a 4-host pod slice
: "${TPU_VERSION:=tpu-ubuntu2204-base}"
: "${TPU_PROJECT:=}"                  # empty = gcloud's default project
: "${JAXCOT_DIR:=jaxcot}"
: "${DRY_RUN:=0}"

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
