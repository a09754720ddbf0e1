#!/usr/bin/env bash
# Stop the run on every host: SIGTERM, on which jaxcot saves what it has (a checkpoint, the
# outputs so far, pushed to a remote run folder) and exits 143; a later launch resumes it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

# shellcheck disable=SC2016
stop='if '"$(alive)"'; then kill -TERM "$(cat "$pid")"; echo "$(hostname): SIGTERM to pid $(cat "$pid")";
else echo "$(hostname): no run alive"; fi'
on_all_hosts "$(host_files); $stop"
