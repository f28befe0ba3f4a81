#!/usr/bin/env bash
# The main job: install what is missing, run a matrix, print the report path.
# The runtime is Compose when a working Docker engine (with `docker compose`) is there, native
# otherwise, and the run says which; `--runtime native|compose` forces one. Other arguments go
# to `proxylab matrix` (`--quick` is the default; see `proxylab matrix --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=auto
args=()
while (($#)); do
  case "$1" in
    --runtime) runtime="${2:?--runtime needs native or compose}"; shift 2 ;;
    --runtime=*) runtime="${1#--runtime=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

# TODO: the Compose runtime needs only the lab's Python environment, but bootstrap also
# installs the native stack's Debian packages, toxiproxy and LiteLLM.
scripts/bootstrap.sh
# Prints the choice and its reason on stderr; refuses (exit 2) a forced compose without Docker.
runtime="$(.venv/bin/proxylab runtime --runtime "$runtime")"
# Whatever happens to the matrix, leave no process or container of the lab behind.
trap '.venv/bin/proxylab down --runtime "$runtime" >/dev/null 2>&1 || true' EXIT
.venv/bin/proxylab matrix --runtime "$runtime" ${args[@]+"${args[@]}"}
