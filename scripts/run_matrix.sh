#!/usr/bin/env bash
# The main job: install what is missing, run a matrix on the native stack, print the report path.
# Arguments go to `proxylab matrix` (`--quick` is the default; see `proxylab matrix --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
# Whatever happens to the matrix, leave no process of the lab behind.
trap '.venv/bin/proxylab down >/dev/null 2>&1 || true' EXIT
.venv/bin/proxylab matrix "$@"
